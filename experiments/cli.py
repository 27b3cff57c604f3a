"""The ``backtrace-bench`` command of an installed copy: one command, the harness's entry points
as subcommands.

- ``backtrace-bench run OVERRIDES`` is ``python run.py OVERRIDES`` (one cell; ``--config-dir``,
  ``-m`` and every override as there), ``backtrace-bench sweep OVERRIDES`` is ``run.py -m``;
- ``tables``, ``report``, ``reproduce`` and ``records`` are ``python -m`` of
  ``experiments.report.paper_tables``, ``experiments.report``, ``experiments.report.reproduce``
  and ``experiments.records``, with their own options (``backtrace-bench tables --help``).

Run records and the model cache go under the current folder (or ``$BACKTRACE_BENCH_HOME``), as
for ``run.py``; the first run that creates them says where in one line.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Optional, Sequence

import hydra
from omegaconf import DictConfig

from experiments.errors import ConfigError
from experiments.run.config import (announce_output_dirs, check_command_line, check_overrides,
                                    primary_config_path)

PROG = "backtrace-bench"
# Subcommands that are a module's own command line (``python -m MODULE``), and what they do.
MODULES = {
    "tables": ("experiments.report.paper_tables", "the results tables of the run records"),
    "report": ("experiments.report", "the static report page of every table"),
    "reproduce": ("experiments.report.reproduce", "one paper table end to end: its sweep, then the table"),
    # The records browser: ``python -m experiments.records list|show``.
    "records": ("experiments.records", "browse the stored run records (list, show)"),
}
RUNS = {"run": "one benchmark cell: the overrides of run.py (model=mlp method=ig ...)",
        "sweep": "a sweep of cells: run.py -m (model=mlp,cnn method=saliency,ig ...)"}
SUBCOMMANDS = (*RUNS, *MODULES)

# Whether the command line was composed and checked (every job) before Hydra started, so that
# the runner does not check again. Hydra's own options (--cfg, --config-name, ...) are left to
# Hydra; then each job is checked as it runs (as in a launcher's worker process, which does not
# see this value): a job is never run unchecked.
_checked = False


def run_job(cfg: DictConfig) -> None:
    """Hydra's task: one cell, through the runner's command-line entry."""
    from experiments.run.runner import run_cli

    run_cli(cfg, checked=_checked)


def check_then_run(app: Callable[[], None], argv: Sequence[str]) -> None:
    """Check the command line first (names, syntax, composition, output folders): a bad one is
    one ``error:`` line and exit code 2, before Hydra starts or anything is loaded. Then run
    ``app`` (a ``@hydra.main`` function, which reads ``sys.argv``)."""
    global _checked
    _checked = False
    try:
        check_overrides(argv)
        configs = check_command_line(argv)
        _checked = bool(configs)
        announce_output_dirs(configs)
    except ConfigError as exc:
        if os.environ.get("BACKTRACE_BENCH_DEBUG") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    app()


@hydra.main(config_path=primary_config_path(), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    run_job(cfg)


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"usage: {PROG} COMMAND [ARGS ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in RUNS.items()]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in MODULES.items()]
    lines += ["", f"`{PROG} COMMAND --help` shows a command's options; results and the model cache go under the "
              "current folder, or $BACKTRACE_BENCH_HOME."]
    return "\n".join(lines)


def _module_exists(name: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _run_module(command: str, args: list[str]) -> int:
    """``python -m MODULE ARGS`` in this process, named ``backtrace-bench COMMAND`` in its help."""
    import runpy

    module = MODULES[command][0]
    if not _module_exists(module):
        here = [c for c in SUBCOMMANDS if c in RUNS or _module_exists(MODULES[c][0])]
        print(f"error: {command!r} is not available in this version ({module} is not installed); "
              f"valid commands here: {', '.join(here)}", file=sys.stderr)
        return 2
    argv = sys.argv
    sys.argv = [f"{PROG} {command}", *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console script: ``backtrace-bench COMMAND ARGS``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command in RUNS:
        if command == "sweep" and not {"-m", "--multirun"} & set(rest):
            rest = ["-m", *rest]
        argv_before = sys.argv
        sys.argv = [f"{PROG} {command}", *rest]    # what Hydra's own parser reads
        try:
            check_then_run(_app, rest)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = argv_before
        return 0
    if command in MODULES:
        return _run_module(command, rest)
    print(f"error: unknown command {command!r}; valid choices: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
