"""The table writer on constructed records, and a tiny paper_tabular sweep end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from experiments.config import ROOT
from experiments.paper_tables import collect, main, update_readme
from experiments.records import write_record

DIRECTIONS = {"faith": "higher", "complexity": "lower"}


def _record(method: str, table: str = "toy_table", created: str = "2026-01-01T00:00:00") -> dict:
    return {
        "config_hash": method, "config": {"table": table}, "created": created, "n_samples": 20,
        "model": {"name": "mlp", "test_accuracy": 0.9}, "dataset": {"name": "toy", "modality": "image"},
        "method": {"name": method, "signed": method != "saliency"},
        "runtime": {"seconds_per_sample": 0.01, "forward_backward_units": 2.0},
        "metrics": {m: {"direction": d, "mean": 0.0, "n": 20, "n_nan": 0} for m, d in DIRECTIONS.items()},
    }


def _write(root, method: str, faith: np.ndarray, complexity: np.ndarray, **kw) -> None:
    n = len(faith)
    scores = pd.DataFrame({"sample": np.arange(n), "label": 0, "prediction": 0, "target": 0,
                           "faith": faith, "complexity": complexity})
    arrays = {"attributions": np.random.default_rng(0).normal(size=(n, 1, 4, 4)), "inputs": np.zeros((n, 1, 4, 4))}
    write_record(root, f"{method}-{kw.get('created', 'a')[-2:]}", _record(method, **kw), scores, arrays)


@pytest.fixture
def records(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "runs"
    base = rng.normal(size=20)
    _write(root, "backtrace", base + 1.0, np.full(20, 1.0))             # best on both metrics
    _write(root, "saliency", base + rng.normal(0, 0.1, 20), np.full(20, 2.0))
    faith_random = base - 1.0
    faith_random[3] = np.nan                                                # one undefined score
    _write(root, "random", faith_random, np.full(20, 3.0))
    # an older record of the same method is ignored in favour of the newest
    _write(root, "saliency", base + 5.0, np.full(20, 0.0), created="2025-01-01T00:00:00")
    # a run that belongs to no table is ignored
    write_record(root, "loose", {**_record("ig"), "config": {"table": None}, "n_samples": 1},
                 pd.DataFrame({"sample": [0], "faith": [1.0], "complexity": [1.0]}), {"attributions": np.zeros((1, 1))})
    return root


def test_collect_groups_by_table_and_keeps_the_newest(records):
    (data,) = collect(records)
    assert data.name == "toy_table" and sorted(data.folders) == ["backtrace", "random", "saliency"]
    sal = data.scores[(data.scores.method == "saliency") & (data.scores.metric == "complexity")]
    assert (sal.score == 2.0).all()
    assert data.directions == DIRECTIONS


def test_written_tables_mark_best_direction_nan_and_statistics(records, tmp_path):
    out = tmp_path / "results"
    assert main(["--results-dir", str(records), "--out", str(out)]) == 0
    md = (out / "tables" / "toy_table.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| method | faith ↑ | complexity ↓ | mean rank ↓")
    rows = {line.split(" | ")[0][2:]: line for line in lines[1:4]}
    assert list(rows) == ["backtrace", "saliency", "random"]       # reference first, controls last
    assert "**1.0000**" in rows["backtrace"] and "(1 NaN)" in rows["random"]
    assert "**" not in rows["random"]
    assert "Friedman" in md and "Holm" in md
    wilcoxon_random = next(line for line in md.splitlines() if line.startswith("| random") and "p=" in line)
    assert wilcoxon_random.count("+ p=") == 2                          # backtrace significantly better on both
    csv = pd.read_csv(out / "tables" / "toy_table.csv")
    row = csv.set_index("method").loc["random"]
    assert row["faith_n"] == 19 and row["faith_n_nan"] == 1
    assert row["faith_ci_low"] <= row["faith"] <= row["faith_ci_high"]
    assert csv.set_index("method").loc["backtrace", "mean_rank"] == 1.0
    tex = (out / "tables" / "toy_table.tex").read_text()
    assert r"\textbf{1.0000}" in tex and r"$\downarrow$" in tex
    assert (out / "figures" / "toy_table_heatmaps.png").stat().st_size > 0


def test_readme_blocks_are_refreshed(records, tmp_path):
    out = tmp_path / "results"
    main(["--results-dir", str(records), "--out", str(out)])
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table:toy_table -->\nold\n<!-- /table -->\nend\n")
    update_readme(readme, out / "tables")
    text = readme.read_text()
    assert "\nold\n" not in text and "| backtrace |" in text and text.endswith("end\n")


def test_no_records_is_a_clear_error(tmp_path, capsys):
    assert main(["--results-dir", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "no table records" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_paper_tabular_sweep_end_to_end(tmp_path):
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    runs, cache, out = tmp_path / "runs", tmp_path / "cache", tmp_path / "results"
    cmd = [sys.executable, "-m", "experiments.reproduce", "paper_tabular", "n_samples=6", "model.train.epochs=5",
           f"results_dir={runs}", f"cache_dir={cache}", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sweep paper_tabular:" in proc.stdout
    records = [json.loads(p.read_text()) for p in runs.glob("*/record.json")]
    methods = {r["method"]["name"] for r in records}
    assert {"backtrace", "ig", "random"} <= methods
    assert all(r["config"]["table"] == "paper_tabular" for r in records)
    md = (out / "tables" / "paper_tabular.md").read_text()
    assert all(f"| {m} |" in md for m in methods)


def test_reproduce_refuses_an_unknown_table(capsys):
    from experiments.reproduce import main as reproduce

    assert reproduce(["nope"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: unknown table 'nope'; valid choices: paper_image, paper_localisation, paper_tabular")
