#!/usr/bin/env python
"""Run one benchmark cell (or a multirun sweep with -m): ``python run.py model=resnet method=backtrace``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# quantus imports TensorFlow whenever it is installed; its start-up log lines on stderr would
# bury the one-line errors below. The harness itself never runs TensorFlow models.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Launchers that start fresh interpreters for the cells (submitit) import the task from this
# checkout, wherever run.py was started from.
_ROOT = str(Path(__file__).resolve().parent)
if _ROOT not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from experiments.errors import ConfigError  # noqa: E402
from experiments.run.config import check_command_line, check_overrides  # noqa: E402


# Whether main() composed and checked every job of this command line before Hydra started, so
# that the runner does not check them again. It leaves Hydra's own options (--cfg, --config-name,
# ...) to Hydra; then, as in a launcher's worker process that does not see this value, each job
# is checked as it runs: a job is never run unchecked.
_CHECKED = False


# An absolute config path, so that run.main() also works when run.py is imported (tests).
@hydra.main(config_path=str(Path(__file__).resolve().parent / "configs"), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from experiments.run.runner import run_cli

    run_cli(cfg, checked=_CHECKED)


def main() -> None:
    """Check the command line first (names, syntax, composition, output folders): a bad one is
    one ``error:`` line and exit code 2, before Hydra starts or anything is loaded."""
    global _CHECKED
    _CHECKED = False
    try:
        check_overrides(sys.argv[1:])
        _CHECKED = bool(check_command_line(sys.argv[1:]))
    except ConfigError as exc:
        if os.environ.get("BACKTRACE_BENCH_DEBUG") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    _main()


if __name__ == "__main__":
    main()
