"""Sweeps through Hydra's launchers: joblib and submitit_local workers write exactly the records a
sequential sweep writes, the SLURM config composes into the submitit job it should, each cell
gets its line in the sweep index, and each worker its share of the cores."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from experiments.run import launchers
from experiments.run.config import CONFIG_DIR, ROOT
from experiments.run.sweep_index import COLUMNS, append_line, read_index

# Two cells of the fast MLP, one torch thread each, so every launcher computes the same floats.
CELLS = ["model=mlp", "model.train.epochs=2", "method=saliency,smoothgrad", "metrics=quick",
         "n_samples=6", "batch_size=4", "threads=1"]
# What differs between two runs of one cell however they are launched: when and how fast.
TIMING = ("created", "seconds", "runtime")


def _hydra_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides, return_hydra_config=True)


def _sweep(tmp_path: Path, runs: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", *CELLS, f"results_dir={runs}",
                           f"cache_dir={tmp_path / 'cache'}", *extra],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _index_of(proc: subprocess.CompletedProcess) -> pd.DataFrame:
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("sweep index: ")]
    assert len(line) == 1, proc.stdout
    return read_index(line[0].split()[2])


def _comparable(record: dict) -> dict:
    rec = {k: v for k, v in record.items() if k not in TIMING}
    rec["model"] = {k: v for k, v in rec["model"].items() if k not in ("from_cache", "train_seconds")}
    rec["config"] = {k: v for k, v in rec["config"].items() if k != "results_dir"}   # where, not what
    return rec


@pytest.mark.slow
def test_parallel_workers_write_exactly_the_sequential_records(tmp_path):
    seq = _sweep(tmp_path, tmp_path / "sequential")
    assert "[HYDRA] Launching 2 jobs locally" in seq.stdout            # Hydra's sweep lines are back
    assert "[HYDRA] \t#1 : " in seq.stdout
    index = _index_of(seq)
    assert list(index.columns) == list(COLUMNS) and list(index["job"]) == [0, 1]
    assert list(index["status"]) == ["ok", "ok"] and (index["seconds"] > 0).all()
    assert ["method=saliency" in o for o in index["overrides"]] == [True, False]
    assert ["method=smoothgrad" in o for o in index["overrides"]] == [False, True]
    expected = sorted(p.name for p in (tmp_path / "sequential").iterdir() if not p.name.startswith("."))
    assert sorted(Path(r).name for r in index["record"]) == expected and len(expected) == 2

    rerun = _index_of(_sweep(tmp_path, tmp_path / "sequential"))   # valid records: both cells skipped
    assert list(rerun["status"]) == ["skipped", "skipped"] and list(rerun["record"]) == list(index["record"])

    for launcher, extra in (("joblib", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]),
                            ("submitit_local", ["hydra/launcher=submitit_local"])):
        runs = tmp_path / launcher
        proc = _sweep(tmp_path, runs, *extra)
        par = _index_of(proc)
        assert list(par["status"]) == ["ok", "ok"], launcher
        assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == expected, launcher
        for name in expected:
            a, b = tmp_path / "sequential" / name, runs / name
            assert (a / "scores.csv").read_bytes() == (b / "scores.csv").read_bytes(), (launcher, name)
            with np.load(a / "arrays.npz") as xa, np.load(b / "arrays.npz") as xb:
                assert sorted(xa.files) == sorted(xb.files)
                for key in xa.files:
                    np.testing.assert_array_equal(xa[key], xb[key], err_msg=f"{launcher} {name} {key}")
            ra, rb = (json.loads((d / "record.json").read_text()) for d in (a, b))
            assert ra["config_hash"] == rb["config_hash"] == name
            assert _comparable(ra) == _comparable(rb), (launcher, name)
            assert rb["runtime"]["threads"] == 1


@pytest.mark.slow
def test_a_single_run_prints_no_hydra_lines_and_no_index(tmp_path):
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "model=mlp", "model.train.epochs=2",
                           "method=saliency", "metrics=quick", "n_samples=4", f"results_dir={tmp_path / 'runs'}",
                           f"cache_dir={tmp_path / 'cache'}"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "HYDRA" not in proc.stdout + proc.stderr and "sweep index" not in proc.stdout
    assert not (tmp_path / "cache" / "hydra").exists()


def test_slurm_config_composes_into_the_submitit_job_it_describes(tmp_path, monkeypatch):
    import submitit
    from hydra.utils import instantiate
    from submitit.slurm.slurm import SlurmExecutor

    cfg = _hydra_config(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90",
                         "hydra.launcher.gpus_per_node=2", f"cache_dir={tmp_path}", "hydra.job.name=bench"])
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config, launcher.hydra_context, launcher.task_function = cfg, None, None
    # No cluster here: pretend srun exists, and capture the executor instead of submitting.
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    captured = []
    monkeypatch.setattr(submitit.AutoExecutor, "map_array",
                        lambda self, fn, *args: captured.append((self, [list(a) for a in args])) or [])
    assert launcher.launch([["method=ig"], ["method=saliency"]], initial_job_idx=0) == []
    executor, args = captured[0]
    assert args[0] == [["method=ig"], ["method=saliency"]] and args[2] == [0, 1]
    sbatch = executor._executor._make_submission_file_text("CMD", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB", "#SBATCH --job-name=bench"):
        assert line in sbatch, (line, sbatch)
    assert executor._executor.parameters["array_parallelism"] == 64   # the array's %64 at submission
    assert str(tmp_path / "hydra") in sbatch  # logs under the sweep folder


@pytest.mark.parametrize("overrides,cores,expected", [
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 2, 1),
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 16, 8),
    (["hydra/launcher=joblib"], 8, 1),                        # joblib's default n_jobs=-1: one per core
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=-2"], 8, 1),   # 7 workers on 8 cores
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=3", "threads=2"], 8, 2),   # set: kept
    (["hydra/launcher=slurm"], 64, 4),                        # cpus_per_task of configs/hydra/launcher/slurm.yaml
    (["hydra/launcher=submitit_local"], 8, None),
    (["hydra/launcher=basic"], 8, None),
])
def test_workers_times_threads_is_the_core_count(overrides, cores, expected):
    cfg = _hydra_config([*overrides, "hydra.mode=MULTIRUN", "hydra.job.name=bench"])
    HydraConfig.instance().set_config(cfg)
    try:
        assert launchers.run_threads(cfg.threads, cores=cores) == expected
        assert launchers.in_parallel_worker() == (overrides[0].split("=")[1] not in ("basic",))
    finally:
        HydraConfig.instance().cfg = None
    assert launchers.run_threads(None, cores=cores) is None           # outside a sweep: torch's default
    assert launchers.run_threads(3, cores=cores) == 3


def test_index_lines_from_parallel_writers_never_interleave(tmp_path):
    """Four processes append 50 lines each (long overrides) to one index under its lock."""
    path = tmp_path / "index.csv"
    code = ("import sys; from pathlib import Path; from experiments.run.sweep_index import append_line\n"
            "w = int(sys.argv[1])\n"
            "for i in range(50):\n"
            "    append_line(Path(sys.argv[2]), {'job': w * 100 + i, 'overrides': 'method=ig ' + 'x' * 3000,"
            " 'status': 'ok', 'record': f'r/{w}/{i}', 'seconds': '0.5', 'message': 'a, \"quoted\" line'})\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w), str(path)], cwd=ROOT) for w in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    df = read_index(path)
    assert len(df) == 200 and sorted(df["job"]) == sorted(w * 100 + i for w in range(4) for i in range(50))
    assert (df["record"] == [f"r/{j // 100}/{j % 100}" for j in df["job"]]).all()
    assert set(df["message"]) == {'a, "quoted" line'} and path.read_text().count("job,overrides") == 1
    append_line(path, {"job": 999, "status": "error", "message": "x"})
    assert read_index(path)["status"].iloc[-1] == "error"


@pytest.mark.slow
def test_a_failing_cell_gets_an_error_line_in_the_index(tmp_path):
    from tests.helpers.faults_helpers import TINY, cli

    args = [a for a in TINY if not a.startswith("method=")]
    code, out, err = cli(["-m", *args, "method=gradcam,saliency", f"results_dir={tmp_path / 'runs'}",
                          f"cache_dir={tmp_path / 'cache'}"])
    assert code == 2 and err.strip() == ("error: method 'gradcam' does not support 'tabular' data; it supports: "
                                         "image (model 'mlp')")
    (path,) = (tmp_path / "cache" / "hydra").glob("*/index.csv")
    index = read_index(path)
    assert list(index["status"]) == ["error"] and list(index["job"]) == [0] and index["record"].iloc[0] == ""
    assert "method=gradcam" in index["overrides"].iloc[0] and "does not support 'tabular'" in index["message"].iloc[0]
