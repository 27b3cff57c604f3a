"""Speed-up of a paper sweep run by Hydra's joblib launcher over the same sweep run sequentially,
both measured in one run of this script on this machine.

    python benchmarks/sweep_speedup.py                       # paper_tabular, 32 samples per cell
    python benchmarks/sweep_speedup.py --n-samples 143       # the table's full size
    python benchmarks/sweep_speedup.py --jobs 4 --threads 2  # a bigger machine: jobs x threads = cores

The table's model is trained once into a temporary cache first; then the sweep runs twice into
two temporary results folders: sequentially (the joblib launcher with ``n_jobs=1``, which runs
the cells one after another in the launching process, with ``--sequential-threads`` torch threads,
by default every core) and in parallel (``--jobs`` worker processes with ``--threads`` torch
threads each). Both write the
same records (checked: the same cells, identical scores.csv); the script prints each sweep's
wall time, the sum of its cells' times from the sweep index, and the ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.run.sweep_index import read_index  # noqa: E402


def sweep(experiment: str, results: Path, cache: Path, extra: list[str]) -> tuple[float, Path]:
    """Run one sweep; its wall time and the path of its index (from the sweep's last line)."""
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1"}
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", f"+experiment={experiment}", f"results_dir={results}",
           f"cache_dir={cache}", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("sweep index: ")][-1]
    return seconds, Path(line.split()[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="paper_tabular")
    parser.add_argument("--n-samples", type=int, default=32, help="samples per cell (the table uses 143)")
    parser.add_argument("--jobs", type=int, default=2, help="joblib worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per joblib worker")
    parser.add_argument("--sequential-threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads of the sequential sweep (default: every core)")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of sweeps, alternating which goes first")
    parser.add_argument("overrides", nargs="*", help="extra run-config overrides for both sweeps")
    args = parser.parse_args()
    load = os.getloadavg()[0]

    os.environ["BACKTRACE_BENCH_NO_PROGRESS"] = "1"
    from experiments.run.config import load_config
    from experiments.run.pipeline import prepare

    with tempfile.TemporaryDirectory(prefix="sweep-speedup-") as tmp:
        tmpdir = Path(tmp)
        cache = tmpdir / "cache"
        common = [f"n_samples={args.n_samples}", *args.overrides]
        start = time.perf_counter()
        prepare(load_config([f"+experiment={args.experiment}", f"cache_dir={cache}", *common]))
        print(f"model of {args.experiment}: trained in {time.perf_counter() - start:.1f} s (not timed below)")

        seq_runs, par_runs = [], []
        for rep in range(args.repeats):
            # alternate which goes first, so a change in the machine's load hits both alike
            order = ("sequential", "joblib") if rep % 2 == 0 else ("joblib", "sequential")
            for kind in order:
                if kind == "sequential":
                    seq_runs.append(sweep(args.experiment, tmpdir / f"sequential{rep}", cache,
                                          common + ["hydra/launcher=joblib", "hydra.launcher.n_jobs=1",
                                                    f"threads={args.sequential_threads}"]))
                else:
                    par_runs.append(sweep(args.experiment, tmpdir / f"joblib{rep}", cache,
                                          common + ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}",
                                                    f"threads={args.threads}"]))
        seq, par = read_index(seq_runs[0][1]), read_index(par_runs[0][1])
        assert list(seq["status"]) == list(par["status"]) == ["ok"] * len(seq), (seq, par)
        names = [sorted(Path(r).name for r in df["record"]) for df in (seq, par)]
        assert names[0] == names[1], "the two sweeps wrote different cells"
        same = sum((Path(a) / "scores.csv").read_bytes() == (Path(b) / "scores.csv").read_bytes()
                   for a, b in zip(sorted(seq["record"], key=lambda r: Path(r).name),
                                   sorted(par["record"], key=lambda r: Path(r).name)))
        rows = []
        for rep, ((seq_s, seq_i), (par_s, par_i)) in enumerate(zip(seq_runs, par_runs)):
            rows.append((rep, seq_s, read_index(seq_i)["seconds"].sum(), par_s, read_index(par_i)["seconds"].sum()))

    print(f"{args.experiment}: {len(seq)} cells, n_samples={args.n_samples}, {os.cpu_count()} cores, "
          f"1-min load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f}")
    print(f"sequential: n_jobs=1, threads={args.sequential_threads}; joblib: n_jobs={args.jobs}, threads={args.threads}")
    print(f"{'repeat':>6} {'sequential s':>13} {'(sum of cells)':>15} {'joblib s':>9} {'(sum of cells)':>15} {'ratio':>6}")
    for rep, seq_s, seq_sum, par_s, par_sum in rows:
        print(f"{rep:>6} {seq_s:>13.1f} {seq_sum:>15.1f} {par_s:>9.1f} {par_sum:>15.1f} {seq_s / par_s:>6.2f}")
    print(f"identical scores.csv (first repeat): {same} of {len(seq)} cells")
    ratio = statistics.median(r[1] / r[3] for r in rows)
    print(f"speed-up of joblib over sequential (median over {len(rows)} repeats): {ratio:.2f}x "
          f"(target >= 1.6x on 2 cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
