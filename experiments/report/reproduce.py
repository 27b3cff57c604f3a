"""Regenerate one paper table end to end: the sweep over every method, then the table writer; or
check a published table against its evidence.

``python -m experiments.reproduce paper_image [overrides ...]`` is the same as
``python run.py -m +experiment=paper_image [overrides ...]`` followed by
``python -m experiments.paper_tables --table paper_image --results-dir <results_dir>``; it prints
the wall time of the sweep. The tables go next to the records (``<results_dir>/tables/``, or
``--out``); ``--publish`` publishes them into the published ``results/`` (under the current folder,
or $BACKTRACE_BENCH_HOME) with their evidence and refreshes the table blocks of ``RESULTS.md``
beside it (``--results-md PATH``: another page), refused where a table would shrink.

``python -m experiments.reproduce paper_tabular --check [n_samples=K] [results_dir=DIR]
[method=a,b]`` reruns the published table's cells and compares them with its evidence
(:mod:`experiments.report.check`).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from baselines.vocabulary import check_choice
from experiments.errors import ConfigError
from experiments.run.config import group_options, home, hydra_context, load_config


def swept_models(table: str, overrides: list[str]) -> list[Optional[str]]:
    """The models the experiment itself sweeps (its ``hydra.sweeper.params.model``, e.g. the
    generation table's two decoders), or ``[None]``: the one model its config chooses."""
    from hydra import compose as hydra_compose
    from omegaconf import OmegaConf

    with hydra_context():
        cfg = hydra_compose("config", overrides=[f"+experiment={table}", *overrides], return_hydra_config=True)
    swept = OmegaConf.select(cfg, "hydra.sweeper.params.model", default=None)
    return [m.strip() for m in str(swept).split(",")] if swept else [None]


def warm_up_model(table: str, overrides: list[str]) -> None:
    """Train (or load) the table's models once before the sweep, so that parallel cells read them
    from the cache instead of each training them; a bad override is refused here, as the sweep
    would refuse it. Overrides that sweep (``a,b``) are left to the sweep itself."""
    if any("," in o for o in overrides):
        return
    from experiments.run.pipeline import prepare

    start = time.perf_counter()
    given = any(o.split("=", 1)[0].lstrip("+") == "model" for o in overrides)
    for model in [None] if given else swept_models(table, overrides):
        prepare(load_config([f"+experiment={table}", *overrides, *([f"model={model}"] if model else [])]))
    print(f"models for {table}: ready in {time.perf_counter() - start:.0f} s")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help=f"one of: {', '.join(group_options('experiment'))} (--check: a published table)")
    parser.add_argument("overrides", nargs="*", help="run-config overrides, e.g. n_samples=16 dataset=cifar10 "
                                                     "(--check: n_samples=K results_dir=DIR method=a,b)")
    parser.add_argument("--out", default=None,
                        help="where tables/ and figures/ go (default: the sweep's results_dir; with --publish: "
                             "results/)")
    parser.add_argument("--publish", action="store_true",
                        help="publish the tables with their evidence into results/ (or --out)")
    parser.add_argument("--results-md", default=None,
                        help="with --publish: the results page whose table block is refreshed (default: RESULTS.md "
                             "beside the published results/, where it exists and --out is not given)")
    parser.add_argument("--allow-smaller", action="store_true",
                        help="let --publish replace a table by one of fewer samples (refused otherwise)")
    parser.add_argument("--check", action="store_true",
                        help="rerun the published table's cells into a scratch folder and compare with its evidence")
    parser.add_argument("--evidence", default=None, help="with --check: the evidence folder (default: results/evidence)")
    args = parser.parse_intermixed_args(argv)     # options may come between the table and its overrides
    if args.check:
        from experiments.report.check import check

        return check(args.table, args.overrides, args.evidence)
    try:
        check_choice("table", args.table, group_options("experiment"))
        if args.results_md and not args.publish:
            raise ConfigError("--results-md refreshes the published tables of RESULTS.md: add --publish")
        warm_up_model(args.table, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results_dir = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("results_dir=")),
                       str(home() / "results" / "runs"))
    start = time.perf_counter()
    # the sweep as `backtrace-bench sweep` runs it, with this copy of the package importable
    # wherever it is (a checkout or an installed wheel)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    sweep = subprocess.run([sys.executable, "-m", "experiments.cli", "sweep", f"+experiment={args.table}",
                            *args.overrides], env=env)
    seconds = time.perf_counter() - start
    if sweep.returncode != 0:
        return sweep.returncode
    print(f"sweep {args.table}: {seconds:.0f} s wall")
    from experiments.report.paper_tables import main as write_tables

    table_args = ["--table", args.table, "--results-dir", results_dir] + (["--out", args.out] if args.out else [])
    return write_tables(table_args + (["--publish"] if args.publish else [])
                        + (["--results-md", args.results_md] if args.results_md else [])
                        + (["--allow-smaller"] if args.allow_smaller else []))


if __name__ == "__main__":
    sys.exit(main())
