"""``python -m experiments.reproduce <table> --check``: a published table's cells rerun and compared
with its evidence, per sample; a different model, a perturbed score or a table out of step with
its evidence fails it, and nothing is written into the checkout's results/."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from experiments.report.check import TOLERANCE, check, relative
from experiments.run.config import ROOT
from tests.helpers.folders import file_hashes

N_PUBLISHED, N_CHECKED = 12, 6
METHODS = "backtrace,lime,saliency"


def test_relative_difference_is_scaled_by_the_metric_near_zero():
    stored = np.array([0.5, 1e-9, 0.0, np.nan, np.nan, -2.0])
    rerun = np.array([0.5 + 1e-7, 3e-9, 0.0, np.nan, 1.0, -2.0])
    diff, rel = relative(stored, rerun, scale=0.8)
    np.testing.assert_allclose(diff[:3], [1e-7, 2e-9, 0.0], rtol=1e-6)
    np.testing.assert_allclose(rel[:3], [1e-7 / 0.8, 2e-9 / 0.8, 0.0], rtol=1e-6)   # max(|a|, |b|, 0.8)
    assert diff[3] == 0 and rel[3] == 0                  # both undefined: they agree
    assert diff[4] == np.inf and rel[4] == np.inf        # one undefined: they do not
    assert rel[5] == 0
    assert relative(np.array([0.0]), np.array([0.0]), scale=0.0)[1][0] == 0   # 0 / 0 is no difference


_tree = file_hashes


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A tiny paper_tabular (three methods, 12 samples, a 5-epoch model) published into a temporary
    folder, as ``reproduce --publish --out`` publishes it."""
    tmp = tmp_path_factory.mktemp("published")
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "experiments.reproduce", "paper_tabular", f"n_samples={N_PUBLISHED}",
           "model.train.epochs=5", f"method={METHODS}", f"results_dir={tmp / 'runs'}", f"cache_dir={tmp / 'cache'}",
           "--publish", "--out", str(tmp / "out")]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


