"""Faults and bad data: nothing lost, nothing silently wrong.

One test (or more) per case: non-finite and malformed CSV data, non-finite inputs to the harness
and to every method, invalid records (skipped by readers, recomputed by the runner), n_samples
beyond the test split, a rerun killed between its renames, leftovers of killed writers, two
writers of one cell, unwritable output folders, and overrides Hydra itself rejects.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from baselines import METHODS, ExplainContext
from baselines.base import NonFiniteInputError, check_finite_inputs
from experiments.data import datasets
from experiments.data.datasets import Dataset
from experiments.errors import ConfigError, DataError
from experiments.run.config import compose, method_config
from experiments.run.records import (cell_lock, iter_records, load_record, record_exists, record_path, record_problem,
                                     recover, write_record)
from experiments.run.runner import run, run_cli
from tests.helpers.faults_helpers import LOAN_COLUMNS, TINY, cli, cli_process, loan_rows, one_error_line, write_csv

pytestmark = pytest.mark.usefixtures("one_thread")


def _record(n: int = 3, method: str = "saliency") -> tuple[dict, pd.DataFrame, dict]:
    record = {"config_hash": "h", "config": {"table": "t"}, "created": "2026-01-01T00:00:00",
              "model": {"name": "mlp", "test_accuracy": 0.9}, "dataset": {"name": "toy", "modality": "tabular"},
              "method": {"name": method, "signed": True},
              "n_samples": n, "runtime": {}, "metrics": {"faith": {"direction": "higher"}}}
    scores = pd.DataFrame({"sample": np.arange(n), "faith": np.linspace(0, 1, n)})
    return record, scores, {"attributions": np.ones((n, 4))}


# ---------------------------------------------------------------------------------------------
# bad data in a CSV, and the generic finiteness check of every loader

def _lending(path: Path) -> Dataset:
    return datasets.lending_club(path=str(path), n_train=None, n_test=None)


def test_valid_generated_loan_csv_loads(tmp_path):
    ds = _lending(write_csv(tmp_path / "loans.csv", loan_rows()))
    assert torch.isfinite(ds.x_train).all() and len(ds.x_train) + len(ds.x_test) == 40 - 40 // 6 - 1


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "1e400"])
def test_infinite_number_in_a_csv_is_refused_naming_file_column_and_row(tmp_path, value):
    rows = loan_rows()
    rows[7][LOAN_COLUMNS.index("annual_inc")] = value
    path = write_csv(tmp_path / "loans.csv", rows)
    with pytest.raises(DataError) as err:
        _lending(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"lending_club: {path} column 'annual_inc' holds a non-finite value (")
    assert "in data row 8 (line 9)" in message


def test_infinity_in_an_all_numeric_column_is_refused(tmp_path):
    """pandas itself parses 'inf' into a float column when every other value is a number."""
    rows = loan_rows()
    rows[2][LOAN_COLUMNS.index("dti")] = "inf"
    with pytest.raises(DataError, match=r"column 'dti' holds a non-finite value \(inf\) in data row 3 \(line 4\)"):
        _lending(write_csv(tmp_path / "loans.csv", rows))


def test_missing_values_are_still_imputed_not_refused(tmp_path):
    rows = loan_rows()
    rows[1][LOAN_COLUMNS.index("annual_inc")] = ""
    rows[4][LOAN_COLUMNS.index("annual_inc")] = "nan"
    ds = _lending(write_csv(tmp_path / "loans.csv", rows))
    assert torch.isfinite(ds.x_train).all() and torch.isfinite(ds.x_test).all()


def test_unquoted_comma_shifting_a_row_is_refused_naming_the_line(tmp_path):
    rows = loan_rows()
    rows[5][LOAN_COLUMNS.index("purpose")] = "car,boat"  # one field too many, later columns shifted
    path = write_csv(tmp_path / "loans.csv", rows)
    with pytest.raises(DataError) as err:
        _lending(path)
    assert str(err.value) == (f"lending_club: {path} line 7 has 18 fields but the header has 17; "
                              f"quote values that contain commas, or fix the row")
    rows[5][LOAN_COLUMNS.index("purpose")] = '"car,boat"'  # quoted: one field, accepted
    assert _lending(write_csv(tmp_path / "quoted.csv", rows)).feature_names[-1].startswith("purpose=")


def test_row_with_a_missing_field_is_refused(tmp_path):
    rows = loan_rows()
    del rows[3][0]
    with pytest.raises(DataError, match=r"line 5 has 16 fields but the header has 17"):
        _lending(write_csv(tmp_path / "loans.csv", rows))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_every_loaded_split_must_be_finite(bad):
    x = torch.zeros(6, 3)
    x[4, 2] = bad
    with pytest.raises(DataError) as err:
        Dataset("toy", "tabular", torch.zeros(5, 3), torch.zeros(5, dtype=torch.long), x,
                torch.zeros(6, dtype=torch.long), 2, feature_names=["a", "b", "c"])
    assert str(err.value).startswith(f"dataset toy: x_test holds a non-finite value ({bad}) at sample 4, feature 'c'")
    img = torch.zeros(3, 1, 4, 4)
    img[1, 0, 2, 3] = bad
    with pytest.raises(DataError, match=r"x_train holds a non-finite value .* at sample 1, position \(0, 2, 3\)"):
        Dataset("img", "image", img, torch.zeros(3, dtype=torch.long), torch.zeros(2, 1, 4, 4),
                torch.zeros(2, dtype=torch.long), 2)


@pytest.mark.slow
def test_bad_csv_through_run_py_is_one_line_exit_2_and_no_record(tmp_path):
    rows = loan_rows()
    rows[7][LOAN_COLUMNS.index("annual_inc")] = "inf"
    path = write_csv(tmp_path / "loans.csv", rows)
    proc = cli_process(*TINY, "dataset=lending_club", f"dataset.path={path}", "dataset.n_train=null",
                       "dataset.n_test=null", f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}",
                       cwd=tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr).startswith(f"error: lending_club: {path} column 'annual_inc' holds a non-finite")
    assert not (tmp_path / "cache" / "models").exists() and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------
# non-finite inputs: refused by every method and by the runner

def _tabular_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


TABULAR_METHODS = sorted(n for n, c in METHODS.items() if "tabular" in c.modalities and "mlp" in c.model_kinds)


@pytest.mark.parametrize("name", TABULAR_METHODS)
def test_every_method_refuses_non_finite_inputs_naming_the_sample(name):
    from hydra.utils import instantiate

    cfg = method_config(name, "logits" if name == "shap_deep" else "softmax")   # the yaml reads the run's output
    ctx = ExplainContext(modality="tabular", model_kind="mlp", n_classes=3, x_train=torch.randn(20, 6), seed=0)
    explainer = instantiate(cfg, model=_tabular_model(), context=ctx)
    x = torch.randn(4, 6)
    x[2, 1] = float("nan")
    with pytest.raises(NonFiniteInputError) as err:
        explainer(x, torch.tensor([0, 1, 2, 0]))
    assert str(err.value).startswith("inputs hold a non-finite value (nan) in sample 2 of the batch (1 sample(s)")


def test_finite_check_names_dataset_indices_and_ignores_integer_inputs():
    x = torch.zeros(3, 2)
    x[1, 0] = float("-inf")
    with pytest.raises(NonFiniteInputError, match=r"^test inputs hold a non-finite value \(-inf\) in sample 17 "):
        check_finite_inputs(x, torch.tensor([5, 17, 40]), what="test inputs")
    check_finite_inputs(torch.tensor([[1, 2]]))  # token ids: always finite


def test_runner_refuses_non_finite_test_inputs_before_explaining(run_dirs, monkeypatch, capsys):
    import experiments.run.pipeline as pipeline

    real = pipeline.load_dataset

    def poisoned(cfg):
        ds = real(cfg)
        ds.x_test[2, 5] = float("nan")  # as a loader that bypassed the Dataset check would hand it over
        return ds

    monkeypatch.setattr(pipeline, "load_dataset", poisoned)
    with pytest.raises(SystemExit) as exit_:
        run_cli(compose(TINY + run_dirs))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("error: test inputs of breast_cancer hold a non-finite value (nan) in sample 2 "
                                       "(1 sample(s) affected); non-finite inputs are refused, since explaining them "
                                       "gives NaN attributions\n")
    assert not any(Path(run_dirs[0].split("=", 1)[1]).glob("[!.]*"))


def test_training_that_diverges_is_refused_and_not_cached(run_dirs, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(compose(TINY + run_dirs + ["model.train.lr=1e30"]))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model mlp: training diverged (non-finite weights in ") and err.count("\n") == 1
    cache = Path(run_dirs[1].split("=", 1)[1]) / "models"
    assert not cache.exists() or not any(cache.glob("*.pt"))


# ---------------------------------------------------------------------------------------------
# record validity

def _valid_folder(tmp_path: Path, n: int = 3) -> Path:
    return write_record(tmp_path / "runs", "abc", *_record(n))


CORRUPTIONS = {
    "record.json cut in half": (lambda f: (f / "record.json").write_text((f / "record.json").read_text()[:60]),
                                "record.json does not parse"),
    "record.json lacks keys": (lambda f: (f / "record.json").write_text('{"config": {}}'), "record.json lacks "),
    "scores.csv missing": (lambda f: (f / "scores.csv").unlink(), "missing scores.csv"),
    "scores.csv short": (lambda f: (f / "scores.csv").write_text("sample,faith\n0,1.0\n"),
                         "scores.csv has 1 rows for n_samples=3"),
    "arrays.npz garbled": (lambda f: (f / "arrays.npz").write_bytes(b"PK\x03\x04garbage"), "arrays.npz is unreadable"),
    "arrays.npz missing": (lambda f: (f / "arrays.npz").unlink(), "missing arrays.npz"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_an_invalid_record_does_not_count_and_readers_skip_it(tmp_path, case, capsys):
    folder = _valid_folder(tmp_path)
    assert record_problem(folder) is None and record_exists(tmp_path / "runs", "abc")
    corrupt, reason = CORRUPTIONS[case]
    corrupt(folder)
    assert reason in record_problem(folder)
    assert not record_exists(tmp_path / "runs", "abc")
    write_record(tmp_path / "runs", "good", *_record(2))
    assert [f.name for _, _, f in iter_records(tmp_path / "runs")] == ["good"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: skipping invalid record {folder}: {reason}")


def test_paper_tables_collect_skips_a_corrupt_record(tmp_path, capsys):
    from experiments.report.paper_tables import collect

    for method in ("backtrace", "saliency"):
        write_record(tmp_path / "runs", method, *_record(3, method))
    (tmp_path / "runs" / "saliency" / "record.json").write_text('{"config": {"tab')
    (data,) = collect(tmp_path / "runs")
    assert sorted(data.folders) == ["backtrace"]
    assert capsys.readouterr().err.startswith(f"warning: skipping invalid record {tmp_path / 'runs' / 'saliency'}:")


def test_a_cut_record_is_reported_and_recomputed(run_dirs, capsys):
    first = run(compose(TINY + run_dirs))
    text = (first.path / "record.json").read_text()
    (first.path / "record.json").write_text(text[: len(text) // 2])
    again = run(compose(TINY + run_dirs))
    out = capsys.readouterr().out
    assert not again.skipped and f"record {first.path} is invalid (record.json does not parse" in out
    assert record_problem(again.path) is None
    assert run(compose(TINY + run_dirs)).skipped


# ---------------------------------------------------------------------------------------------
# n_samples beyond the test split

def test_n_samples_beyond_the_test_split_is_said_and_recorded(run_dirs, capsys):
    result = run(compose(TINY + run_dirs + ["n_samples=100000", "dataset.n_test=7"]))
    out = capsys.readouterr().out
    assert "note: n_samples=100000 but the test split of breast_cancer holds 7 samples; explaining all 7" in out
    record, scores = load_record(result.path)
    assert record["n_samples"] == 7 and record["n_samples_requested"] == 100000
    assert record["config"]["n_samples"] == 100000 and len(scores) == 7


# ---------------------------------------------------------------------------------------------
# atomic replacement, leftovers of killed writers, concurrent writers

_KILL_AT_SWAP = """
import os, signal, sys
import numpy as np, pandas as pd
sys.path[:0] = [{root!r}, {tests!r}]
import experiments.run.records as records
real = os.replace
def replace(src, dst):
    if os.path.basename(str(src)).startswith(".tmp-"):
        os.kill(os.getpid(), signal.SIGKILL)  # killed just before the new record is renamed in
    real(src, dst)
