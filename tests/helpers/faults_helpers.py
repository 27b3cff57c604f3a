"""Helpers shared by the fault tests: run.py in process or as a subprocess, and a loan CSV writer."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from experiments.run.config import ROOT

# A cell that trains and explains in about a second: the fast MLP on breast cancer.
TINY = ["model=mlp", "model.train.epochs=2", "method=saliency", "metrics=quick", "n_samples=4", "batch_size=4"]
LOAN_COLUMNS = ["loan_amnt", "term", "int_rate", "installment", "emp_length", "annual_inc", "dti", "open_acc",
                "pub_rec", "revol_bal", "revol_util", "total_acc", "grade", "home_ownership",
                "verification_status", "purpose", "loan_status"]


def cli(args: Sequence[str]) -> tuple[int, str, str]:
    """``python run.py ARGS`` in this process (imports paid once): (exit code, stdout, stderr)."""
    import run as run_module

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    # Hydra's "disabled" job logging reconfigures logging, which closes every existing handler;
    # absl's (TensorFlow, imported by quantus) then closes the stream it took at import, which in
    # a test session is pytest's capture file, not the real stderr. Leaving logging alone here
    # changes nothing in what run.py prints.
    sys.argv = [str(ROOT / "run.py"), *args, "hydra/job_logging=none", "hydra/hydra_logging=none"]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run_module.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def cli_process(*args: str, cwd: Path, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` as its own process, as a user runs it."""
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout, **popen)


def one_error_line(stderr: str) -> str:
    """The single ``error:`` line of a refused run (fails if there is anything else on stderr)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def loan_rows(n: int = 40, seed: int = 0) -> list[list[str]]:
    """Rows of a small, valid Lending Club CSV (both outcomes, messy text values), as strings."""
    rng = np.random.default_rng(seed)
    statuses = ["Fully Paid", "Charged Off", "Fully Paid", "Current", "Default", "Fully Paid"]
    rows = []
    for i in range(n):
        rows.append([
            str(int(rng.integers(1, 40)) * 1000), rng.choice([" 36 months", " 60 months"]),
            f"{rng.uniform(5, 25):.2f}%", f"{rng.uniform(50, 1200):.2f}", rng.choice(["10+ years", "< 1 year", "n/a"]),
            f"{rng.uniform(2e4, 2e5):.0f}", f"{rng.uniform(0, 40):.2f}", str(int(rng.integers(1, 30))),
            str(int(rng.integers(0, 3))), str(int(rng.integers(0, 50000))), f"{rng.uniform(0, 100):.1f}%",
            str(int(rng.integers(2, 60))), rng.choice(list("ABCDEFG")), rng.choice(["RENT", "OWN", "MORTGAGE"]),
            rng.choice(["Verified", "Not Verified"]), rng.choice(["car", "credit_card", "debt_consolidation"]),
            statuses[i % len(statuses)],
        ])
    return rows


def write_csv(path: Path, rows: list[list[str]], header: Sequence[str] = tuple(LOAN_COLUMNS)) -> Path:
    """Rows joined with bare commas, as a careless export would write them (no quoting)."""
    path.write_text(",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return path
