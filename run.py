#!/usr/bin/env python
"""Run one benchmark cell (or a multirun sweep with -m): ``python run.py model=resnet method=backtrace``.

The checkout's entry point; an installed copy has the same as ``backtrace-bench run`` / ``sweep``
(:mod:`experiments.cli`)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Launchers that start fresh interpreters for the cells (submitit) import the task from this
# checkout, wherever run.py was started from.
_ROOT = str(Path(__file__).resolve().parent)
if _ROOT not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from experiments.cli import check_then_run, run_job  # noqa: E402


# An absolute config path, so that run.main() also works when run.py is imported (tests).
@hydra.main(config_path=str(Path(__file__).resolve().parent / "configs"), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    run_job(cfg)


def main() -> None:
    """Check the command line first (names, syntax, composition, output folders): a bad one is
    one ``error:`` line and exit code 2, before Hydra starts or anything is loaded."""
    check_then_run(_main, sys.argv[1:])


if __name__ == "__main__":
    main()