records.os.replace = replace
from test_faults import _record
records.write_record({runs!r}, "abc", *_record(5))
"""


def test_rerun_killed_between_its_renames_loses_nothing(tmp_path):
    runs = tmp_path / "runs"
    write_record(runs, "abc", *_record(3))
    script = _KILL_AT_SWAP.format(root=str(Path(__file__).resolve().parents[3]), tests=str(Path(__file__).parent),
                                  runs=str(runs))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    names = sorted(p.name for p in runs.iterdir() if not p.name.startswith(".lock-"))
    # the old record was moved aside, the new one never renamed in: both folders still exist
    assert [n[:5] for n in names] == [".old-", ".tmp-"]
    recover(runs)
    assert record_exists(runs, "abc") and load_record(runs / "abc")[0]["n_samples"] == 3
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".lock-")) == ["abc"]


def test_leftovers_are_cleaned_only_when_no_live_writer_holds_the_cell(tmp_path):
    runs = tmp_path / "runs"
    write_record(runs, "abc", *_record(3))
    (runs / ".tmp-abc-dead0001").mkdir()
    (runs / ".tmp-live-00000001").mkdir()
    with cell_lock(runs, "live"):  # a writer of cell 'live' at work
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=recover, args=(str(runs),))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        assert (runs / ".tmp-live-00000001").exists()
    assert not (runs / ".tmp-abc-dead0001").exists()
    recover(runs)
    assert not (runs / ".tmp-live-00000001").exists() and record_exists(runs, "abc")


def test_aside_record_is_restored_only_when_the_cell_has_no_valid_one(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_record(runs, "abc", *_record(3))
    os.replace(runs / "abc", runs / ".old-abc-00000001")
    write_record(runs, "xyz", *_record(2))
    os.replace(runs / "xyz", runs / ".old-xyz-00000002")
    write_record(runs, "xyz", *_record(4))  # the writer of xyz finds its cell's aside record first
    assert load_record(runs / "xyz")[0]["n_samples"] == 4  # the newer record wins
    assert [f.name for _, _, f in iter_records(runs)] == ["abc", "xyz"]  # readers restore abc first
    assert "restored record" in capsys.readouterr().out
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".lock-")) == ["abc", "xyz"]


def _hammer(runs: str, n: int, writes: int) -> None:
    for _ in range(writes):
        write_record(runs, "abc", *_record(n))


def test_concurrent_writers_of_one_cell_take_turns(tmp_path):
    runs = tmp_path / "runs"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(runs), n, 15)) for n in (3, 4, 5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert load_record(runs / "abc")[0]["n_samples"] in (3, 4, 5)
    assert sorted(p.name for p in runs.iterdir()) == [".lock-abc", "abc"]


@pytest.mark.slow
def test_two_forced_runs_of_one_cell_both_succeed(tmp_path):
    args = [*TINY, "force=true", f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"]
    assert cli_process(*args, cwd=tmp_path).returncode == 0  # train the model once
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1"}
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[3] / "run.py"), *args],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1] for r in results]
    assert all("Traceback" not in err for _, err in results)
    records = [f for _, _, f in iter_records(tmp_path / "runs")]
    assert len(records) == 1
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith((".tmp-", ".old-"))] == []


# ---------------------------------------------------------------------------------------------
# unwritable output folders: refused before any data is loaded or model trained

def _refuse_loading(monkeypatch) -> None:
    import experiments.run.pipeline as pipeline

    def never(cfg):
        raise AssertionError("data was loaded before the output folders were checked")

    monkeypatch.setattr(pipeline, "load_dataset", never)


@pytest.mark.parametrize("setting", ["results_dir", "cache_dir"])
def test_output_folder_that_is_a_file_is_refused_up_front(tmp_path, monkeypatch, capsys, setting):
    _refuse_loading(monkeypatch)
    (tmp_path / "file").write_text("x")
    dirs = {"results_dir": tmp_path / "runs", "cache_dir": tmp_path / "cache", setting: tmp_path / "file"}
    with pytest.raises(SystemExit) as exit_:
        run_cli(compose(TINY + [f"{k}={v}" for k, v in dirs.items()]))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (f"error: {setting}={str(tmp_path / 'file')!r} is a file, not a folder; "
                                       f"choose a folder path\n")


@pytest.mark.parametrize("setting", ["results_dir", "cache_dir"])
def test_output_folder_that_cannot_be_written_is_refused_up_front(tmp_path, monkeypatch, capsys, setting):
    _refuse_loading(monkeypatch)
    # /sys refuses new files even to root; a read-only folder (below) only to other users
    dirs = {"results_dir": tmp_path / "runs", "cache_dir": tmp_path / "cache", setting: "/sys/kernel/bench"}
    with pytest.raises(SystemExit):
        run_cli(compose(TINY + [f"{k}={v}" for k, v in dirs.items()]))
    assert capsys.readouterr().err.startswith(f"error: {setting}='/sys/kernel/bench' is not writable ('/sys/kernel', "
                                              f"where it would be created, is not writable)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"^results_dir=.* is not writable"):
            from experiments.run.config import check_writable
            check_writable("results_dir", locked / "runs")
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------------------------------------
# the command line: overrides Hydra rejects, values refused where they are built

OVERRIDES = [
    (["n_samples=[4"], "error: malformed override 'n_samples=[4': no viable alternative at input '[4'"),
    (["method.n_step=10"], "error: unknown setting 'method.n_step'; valid keys under method: output"),
    (["method=ig", "method.n_step=10"], "error: unknown setting 'method.n_step'; valid keys under method: n_steps,"),
    (["method=ig,saliency"], "error: Ambiguous value for argument 'method=ig,saliency'; add -m to sweep"),
    (["-m", "method=ig,saliency", "method.n_steps=4"],
     "error: unknown setting 'method.n_steps'; valid keys under method: output (prefix + to add a new key: "
     "+method.n_steps=...) (in the sweep job method=saliency)"),
    (["dataset.n_test=0"], "error: n_test=0 is invalid for dataset breast_cancer; choose an integer in 1..143"),
    (["model.net.hidden=[8,-1]"], "error: MLP hidden=[8, -1] is invalid; choose a list of positive layer widths"),
    (["model.train.epochs=abc"], "error: model.train.epochs='abc' is invalid; choose a non-negative integer"),
    (["model.train.threads=0"], "error: model.train.threads=0 is invalid; choose a positive integer"),
]


@pytest.mark.parametrize("args,message", OVERRIDES, ids=[" ".join(a) for a, _ in OVERRIDES])
def test_rejected_overrides_are_one_line_exit_2(args, message, tmp_path):
    flags = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    code, out, err = cli(flags + TINY + rest + [f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'c'}"])
    assert code == 2
    assert one_error_line(err).startswith(message)
    assert not (tmp_path / "runs").exists()


def test_resnet_depth_is_checked_where_the_model_is_built():
    from experiments.zoo.models import ResNet

    with pytest.raises(ConfigError, match=r"^ResNet depth=7 is invalid; choose 6n\+2 with n >= 1: 8, 14, 20, 26"):
        ResNet(1, 10, depth=7)
    assert sum(p.numel() for p in ResNet(1, 10, depth=8).parameters()) > 0


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["model=mlp", "n_samples=[4"], "error: malformed override 'n_samples=[4'"),
    (["model=mlp", "method.n_step=10"], "error: unknown setting 'method.n_step'"),
    (["model=mlp", "dataset.n_test=0"], "error: n_test=0 is invalid for dataset breast_cancer"),
    (["model=resnet", "model.net.depth=7", "dataset=digits"], "error: ResNet depth=7 is invalid; choose 6n+2"),
], ids=["syntax", "unknown-key", "n_test", "depth"])
def test_rejected_overrides_through_run_py(args, message, tmp_path):
    proc = cli_process(*args, f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr).startswith(message)
    assert "Traceback" not in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["results_dir", "cache_dir"])
def test_unwritable_folder_through_run_py_and_multirun(tmp_path, setting):
    (tmp_path / "file").write_text("x")
    dirs = {"results_dir": tmp_path / "runs", "cache_dir": tmp_path / "cache", setting: tmp_path / "file"}
    for multirun in ([], ["-m"]):
        proc = cli_process(*multirun, *TINY, *[f"{k}={v}" for k, v in dirs.items()], cwd=tmp_path)
        assert proc.returncode == 2
        assert one_error_line(proc.stderr) == f"error: {setting}={str(tmp_path / 'file')!r} is a file, not a folder; " \
                                             f"choose a folder path"
