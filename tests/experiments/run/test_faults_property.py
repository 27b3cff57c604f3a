"""Generated bad input and a real kill: the contract holds for cases nobody wrote down.

Random override strings and random small loan CSVs are fed to ``run.py`` (in process, the fast
MLP on tiny data): every outcome is either a clean run (exit 0, a valid record with finite
attributions and accuracy) or a refusal (exit 2, one ``error:`` line, no record); never a
traceback, never a NaN record with exit 0. A sweep killed with SIGKILL is rerun to completion
with every record valid.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.run.config import ROOT
from experiments.run.records import iter_records, record_problem
from tests.helpers.faults_helpers import LOAN_COLUMNS, TINY, cli, loan_rows, write_csv

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CASES: dict[str, int] = {"overrides": 0, "csv": 0}  # generated cases run, reported at the end
OUTCOMES: dict[str, int] = {}  # (kind, exit code) -> count, reported at the end

SETTINGS = {
    "n_samples": st.one_of(st.integers(-2, 200).map(str), st.sampled_from(["abc", "[4", "null", "3.5", "''", "1e3"])),
    "batch_size": st.one_of(st.integers(-1, 9).map(str), st.sampled_from(["x", "[2]"])),
    "seed": st.integers(-1, 3).map(str),
    "target": st.sampled_from(["label", "prediction", "foo"]),
    "sample_selection": st.sampled_from(["first", "random", "last"]),
    "channel_reduction": st.sampled_from(["sum", "none", "median"]),
    "method": st.sampled_from(["saliency", "gradxinput", "random", "backtrace", "gradcam", "nope", "ig,saliency"]),
    "method.n_steps": st.integers(-1, 6).map(str),
    "dataset": st.sampled_from(["breast_cancer", "synthetic_tabular", "digits", "nope"]),
    "dataset.n_test": st.one_of(st.integers(-1, 160).map(str), st.sampled_from(["null", "abc", "[3"])),
    "dataset.n_train": st.one_of(st.integers(0, 60).map(str), st.just("null")),
    "dataset.test_fraction": st.sampled_from(["0.25", "0", "1.5", "abc"]),
    "model.train.epochs": st.integers(-1, 3).map(str),
    "model.train.lr": st.sampled_from(["0.003", "0", "-1", "1e30", "abc", "nan", "inf"]),
    "model.train.batch_size": st.sampled_from(["16", "0", "-3"]),
    "model.net.hidden": st.sampled_from(["[8]", "[0]", "[8,-1]", "abc", "[4,4]", "[]", "[1.5]"]),
    "model.net.activation": st.sampled_from(["relu", "tanh", "swish"]),
    "model.net.depth": st.just("7"),
    "force": st.sampled_from(["true", "false", "maybe"]),
}
JUNK = st.text(alphabet="ab_=.[]{},:+~$'\" 0123456789", min_size=1, max_size=12)


@st.composite
def overrides(draw) -> list[str]:
    keys = draw(st.lists(st.sampled_from(sorted(SETTINGS)), max_size=4, unique=True))
    chosen = [f"{k}={draw(SETTINGS[k])}" for k in keys]
    if draw(st.integers(0, 5)) == 0:
        chosen.append(draw(JUNK))
    return chosen


def check_outcome(code: int, out: str, err: str, runs: Path, kind: str) -> None:
    """A clean run or a one-line refusal; a written record always valid and finite."""
    OUTCOMES[f"{kind} exit {code}"] = OUTCOMES.get(f"{kind} exit {code}", 0) + 1
    if os.environ.get("BACKTRACE_BENCH_SHOW_CASES") == "1":
        shown = err.strip() or (out.strip().splitlines() or [""])[-1]
        print(f"[{kind}] exit {code}: {shown[:160]}")
    assert "Traceback" not in out + err, err
    assert code in (0, 2), f"exit {code}: {err}"
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    folders = [p for p in runs.iterdir() if not p.name.startswith(".")] if runs.exists() else []
    for folder in folders:
        assert record_problem(folder) is None, record_problem(folder)
    for record, scores, folder in iter_records(runs):
        with np.load(folder / "arrays.npz") as arrays:
            assert np.isfinite(arrays["attributions"]).all(), folder
        accuracy = record["model"]["test_accuracy"]
        assert accuracy is None or np.isfinite(accuracy)
        assert len(scores) == record["n_samples"] <= record["n_samples_requested"]
    if code == 2:
        assert folders == []
    else:
        assert folders, out


@pytest.fixture(scope="module")
def cache_dir():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@PROPERTY
@given(args=overrides())
def test_random_overrides_run_cleanly_or_are_one_line(args, cache_dir):
    CASES["overrides"] += 1
    with tempfile.TemporaryDirectory() as d:
        runs = Path(d) / "runs"
        multirun = ["-m"] if any("," in a and a.startswith("method=") for a in args) and CASES["overrides"] % 2 else []
        code, out, err = cli(multirun + TINY + args + [f"results_dir={runs}", f"cache_dir={cache_dir}"])
        check_outcome(code, out, err, runs, "overrides")


N_NUMERIC = LOAN_COLUMNS.index("grade")  # the numeric columns come first
CORRUPTIONS = ("none", "inf", "huge", "comma", "short_row", "blank", "text", "one_class", "header_only",
               "missing_column")


@st.composite
def loan_files(draw) -> tuple[list[list[str]], list[str], str]:
    n = draw(st.integers(8, 40))
    rows = loan_rows(n, seed=draw(st.integers(0, 1000)))
    header = list(LOAN_COLUMNS)
    kind = draw(st.sampled_from(CORRUPTIONS))
    row = draw(st.integers(0, n - 1))
    col = draw(st.integers(0, len(LOAN_COLUMNS) - 2))  # any column but loan_status
    numeric = draw(st.integers(0, N_NUMERIC - 1))       # 'inf' in a categorical column is just a level
    if kind == "inf":
        rows[row][numeric] = draw(st.sampled_from(["inf", "-inf", "Infinity"]))
    elif kind == "huge":
        rows[row][numeric] = "1e400"
    elif kind == "comma":
        rows[row][col] += ",x"
    elif kind == "short_row":
        del rows[row][col]
    elif kind == "blank":
        rows[row][col] = ""
    elif kind == "text":
        rows[row][col] = draw(st.text(alphabet="abcxyz ?!-", min_size=1, max_size=6))
    elif kind == "one_class":
        for r in rows:
            r[-1] = "Fully Paid"
    elif kind == "header_only":
        rows = []
    elif kind == "missing_column":
        del header[col]
        for r in rows:
            del r[col]
    return rows, header, kind


@PROPERTY
@given(data=loan_files())
def test_random_loan_csvs_run_cleanly_or_are_one_line(data, cache_dir):
    CASES["csv"] += 1
    rows, header, kind = data
    with tempfile.TemporaryDirectory() as d:
        path = write_csv(Path(d) / "loans.csv", rows, header)
        runs = Path(d) / "runs"
        code, out, err = cli(TINY + ["dataset=lending_club", f"dataset.path={path}", "dataset.n_train=null",
                                     "dataset.n_test=null", f"results_dir={runs}", f"cache_dir={Path(d) / 'cache'}"])
        check_outcome(code, out, err, runs, "csv")
        if kind in ("inf", "huge", "comma", "short_row", "one_class", "header_only"):
            assert code == 2, (kind, out)


def test_generated_case_counts():
    """Runs after the two property tests (file order): the number of generated cases they ran."""
    print(f"\nproperty tests ran {CASES['overrides']} override cases and {CASES['csv']} CSV cases; "
          f"outcomes: {dict(sorted(OUTCOMES.items()))}")
    if CASES["overrides"] or CASES["csv"]:
        assert CASES["overrides"] >= 30 and CASES["csv"] >= 30


def test_sweep_killed_with_sigkill_completes_on_rerun(tmp_path):
    """A real kill -9 of a running sweep (the whole process group), then the same command again."""
    runs = tmp_path / "runs"
    methods = ["saliency", "gradxinput", "random", "backtrace", "ig"]
    args = [sys.executable, str(ROOT / "run.py"), "-m", *TINY, f"method={','.join(methods)}",
            f"results_dir={runs}", f"cache_dir={tmp_path / 'cache'}"]
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p.is_dir() and not p.name.startswith(".") for p in runs.glob("*")):
                break  # the first cell is written: the sweep is under way
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    done = [f for _, _, f in iter_records(runs)]
    assert 1 <= len(done) < len(methods)
    rerun = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count("record exists, skipping") >= len(done)
    records = list(iter_records(runs))
    assert sorted(r["method"]["name"] for r, _, _ in records) == sorted(methods)
    assert all(record_problem(f) is None for _, _, f in records)
    assert [p.name for p in runs.iterdir() if p.name.startswith((".tmp-", ".old-"))] == []
