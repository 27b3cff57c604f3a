"""``run.py`` end to end with the LRP family: ``lrp`` on the MLP, ``attnlrp`` on bert_tiny, each a
record with finite, signed per-feature attributions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_py(tmp_path: Path, *args: str) -> Path:
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *args, "n_samples=4", "threads=1",
                           f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if (p / "record.json").exists()]
    return folder


@pytest.mark.slow
def test_run_py_lrp_on_the_mlp(tmp_path):
    folder = run_py(tmp_path, "model=mlp", "method=lrp", "model.train.epochs=2")
    record = json.loads((folder / "record.json").read_text())
    assert record["method"]["name"] == "lrp" and record["method"]["signed"] is True
    assert record["method"]["rules"] == {"composite": "epsilon_plus", "epsilon": 1e-6, "stabilizer": 1e-6}
    values = np.load(folder / "arrays.npz")["attributions"]
    assert values.shape == (4, 30) and np.isfinite(values).all() and (values < 0).any() and (values > 0).any()


@pytest.mark.slow
def test_run_py_attnlrp_on_bert_tiny(tmp_path):
    folder = run_py(tmp_path, "model=bert_tiny", "method=attnlrp", "dataset.n_train=64", "dataset.n_test=16",
                    "model.train.epochs=1", "metrics=none")
    record = json.loads((folder / "record.json").read_text())
    assert record["method"]["name"] == "attnlrp" and record["method"]["rules"] == {"family": "bert"}
    arrays = np.load(folder / "arrays.npz")
    values, tokens = arrays["attributions"], arrays["inputs"]
    assert values.shape == tokens.shape and np.isfinite(values).all()
    assert (values[tokens == 0] == 0).all() and (values != 0).any()
