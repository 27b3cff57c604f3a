"""The run spine end to end: records, skipping, forcing, atomic writes, and refusals of bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.run.config import ROOT, compose
from experiments.run.records import config_hash, iter_records
from experiments.run.runner import run

TINY_MLP = ["model=mlp", "model.train.epochs=3", "method=saliency", "metrics=quick", "n_samples=6", "batch_size=4"]
TINY_CNN = ["model=cnn", "model.train.epochs=2", "method=saliency", "metrics=quick", "n_samples=6", "batch_size=4"]


def _records(results: Path) -> list[Path]:
    return sorted(p for p in results.iterdir() if (p / "record.json").exists()) if results.exists() else []


@pytest.mark.parametrize("overrides", [TINY_MLP, TINY_CNN], ids=["mlp", "cnn"])
def test_end_to_end_run_writes_a_record_with_finite_scores(overrides, run_dirs, tmp_path):
    cfg = compose(overrides + run_dirs)
    result = run(cfg)
    assert not result.skipped
    rec = json.loads((result.path / "record.json").read_text())
    assert rec["config_hash"] == config_hash(cfg) == result.path.name
    assert rec["config"]["model"]["name"] == cfg.model.name
    assert 0.5 < rec["model"]["test_accuracy"] <= 1.0
    assert set(rec["metrics"]) == set(cfg.metrics)
    assert rec["dataset"]["ground_truth"] is False  # said by the record: figures never rebuild the data
    for m in rec["metrics"].values():
        assert m["direction"] in ("higher", "lower")
        assert np.isfinite(m["mean"]) and m["n"] == 6 and m["n_nan"] == 0
    assert {"torch", "captum", "quantus"} <= set(rec["versions"])
    assert {"load_data", "load_model", "explain", "total"} <= set(rec["seconds"])
    scores = pd.read_csv(result.path / "scores.csv")
    assert len(scores) == 6 and set(cfg.metrics) <= set(scores.columns)
    assert (scores["target"] == scores["label"]).all()  # target=label by default
    arrays = np.load(result.path / "arrays.npz")
    assert arrays["attributions"].shape[0] == 6 and np.isfinite(arrays["attributions"]).all()


def test_a_metric_on_a_declared_subset_scores_only_the_first_samples(run_dirs):
    cfg = compose(TINY_MLP + run_dirs + ["metrics.sparseness.max_samples=4"])
    result = run(cfg)
    rec = json.loads((result.path / "record.json").read_text())
    assert rec["metrics"]["sparseness"]["n"] == 4 and rec["metrics"]["faithfulness_correlation"]["n"] == 6
    assert rec["metrics"]["sparseness"]["params"]["max_samples"] == 4
    scores = pd.read_csv(result.path / "scores.csv")
    assert scores["sparseness"][:4].notna().all() and scores["sparseness"][4:].isna().all()
    # the run records what it explained, and what the method returned
    assert rec["output"] == "softmax" and rec["saturated_samples"] == 0
    assert rec["method"]["returns"]["non_negative_samples"] == 1.0       # saliency: magnitudes
    assert rec["method"]["signed"] is False


def test_rerun_is_skipped_and_force_reruns(run_dirs, tmp_path):
    cfg = compose(TINY_MLP + run_dirs)
    first = run(cfg)
    created = json.loads((first.path / "record.json").read_text())["created"]
    mtime = (first.path / "record.json").stat().st_mtime_ns
    second = run(cfg)
    assert second.skipped and second.path == first.path
    assert (first.path / "record.json").stat().st_mtime_ns == mtime
    # the model is cached: the forced rerun loads it instead of training
    third = run(compose(TINY_MLP + run_dirs + ["force=true"]))
    assert not third.skipped and third.path == first.path
    rec = json.loads((third.path / "record.json").read_text())
    assert rec["model"]["from_cache"] is True
    assert rec["created"] >= created
    assert len(_records(tmp_path / "runs")) == 1


def test_killed_write_leaves_no_record(run_dirs, tmp_path, monkeypatch):
    import experiments.run.records as records

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process were interrupted mid-write

    monkeypatch.setattr(records.json, "dump", killed)
    with pytest.raises(KeyboardInterrupt):
        run(compose(TINY_MLP + run_dirs))
    results = tmp_path / "runs"
    assert _records(results) == []
    # no temporary folder left behind either (the cell's hidden lock file stays, by design)
    assert [p.name for p in results.iterdir() if not p.name.startswith(".lock-")] == []
    assert list(iter_records(results)) == []


def test_seeded_sample_selection_is_deterministic(run_dirs):
    a = run(compose(TINY_MLP + run_dirs + ["sample_selection=random", "seed=3"]))
    b = run(compose(TINY_MLP + run_dirs + ["sample_selection=random", "seed=3", "force=true"]))
    sa = pd.read_csv(a.path / "scores.csv")["sample"].tolist()
    sb = pd.read_csv(b.path / "scores.csv")["sample"].tolist()
    assert sa == sb and sa != list(range(6))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=600)


BAD_INPUTS = [
    (["model=nope"], "unknown model 'nope'; valid choices: bbox_cnn, bert, bert_tiny, cnn,"),
    (["dataset=nope"], "unknown dataset 'nope'; valid choices:"),
    (["method=nope"], "unknown method 'nope'; valid choices:"),
    (["metrics=nope"], "unknown metrics 'nope'; valid choices:"),
    (["nsamples=3"], "unknown setting 'nsamples'; valid settings: n_samples,"),
    (["model=mlp", "n_samples=abc"], "n_samples must be a positive integer, got 'abc'"),
    (["model=mlp", "n_samples=0"], "n_samples must be a positive integer, got 0"),
    (["model=mlp", "target=foo"], "unknown target 'foo'; valid choices: label, prediction"),
    (["model=mlp", "device=tpu"], "unknown device 'tpu'; valid choices: cpu, cuda, auto"),
    (["model=resnet", "dataset=breast_cancer"],
     "model 'resnet' takes image data but dataset 'breast_cancer' is tabular; choose an image dataset"),
    (["model=mlp", "method=gradcam"], "method 'gradcam' does not support 'tabular' data; it supports: image"),
    (["model=mlp", "output=probs"], "unknown output 'probs'; valid choices: softmax, logits"),
    (["model=mlp", "method=backtrace_contrastive", "output=logits"],
     "method 'backtrace_contrastive' cannot explain output 'logits'"),
    (["model=mlp", "threads=0"], "threads must be a positive integer or null, got 0"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_line_and_no_record(args, message, tmp_path):
    proc = _cli(*args, f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("error: ") and message in err[0], err[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "runs").exists() or _records(tmp_path / "runs") == []


@pytest.mark.slow
def test_cli_multirun_writes_one_record_per_cell(tmp_path):
    proc = _cli("-m", "model=mlp", "model.train.epochs=2", "method=saliency,gradxinput", "metrics=quick",
                "n_samples=4", f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads((p / "record.json").read_text()) for p in _records(tmp_path / "runs")]
    assert sorted(r["method"]["name"] for r in recs) == ["gradxinput", "saliency"]
    assert [p.name for p in tmp_path.iterdir() if p.name not in ("runs", "cache")] == []
