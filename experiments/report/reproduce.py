"""Regenerate one paper table end to end: the sweep over every method, then the table writer.

``python -m experiments.reproduce paper_image [overrides ...] [--readme README.md]`` is the same as
``python run.py -m +experiment=paper_image [overrides ...]`` followed by
``python -m experiments.paper_tables --table paper_image``; it prints the wall time of the sweep.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Optional

from baselines.vocabulary import check_choice
from experiments.errors import ConfigError
from experiments.run.config import ROOT, group_options, load_config


def warm_up_model(table: str, overrides: list[str]) -> None:
    """Train (or load) the table's model once before the sweep, so that parallel cells read it
    from the cache instead of each training it; a bad override is refused here, as the sweep
    would refuse it. Overrides that sweep (``a,b``) are left to the sweep itself."""
    if any("," in o for o in overrides):
        return
    from experiments.run.pipeline import prepare

    start = time.perf_counter()
    prepare(load_config([f"+experiment={table}", *overrides]))
    print(f"model for {table}: ready in {time.perf_counter() - start:.0f} s")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help=f"one of: {', '.join(group_options('experiment'))}")
    parser.add_argument("overrides", nargs="*", help="run-config overrides, e.g. n_samples=16 dataset=cifar10")
    parser.add_argument("--out", default="results", help="where tables/ and figures/ go")
    parser.add_argument("--readme", default=None, help="also refresh this README's table block")
    parser.add_argument("--allow-smaller", action="store_true",
                        help="let --readme replace a table by one of fewer samples (refused otherwise)")
    args = parser.parse_args(argv)
    try:
        check_choice("table", args.table, group_options("experiment"))
        warm_up_model(args.table, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results_dir = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("results_dir=")), "results/runs")
    start = time.perf_counter()
    sweep = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", f"+experiment={args.table}", *args.overrides])
    seconds = time.perf_counter() - start
    if sweep.returncode != 0:
        return sweep.returncode
    print(f"sweep {args.table}: {seconds:.0f} s wall")
    from experiments.report.paper_tables import main as write_tables

    table_args = ["--table", args.table, "--results-dir", results_dir, "--out", args.out]
    return write_tables(table_args + (["--readme", args.readme] if args.readme else [])
                        + (["--allow-smaller"] if args.allow_smaller else []))


if __name__ == "__main__":
    sys.exit(main())
