"""Publishing a table with its evidence: what the evidence holds, the fewer-samples guard on every
publish, and a table and its evidence moved in together (or not at all)."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from experiments.report import evidence as evidence_module
from experiments.report.evidence import ARRAYS_MAX_BYTES, load_manifest, table_files_problem
from experiments.report.paper_tables import main as tables
from tests.helpers.table_records import write_cell


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): _sha(p) for p in sorted(folder.rglob("*")) if p.is_file()
            and not p.name.endswith(".lock")}


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    write_cell(root, "backtrace", n=20, offset=1.0)
    write_cell(root, "ig (n_steps=4)", n=20, big_arrays=True)
    write_cell(root, "random", n=20, offset=-1.0)
    return root


def test_published_evidence_holds_every_cell_byte_for_byte(runs, tmp_path):
    out = tmp_path / "published"
    assert tables(["--results-dir", str(runs), "--publish", "--out", str(out)]) == 0
    folder = out / "evidence" / "toy"
    manifest = load_manifest(folder)
    assert [c["variant"] for c in manifest["cells"]] == ["backtrace", "ig (n_steps=4)", "random"]
    assert [c["folder"] for c in manifest["cells"]] == ["backtrace", "ig_n_steps_4", "random"]
    assert manifest["model"]["weights_sha256"] == "a" * 64 and manifest["n_samples"] == 20
    for cell in manifest["cells"]:
        source = runs / f"toy-{cell['method']}-20"
        for name in ("record.json", "scores.csv"):
            assert (folder / cell["folder"] / name).read_bytes() == (source / name).read_bytes()
        # arrays travel only where small: the 20 x 64 x 64 maps are left out
        small = (source / "arrays.npz").stat().st_size <= ARRAYS_MAX_BYTES
        assert cell["arrays"] is small and (folder / cell["folder"] / "arrays.npz").is_file() is small
    assert [c["arrays"] for c in manifest["cells"]] == [True, False, True]
    # the table names its evidence, and the evidence the exact table files it backs
    md = out / "tables" / "toy.md"
    assert f"Evidence: `{folder}/`" in md.read_text()
    assert f"python -m experiments.reproduce toy --check --evidence {out / 'evidence'}" in md.read_text()
    assert manifest["table_files"] == {f"tables/toy.{ext}": _sha(out / "tables" / f"toy.{ext}")
                                       for ext in ("csv", "md", "tex")}
    assert table_files_problem(manifest, out) is None
    md.write_text(md.read_text() + "edited\n")
    assert table_files_problem(manifest, out) == f"{md} is not the table this evidence backs (sha256 differs)"
    assert [p.name for p in out.iterdir() if p.name.startswith(".publish-")] == []


def test_every_publish_refuses_a_table_of_fewer_samples(runs, tmp_path, capsys):
    out = tmp_path / "published"
    assert tables(["--results-dir", str(runs), "--publish", "--out", str(out)]) == 0
    before = _tree(out)
    fewer = tmp_path / "fewer"
    for method in ("backtrace", "ig (n_steps=4)", "random"):
        write_cell(fewer, method, n=8)
    capsys.readouterr()
    assert tables(["--results-dir", str(fewer), "--publish", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: table 'toy' in {out / 'tables' / 'toy.md'} would shrink (test samples 20 -> 8); nothing written: "
        f"rerun with the published sample sizes, or pass --allow-smaller to replace it anyway")
    assert _tree(out) == before
    assert tables(["--results-dir", str(fewer), "--publish", "--out", str(out), "--allow-smaller"]) == 0
    assert "8 test samples" in (out / "tables" / "toy.md").read_text()
    assert load_manifest(out / "evidence" / "toy")["n_samples"] == 8


def test_a_publish_that_fails_midway_leaves_the_old_table_and_evidence(runs, tmp_path, monkeypatch):
    out = tmp_path / "published"
    assert tables(["--results-dir", str(runs), "--publish", "--out", str(out)]) == 0
    before = _tree(out)
    newer = tmp_path / "newer"
    for method in ("backtrace", "ig (n_steps=4)", "random"):
        write_cell(newer, method, n=20, offset=3.0, created="2026-02-01T00:00:00+00:00")
    real_replace, failed = os.replace, []

    def failing_replace(src, dst):
        # the staged .tex moves in after the evidence and the .md: fail there, once
        if str(dst).endswith("toy.tex") and str(src).endswith("tables/toy.tex") and not failed:
            failed.append(src)
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(evidence_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        tables(["--results-dir", str(newer), "--publish", "--out", str(out)])
    assert failed and _tree(out) == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".publish-")] == []


def test_without_publish_nothing_reaches_the_published_folder(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("BACKTRACE_BENCH_HOME", str(tmp_path / "home"))
    published = tmp_path / "home" / "results"
    assert tables(["--results-dir", str(runs)]) == 0
    assert sorted(p.name for p in (runs / "tables").iterdir()) == ["toy.csv", "toy.md", "toy.tex"]
    assert "Evidence:" not in (runs / "tables" / "toy.md").read_text()
    assert not published.exists()
    assert tables(["--results-dir", str(runs), "--publish"]) == 0          # --publish: <home>/results/
    assert (published / "evidence" / "toy" / "evidence.json").is_file()
    assert json.loads((published / "evidence" / "toy" / "evidence.json").read_text())["name"] == "toy"
