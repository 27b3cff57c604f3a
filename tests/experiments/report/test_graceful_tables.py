"""Tables and the report page when the records mix settings: a table whose cells differ is left
out with one warning line (how to split it included) and the rest are written; a table asked for
by name is refused; ``--table nope`` lists the tables there are; writers write next to the records."""
from __future__ import annotations

import pytest

from experiments.report.page import main as report
from experiments.report.paper_tables import main as tables
from tests.helpers.table_records import write_cell


@pytest.fixture
def mixed(tmp_path):
    """Two tables: ``good`` (two alike cells) and ``mixed`` (8 and 16 samples)."""
    root = tmp_path / "runs"
    write_cell(root, "backtrace", table="good", offset=1.0)
    write_cell(root, "saliency", table="good")
    write_cell(root, "backtrace", n=8, table="mixed", offset=1.0)
    write_cell(root, "saliency", n=16, table="mixed")
    return root


MIXED_WARNING = ("warning: skipping table 'mixed': it mixes runs that differ in n_samples ('backtrace' and "
                 "'saliency': n_samples=8 vs 16); split it with --where n_samples=8 (or n_samples=16), or rerun "
                 "them with the same settings")


@pytest.fixture
def published(tmp_path, monkeypatch):
    """The published results/ (where --publish writes: results/ under $BACKTRACE_BENCH_HOME) in the
    test's folder, watched."""
    monkeypatch.setenv("BACKTRACE_BENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "results"


def test_all_tables_skip_a_mixed_one_with_one_line_and_write_the_rest(mixed, capsys, published):
    assert tables(["--results-dir", str(mixed)]) == 0
    err = capsys.readouterr().err.strip()
    assert err == MIXED_WARNING
    written = sorted(p.name for p in (mixed / "tables").iterdir())        # next to the records read
    assert written == ["good.csv", "good.md", "good.tex"]
    assert not published.exists()


def test_a_table_named_explicitly_is_refused_and_nothing_written(mixed, capsys):
    assert tables(["--results-dir", str(mixed), "--table", "mixed"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: table 'mixed' mixes runs that differ in n_samples ('backtrace' and 'saliency': n_samples=8 vs 16); "
        "rerun them with the same settings, or split it with --where n_samples=8 (or n_samples=16)")
    assert not (mixed / "tables").exists()


def test_the_where_filter_splits_a_mixed_table(mixed, tmp_path, capsys):
    out = tmp_path / "eight"
    assert tables(["--results-dir", str(mixed), "--table", "mixed", "--where", "n_samples=8", "--out", str(out)]) == 0
    md = (out / "tables" / "mixed.md").read_text()
    assert "8 test samples" in md and "| backtrace |" in md and "| saliency |" not in md


def test_an_unknown_table_lists_the_tables_there_are(mixed, capsys):
    assert tables(["--results-dir", str(mixed), "--table", "nope"]) == 2
    assert capsys.readouterr().err.strip() == f"error: no table 'nope' under {mixed}; tables there: good, mixed"


def test_a_difference_in_model_weights_is_named_and_split_by_the_weight_hash(tmp_path, capsys):
    root = tmp_path / "runs"
    write_cell(root, "backtrace", weights="1" * 64)
    write_cell(root, "saliency", weights="2" * 64)
    assert tables(["--results-dir", str(root), "--table", "toy"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: table 'toy' mixes runs that differ in model weights ('backtrace' and 'saliency': sha256 111111111111 "
        "vs 222222222222); rerun them with the same settings, or split it with --where weights=111111111111 "
        "(or weights=222222222222)")


def test_a_difference_deep_in_the_model_config_names_its_path(tmp_path, capsys):
    root = tmp_path / "runs"
    write_cell(root, "backtrace")
    write_cell(root, "saliency", config={"model": {"name": "mlp", "train": {"epochs": 5}}})
    assert tables(["--results-dir", str(root)]) == 2         # the only table is skipped: nothing to write
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == ("warning: skipping table 'toy': it mixes runs that differ in model ('backtrace' and 'saliency': "
                      "model.train.epochs=3 vs 5); split it with --where model.train.epochs=3 (or "
                      "model.train.epochs=5), or rerun them with the same settings")
    assert err[1] == (f"error: every table under {root} mixes settings (toy); nothing written (see the warnings above)")
    assert not (root / "tables").exists()


def test_out_at_the_published_folder_needs_publish(mixed, published, capsys):
    assert tables(["--results-dir", str(mixed), "--out", str(published)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --out {published} holds the published tables; add --publish to write there (with their evidence, "
        f"refused where a table would shrink)")
    assert not published.exists()


def test_results_md_needs_publish(mixed, tmp_path, capsys):
    readme = tmp_path / "RESULTS.md"
    readme.write_text("<!-- table:good -->\nold\n<!-- /table -->\n")
    assert tables(["--results-dir", str(mixed), "--results-md", str(readme)]) == 2
    assert capsys.readouterr().err.strip() == "error: --results-md refreshes the published tables of RESULTS.md: add --publish"
    assert "old" in readme.read_text()


def test_the_report_skips_a_mixed_table_and_writes_the_rest(mixed, capsys, published):
    assert report(["--results-dir", str(mixed)]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == MIXED_WARNING
    index = mixed / "report" / "index.html"                      # next to the records read
    assert captured.out.strip() == f"wrote {index}"
    text = index.read_text()
    assert 'id="table-good"' in text and 'id="table-mixed"' not in text
    assert not published.exists()


def test_the_report_of_only_mixed_tables_is_refused(tmp_path, capsys):
    root = tmp_path / "runs"
    write_cell(root, "backtrace", n=8)
    write_cell(root, "saliency", n=16)
    assert report(["--results-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: every table under {root} mixes settings (toy); nothing written (see the warnings above)"
    assert not (root / "report").exists()
