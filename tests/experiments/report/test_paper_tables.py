"""The table writer on constructed records, and a tiny paper_tabular sweep end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from experiments.report.paper_tables import collect, main, update_results_md
from experiments.run.config import ROOT
from experiments.run.records import write_record

DIRECTIONS = {"faith": "higher", "complexity": "lower"}


def _record(method: str, table: str = "toy_table", created: str = "2026-01-01T00:00:00",
            params: dict | None = None, n: int = 20) -> dict:
    return {
        "config_hash": method, "config": {"table": table}, "created": created, "n_samples": n,
        "model": {"name": "mlp", "test_accuracy": 0.9}, "dataset": {"name": "toy", "modality": "image"},
        "method": {"name": method, "signed": method != "saliency", "params": params or {}},
        "runtime": {"seconds_per_sample": 0.01, "forward_backward_units": 2.0},
        "metrics": {m: {"direction": d, "mean": 0.0, "n": n, "n_nan": 0} for m, d in DIRECTIONS.items()},
    }


def _write(root, method: str, faith: np.ndarray, complexity: np.ndarray, **kw) -> None:
    n = len(faith)
    scores = pd.DataFrame({"sample": np.arange(n), "label": 0, "prediction": 0, "target": 0,
                           "faith": faith, "complexity": complexity})
    arrays = {"attributions": np.random.default_rng(0).normal(size=(n, 1, 4, 4)), "inputs": np.zeros((n, 1, 4, 4))}
    tag = f"{kw.get('created', 'a')[-2:]}-{abs(hash(str(kw.get('params')))) % 10**6}"
    write_record(root, f"{method}-{tag}", _record(method, n=n, **kw), scores, arrays)


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
    # a run that belongs to no table makes a table of its own, named after its model and data
    write_record(root, "loose", {**_record("ig", n=1), "config": {"table": None},
                                 "dataset": {"name": "other", "modality": "tabular"}},
                 pd.DataFrame({"sample": [0], "faith": [1.0], "complexity": [1.0]}), {"attributions": np.zeros((1, 1))})
    return root


def test_collect_groups_by_table_and_keeps_the_newest(records):
    loose, data = collect(records)
    assert loose.name == "mlp_other" and list(loose.folders) == ["ig"]
    assert data.name == "toy_table" and sorted(data.folders) == ["backtrace", "random", "saliency"]
    sal = data.scores[(data.scores.method == "saliency") & (data.scores.metric == "complexity")]
    assert (sal.score == 2.0).all()
    assert data.directions == DIRECTIONS


def test_written_tables_mark_best_direction_nan_and_statistics(records, tmp_path):
    out = tmp_path / "results"
    assert main(["--results-dir", str(records), "--out", str(out), "--table", "toy_table"]) == 0
    md = (out / "tables" / "toy_table.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| method | faith ↑ | complexity ↓ | mean rank ↓")
    rows = {line.split(" | ")[0][2:]: line for line in lines[1:4]}
    assert list(rows) == ["backtrace", "saliency", "random"]       # reference first, controls last
    assert "**1.00 [1.00, 1.00]**" in rows["backtrace"] and "(1 NaN)" in rows["random"]
    assert "**" not in rows["random"]
    assert "Friedman" in md and "Holm" in md and "rank-biserial" in md
    wilcoxon_random = next(line for line in md.splitlines() if line.startswith("| random") and "p=" in line)
    assert wilcoxon_random.count("+ p=") == 2                          # backtrace significantly better on both
    assert "r=+1.00" in wilcoxon_random
    csv = pd.read_csv(out / "tables" / "toy_table.csv")
    row = csv.set_index("method").loc["random"]
    assert row["faith_n"] == 19 and row["faith_n_nan"] == 1
    assert row["faith_ci_low"] <= row["faith"] <= row["faith_ci_high"]
    # every method is averaged over the same 19 samples (sample 3 is undefined for random)
    assert csv.set_index("method").loc["backtrace", "faith_n"] == 19
    assert csv.set_index("method").loc["backtrace", "mean_rank"] == 1.0
    tex = (out / "tables" / "toy_table.tex").read_text()
    assert r"\textbf{1.00}" in tex and r"$\downarrow$" in tex
    assert r"\begin{table}" in tex and r"\caption{toy\_table: model mlp on toy" in tex
    assert (out / "figures" / "toy_table_heatmaps.png").stat().st_size > 0


def test_results_md_blocks_are_refreshed(records, tmp_path):
    out = tmp_path / "results"
    main(["--results-dir", str(records), "--out", str(out)])
    readme = tmp_path / "RESULTS.md"
    readme.write_text("intro\n<!-- table:toy_table -->\nold\n<!-- /table -->\nend\n")
    update_results_md(readme, out / "tables")
    text = readme.read_text()
    assert "\nold\n" not in text and "| backtrace |" in text and text.endswith("end\n")


def _results_md_with(tmp_path, heading: str):
    readme = tmp_path / "RESULTS.md"
    readme.write_text(f"intro\n<!-- table:toy_table -->\n{heading}\n| old |\n<!-- /table -->\n"
                      f"<!-- table:other -->\nkept\n<!-- /table -->\nend\n")
    return readme


def test_results_md_table_is_not_replaced_by_one_of_fewer_samples(records, tmp_path, capsys):
    readme = _results_md_with(tmp_path, "**toy_table**: model `mlp` on `toy`, 64 test samples; every method ...")
    before = readme.read_text()
    out = tmp_path / "results"
    assert main(["--results-dir", str(records), "--out", str(out), "--table", "toy_table", "--publish",
                 "--results-md", str(readme)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: table 'toy_table' in {readme} would shrink (test samples 64 -> 20); nothing written: rerun with "
        f"RESULTS.md's sample sizes, or pass --allow-smaller to replace it anyway")
    assert readme.read_text() == before and not out.exists()
    assert main(["--results-dir", str(records), "--out", str(out), "--table", "toy_table", "--publish",
                 "--results-md", str(readme), "--allow-smaller"]) == 0
    text = readme.read_text()
    assert "| old |" not in text and "20 test samples" in text and "| backtrace |" in text
    assert "<!-- table:other -->\nkept\n<!-- /table -->" in text      # a table not generated stays as it was


def test_results_md_table_of_as_many_samples_is_replaced_and_a_shrunk_metric_subset_refused(records, tmp_path, capsys):
    out = tmp_path / "results"
    readme = _results_md_with(tmp_path, "**toy_table**: 20 test samples; every method ...")
    assert main(["--results-dir", str(records), "--out", str(out), "--publish", "--results-md", str(readme)]) == 0
    assert "| old |" not in readme.read_text()
    readme = _results_md_with(tmp_path, "**toy_table**: 20 test samples; (k NaN). faith: on the first 32 samples only "
                                    "(a declared budget).")
    assert update_results_md_refused(readme, out) == (
        f"table 'toy_table' in {readme} would shrink (faith samples 32 -> 20); nothing written: rerun with "
        f"RESULTS.md's sample sizes, or pass --allow-smaller to replace it anyway")


def update_results_md_refused(readme, out) -> str:
    from experiments.errors import TableError

    before = readme.read_text()
    with pytest.raises(TableError) as err:
        update_results_md(readme, out / "tables")
    assert readme.read_text() == before
    return str(err.value)


def test_no_records_is_a_clear_error(tmp_path, capsys):
    assert main(["--results-dir", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "error: no records under" in capsys.readouterr().err


def test_two_variants_of_one_method_are_two_rows(tmp_path):
    root = tmp_path / "runs"
    base = np.linspace(0, 1, 12)
    ig = "baselines.IntegratedGradientsMethod"
    _write(root, "backtrace", base + 1, base)
    _write(root, "ig", base, base, params={"_target_": ig, "n_steps": 4, "baseline": "zero", "method": "gausslegendre",
                                          "internal_batch_size": 64, "output": "softmax"})
    _write(root, "ig", base + 0.5, base, params={"_target_": ig, "n_steps": 50, "baseline": "zero",
                                                "method": "gausslegendre", "internal_batch_size": 64,
                                                "output": "softmax"})
    (data,) = collect(root)
    # n_steps differs between the two ig records: both rows say so (50 is also ig.yaml's own value)
    assert sorted(data.folders) == ["backtrace", "ig (n_steps=4)", "ig (n_steps=50)"]
    out = tmp_path / "results"
    assert main(["--results-dir", str(root), "--out", str(out)]) == 0
    md = (out / "tables" / "toy_table.md").read_text()
    assert "| ig (n_steps=4) | " in md and "| ig (n_steps=50) | " in md


def test_a_table_whose_cells_differ_in_samples_is_refused_and_nothing_written(tmp_path, capsys):
    root = tmp_path / "runs"
    _write(root, "backtrace", np.arange(8.0), np.arange(8.0))
    _write(root, "saliency", np.arange(16.0), np.arange(16.0))
    out = tmp_path / "results"
    assert main(["--results-dir", str(root), "--out", str(out), "--table", "toy_table"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: table 'toy_table' mixes runs that differ in samples ('backtrace' and 'saliency': "
                   "8 vs 16 samples); rerun them with the same settings, or split it with --where n=8 (or n=16)")
    assert not out.exists()


def test_any_reference_method_and_a_clear_error_for_an_unknown_one(records, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["--results-dir", str(records), "--out", str(out), "--table", "toy_table",
                 "--reference", "saliency"]) == 0
    md = (out / "tables" / "toy_table.md").read_text()
    assert "Wilcoxon signed-rank, `saliency` vs each method" in md
    assert main(["--results-dir", str(records), "--out", str(out), "--reference", "nope"]) == 2
    assert "unknown reference method 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_paper_tabular_sweep_end_to_end(tmp_path):
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    published = {p: p.read_bytes() for p in (ROOT / "results").rglob("*") if p.is_file()}
    cmd = [sys.executable, "-m", "experiments.reproduce", "paper_tabular", "n_samples=6", "model.train.epochs=5",
           f"results_dir={runs}", f"cache_dir={cache}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = runs                                      # the tables go next to the records, not into results/
    assert {p: p.read_bytes() for p in (ROOT / "results").rglob("*") if p.is_file()} == published
    assert "sweep paper_tabular:" in proc.stdout
    records = [json.loads(p.read_text()) for p in runs.glob("*/record.json")]
    methods = {r["method"]["name"] for r in records}
    assert {"backtrace", "ig", "random"} <= methods
    assert all(r["config"]["table"] == "paper_tabular" for r in records)
    md = (out / "tables" / "paper_tabular.md").read_text()
    assert all(f"| {m} |" in md for m in methods)


def test_reproduce_refuses_an_unknown_table(capsys):
    from experiments.report.reproduce import main as reproduce

    assert reproduce(["nope"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: unknown table 'nope'; valid choices: keras, paper_bbox, paper_generation, paper_image, "
        "paper_localisation, paper_segmentation, paper_tabular, paper_text, paper_text_lstm")


def test_reproduce_warms_up_the_models_an_experiment_sweeps():
    # the generation table sweeps two decoders: both are trained before the sweep, not the
    # config's default model; a table of one model warms up that one
    from experiments.report.reproduce import swept_models

    assert swept_models("paper_generation", []) == ["tiny_decoder", "smollm2"]
    assert swept_models("keras", []) == ["keras_cnn", "keras_cnn_torch"]
    assert swept_models("paper_tabular", []) == [None]


def test_backtrace_conservation_is_shown_under_the_table(tmp_path):
    root = tmp_path / "runs"
    n = 6
    scores = pd.DataFrame({"sample": np.arange(n), "faith": np.linspace(0, 1, n), "complexity": np.ones(n),
                           "conservation": np.full(n, 0.5)})
    record = {**_record("backtrace", n=n), "diagnostics": {"conservation": {"mean": 0.5, "min": 0.5, "max": 0.5}}}
    write_record(root, "bt", record, scores, {"attributions": np.zeros((n, 1, 4, 4)), "inputs": np.zeros((n, 1, 4, 4))})
    contrastive = {**_record("backtrace_contrastive", n=n), "diagnostics": {
        "conservation_positive": {"mean": 0.25, "min": 0.0, "max": 1.0},
        "conservation_negative": {"mean": 0.75, "min": 0.0, "max": 1.0}}}
    write_record(root, "btc", contrastive, scores, {"attributions": np.zeros((n, 1, 4, 4)), "inputs": np.zeros((n, 1, 4, 4))})
    out = tmp_path / "results"
    assert main(["--results-dir", str(root), "--out", str(out)]) == 0
    md = (out / "tables" / "toy_table.md").read_text()
    notes = {line.split(" | ")[0][2:]: line for line in md.splitlines() if "| softmax |" in line or "| None |" in line}
    assert notes["backtrace"].endswith("| 0.500 |")
    assert notes["backtrace_contrastive"].endswith("| R+ 0.250, R- 0.750 |")


def _write_cell(root, method: str, scores: dict[str, np.ndarray], infos: dict[str, dict], **method_info) -> None:
    """A record whose metrics declare their category, sign handling and scored samples."""
    n = max(len(v) for v in scores.values())
    frame = pd.DataFrame({"sample": np.arange(n), **{m: np.resize(v, n) for m, v in scores.items()}})
    record = _record(method, n=n)
    record["output"] = "softmax"
    record["method"].update(method_info)
    record["metrics"] = {m: {"direction": "higher", "mean": 0.0, "n": len(scores[m]), "n_nan": 0, **info}
                         for m, info in infos.items()}
    write_record(root, method, record, frame, {"attributions": np.zeros((n, 1, 4, 4)), "inputs": np.zeros((n, 1, 4, 4))})


def test_notes_say_which_methods_read_no_output_and_which_metrics_compare_magnitudes(tmp_path):
    root, rng = tmp_path / "runs", np.random.default_rng(0)
    infos = {"agree": {"category": "localisation", "attributions": "absolute"},
             "faith": {"category": "faithfulness", "attributions": "signed"}}
    _write_cell(root, "backtrace", {"agree": rng.random(12) + 1, "faith": rng.random(12)}, infos)
    _write_cell(root, "random", {"agree": rng.random(12), "faith": rng.random(12)}, infos, reads_output=False)
    # a method that reads the output, and a record from before the field existed, name the output
    _write_cell(root, "saliency", {"agree": rng.random(12), "faith": rng.random(12)}, infos, reads_output=True)
    out = tmp_path / "results"
    assert main(["--results-dir", str(root), "--out", str(out)]) == 0
    md = (out / "tables" / "toy_table.md").read_text()
    assert "| random | reads no output | yes |" in md
    assert "| saliency | softmax | no (scored as magnitude) |" in md and "| backtrace | softmax | yes |" in md
    assert ("Scoring: agree compare magnitudes |a| for every method; faith take the attributions as scored "
            "(signed where the method is signed, |a| where it is not).") in md


def test_the_heading_states_the_rarity_controls_rationale_agreement_from_its_records(tmp_path):
    root = tmp_path / "runs"
    infos = {"agree": {"category": "localisation", "attributions": "absolute"},
             "faith": {"category": "faithfulness", "attributions": "signed"}}
    _write_cell(root, "backtrace", {"agree": np.linspace(0.5, 1.0, 10), "faith": np.ones(10)}, infos)
    _write_cell(root, "rarity", {"agree": np.full(10, 0.00129), "faith": np.zeros(10)}, infos, reads_output=False)
    out = tmp_path / "results"
    assert main(["--results-dir", str(root), "--out", str(out)]) == 0
    heading = (out / "tables" / "toy_table.md").read_text().splitlines()[0]
    assert ("Model-free floor: the `rarity` control (each token's rarity in the training split; it runs no model) "
            "scores agree 0.00129 on these samples; agreement above it needs the model.") in heading
    rows = [line for line in (out / "tables" / "toy_table.md").read_text().splitlines() if line.startswith("| rarity |")]
    assert rows[0].startswith("| rarity | 0.00129 [0.00129, 0.00129] |")      # three significant digits, a control last


def test_too_few_samples_for_any_test_is_one_line_not_a_column_of_equals(tmp_path):
    root = tmp_path / "runs"
    base = np.arange(5.0)
    _write(root, "backtrace", base + 10, base)          # better than both on every sample: r = +1
    _write(root, "saliency", base, base + 1)
    _write(root, "random", base - 1, base + 2)
    out = tmp_path / "results"
    assert main(["--results-dir", str(root), "--out", str(out)]) == 0
    md = (out / "tables" / "toy_table.md").read_text()
    # five pairs: the smallest two-sided p is 2 / 2**5 = 0.0625, times two comparisons 0.125
    assert ("Wilcoxon signed-rank tests of `backtrace` against each method are not shown: too few samples for any "
            "Holm-corrected test to reach 0.05 (n = 5 pairs: smallest p 0.0625, x 2 comparisons = 0.125). "
            "Rerun with more samples for the paired tests.") in md
    assert "= p=" not in md and "| method | faith | complexity |" not in md


def test_a_metric_scored_on_too_few_samples_is_marked_in_its_column(tmp_path):
    root, rng = tmp_path / "runs", np.random.default_rng(2)
    infos = {"faith": {}, "complexity": {}}
    _write_cell(root, "backtrace", {"faith": rng.random(20) + 2, "complexity": rng.random(5) + 2}, infos)
    _write_cell(root, "saliency", {"faith": rng.random(20), "complexity": rng.random(5)}, infos)
    out = tmp_path / "results"
    assert main(["--results-dir", str(root), "--out", str(out)]) == 0
    md = (out / "tables" / "toy_table.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| saliency | + p="))
    assert row.endswith("| n too small |")
    assert ("n too small: complexity (n = 5 pairs, 1 comparisons: the smallest Holm p is 0.0625); no test there "
            "can reach 0.05.") in md


def test_publish_refreshes_the_results_md_beside_the_published_results(records, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("BACKTRACE_BENCH_HOME", str(home))
    page = _results_md_with(home, "**toy_table**: 20 test samples; every method ...")
    assert main(["--results-dir", str(records), "--publish"]) == 0
    text = page.read_text()
    assert (home / "results" / "tables" / "toy_table.md").is_file()
    assert "| old |" not in text and "| backtrace |" in text
    assert "<!-- table:other -->\nkept\n<!-- /table -->" in text
