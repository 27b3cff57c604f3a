"""Progress bars for a run's long stages (explaining, metrics), drawn only for a person watching.

A bar appears only when stderr is a terminal, the environment is not CI (``CI`` set) and the run
is not one of several parallel workers sharing that terminal; ``BACKTRACE_BENCH_NO_PROGRESS=1``
turns bars off. Otherwise nothing is printed, so logs and captured output are unchanged.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

from experiments.run.launchers import in_parallel_worker


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def progress_enabled() -> bool:
    if os.environ.get("BACKTRACE_BENCH_NO_PROGRESS") == "1" or in_ci():
        return False
    try:
        if not sys.stderr.isatty():
            return False
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False
    return not in_parallel_worker()


def bar(total: int, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr that disappears when done; a silent no-op bar when progress is off."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, disable=not progress_enabled(),
                dynamic_ncols=True)