def _copy(published, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(published / "out", out)
    return out


@pytest.mark.slow
def test_check_passes_on_unchanged_code_and_writes_nothing_into_results(published, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BACKTRACE_BENCH_HOME", str(tmp_path / "home"))
    before = _tree(ROOT / "results")
    code = check("paper_tabular", [f"n_samples={N_CHECKED}", f"cache_dir={published / 'cache'}"],
                 published / "out" / "evidence")
    out = capsys.readouterr().out.splitlines()
    assert code == 0, "\n".join(out)
    manifest = json.loads((published / "out" / "evidence" / "paper_tabular" / "evidence.json").read_text())
    assert out[0] == (f"paper_tabular: model mlp weights sha256 {manifest['model']['weights_sha256'][:12]}, "
                      f"as in the evidence")
    assert out[1].startswith(f"paper_tabular: rerunning 3 cells on the first {N_CHECKED} of {N_PUBLISHED} samples into ")
    header = next(i for i, line in enumerate(out) if line.split()[:3] == ["method", "metric", "samples"])
    rows = [line.split() for line in out[header + 1:-1]]
    record = json.loads((published / "out" / "evidence" / "paper_tabular" / "backtrace" / "record.json").read_text())
    n_metrics = len(record["metrics"])
    assert {r[0] for r in rows} == {"backtrace", "lime", "saliency"}
    assert len([r for r in rows if r[0] == "lime"]) == n_metrics
    assert all(r[2] == str(N_CHECKED) for r in rows)
    assert all(float(r[4]) <= TOLERANCE for r in rows)
    assert out[-1].startswith(f"paper_tabular: passed: all {len(rows)} method x metric within 1e-06 of the evidence")
    assert _tree(ROOT / "results") == before and not (tmp_path / "home").exists()


@pytest.mark.slow
def test_a_perturbed_score_fails_the_check_naming_method_and_metric(published, tmp_path, capsys):
    out = _copy(published, tmp_path)
    scores_file = out / "evidence" / "paper_tabular" / "backtrace" / "scores.csv"
    scores = pd.read_csv(scores_file)
    row = int(scores["tabular_sensitivity"].abs().iloc[:N_CHECKED].idxmax())
    before = float(scores.loc[row, "tabular_sensitivity"])
    scores.loc[row, "tabular_sensitivity"] *= 1 + 1e-4
    scores.to_csv(scores_file, index=False)
    # relative to max(|a|, |b|, the metric's largest |score| in the table's evidence)
    scale = max(float(pd.read_csv(f)["tabular_sensitivity"].abs().max())
                for f in (out / "evidence" / "paper_tabular").glob("*/scores.csv"))
    diff = abs(before) * 1e-4
    expected = f"(relative {diff / max(abs(before) * (1 + 1e-4), scale):.2e}, absolute {diff:.2e})"
    code = check("paper_tabular", [f"n_samples={N_CHECKED}", "method=backtrace", f"cache_dir={published / 'cache'}",
                                   f"results_dir={tmp_path / 'scratch'}"], out / "evidence")
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[-1].startswith("paper_tabular: FAILED: 1 of ")
    assert lines[-1].endswith("differ from the evidence by more than 1e-06 (relative): backtrace tabular_sensitivity "
                              + expected)
    assert (tmp_path / "scratch").is_dir()                            # a given scratch folder is kept


@pytest.mark.slow
def test_a_different_model_is_one_line_and_nothing_rerun(published, tmp_path, capsys):
    out = _copy(published, tmp_path)
    manifest_file = out / "evidence" / "paper_tabular" / "evidence.json"
    manifest = json.loads(manifest_file.read_text())
    here = manifest["model"]["weights_sha256"]
    manifest["model"]["weights_sha256"] = "0" * 64
    manifest_file.write_text(json.dumps(manifest))
    code = check("paper_tabular", [f"cache_dir={published / 'cache'}", f"results_dir={tmp_path / 'scratch'}"],
                 out / "evidence")
    assert code == 1
    assert capsys.readouterr().out.strip() == (
        f"paper_tabular: a different model: mlp (cache key {manifest['model']['cache_key']}) has weights sha256 "
        f"{here[:12]} here, the evidence 000000000000; no cell rerun")
    assert [p for p in (tmp_path / "scratch").iterdir() if p.is_dir()] == []


def test_a_table_out_of_step_with_its_evidence_fails(tmp_path, capsys):
    from experiments.report.paper_tables import main as tables
    from tests.helpers.table_records import write_cell

    for method in ("backtrace", "saliency"):
        write_cell(tmp_path / "runs", method)
    assert tables(["--results-dir", str(tmp_path / "runs"), "--publish", "--out", str(tmp_path / "out")]) == 0
    md = tmp_path / "out" / "tables" / "toy.md"
    md.write_text(md.read_text().replace("backtrace", "backtrack"))
    capsys.readouterr()
    assert check("toy", [f"results_dir={tmp_path / 'scratch'}"], tmp_path / "out" / "evidence") == 1
    assert capsys.readouterr().out.strip() == (
        f"toy: table and evidence out of step: {md} is not the table this evidence backs (sha256 differs); "
        f"republish the table")


@pytest.mark.parametrize("overrides, message", [
    (["n_samples=0"], "n_samples=0 for toy: choose 1..12 (the samples its evidence holds)"),
    (["seed=3"], "--check takes n_samples=..., results_dir=..., cache_dir=..., threads=..., method=...; got 'seed=3'"),
    (["method=lime"], "method=lime names no cell of toy; its cells: backtrace, saliency"),
])
def test_bad_check_options_are_one_line(tmp_path, capsys, overrides, message):
    from experiments.report.paper_tables import main as tables
    from tests.helpers.table_records import write_cell

    for method in ("backtrace", "saliency"):
        write_cell(tmp_path / "runs", method)
    assert tables(["--results-dir", str(tmp_path / "runs"), "--publish", "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert check("toy", [*overrides, f"results_dir={tmp_path / 'scratch'}"], tmp_path / "out" / "evidence") == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_unknown_tables_and_a_scratch_inside_results_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BACKTRACE_BENCH_HOME", str(tmp_path / "home"))
    assert check("nope", [], tmp_path) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: no evidence for table 'nope' under {tmp_path}; tables with evidence: (none; publish one with "
        f"paper_tables --publish)")
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "evidence.json").write_text(json.dumps({"name": "toy", "table": "toy", "cells": []}))
    inside = tmp_path / "home" / "results" / "scratch"
    assert check("toy", [f"results_dir={inside}"], tmp_path) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: results_dir={inside} is inside the published results/ ({tmp_path / 'home' / 'results'}); the check "
        f"writes only to a scratch folder: choose another")
    assert not inside.exists()


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    # the methods whose scores follow the sample: the first 16 samples
    ["n_samples=16", "method=backtrace,backtrace_contrastive,lrp,ig,gradxinput,saliency,lime,shap_partition"],
    # a method that draws per call: every sample (its re-explanations follow the call count)
    ["method=random"],
], ids=["first-16", "random-all"])
def test_the_published_paper_tabular_reproduces(options):
    """CI's cheap check of the committed evidence."""
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-m", "experiments.reproduce", "paper_tabular", "--check", *options],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "paper_tabular: passed: all " in proc.stdout.splitlines()[-1]


@pytest.mark.slow
def test_the_published_keras_tables_reproduce_in_a_plain_process():
    """TensorFlow's oneDNN kernels move a Keras model's outputs in the sixth digit; the harness turns
    them off on import, so the check reproduces without any TensorFlow setting in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env["BACKTRACE_BENCH_NO_PROGRESS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "experiments.reproduce", "keras", "--check", "n_samples=8",
                           "method=saliency"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = proc.stdout.splitlines()
    assert any(line.startswith("keras_keras_cnn_digits: passed: all ") for line in out), proc.stdout[-4000:]
    assert "keras_keras_cnn_torch_digits: passed: all " in out[-1]
