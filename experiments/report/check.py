"""``python -m experiments.reproduce <table> --check [n_samples=K] [results_dir=DIR] [method=a,b]``:
rerun a published table's cells and compare every per-sample score with its evidence.

The evidence (``results/evidence/<table>/``, :mod:`experiments.report.evidence`) holds each cell's
resolved config, its per-sample scores and the weight hash of the model it explained. The check:

1. the published table files are the ones the evidence backs (their sha256 in ``evidence.json``);
2. the model the config gives here (loaded from the cache, or trained) has the evidence's weight
   hash; a different model is one line and exit code 1, before any cell runs;
3. every cell is rerun from its recorded config (all samples, or the first ``n_samples=K``) into
   a scratch folder, never the published ``results/``: a temporary folder, deleted after a pass
   and kept after a failure, or ``results_dir=DIR``;
4. per method and metric (and per diagnostic column, e.g. backtrace's conservation), the largest
   absolute and relative difference over the samples both hold is printed; any relative
   difference above :data:`TOLERANCE` fails the check (exit code 1).

Relative difference of a stored score ``a`` and a rerun ``b`` of metric ``m``:
``|a - b| / max(|a|, |b|, scale_m)``, where ``scale_m`` is the largest ``|score|`` of ``m`` in the
table's evidence (every method, every sample). Near 0 the metric's own scale bounds the
denominator from below, so a score of 1e-9 that comes back as 3e-9 on a metric whose values reach
0.8 is a difference of 2.5e-9, not 200%; two undefined (NaN) scores agree, one NaN does not.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from experiments.errors import ConfigError, DataError, TableError
from experiments.report.evidence import MANIFEST, load_manifest, published_root, shown_path, table_files_problem
from experiments.report.methods import method_order
from experiments.run.text_table import text_table

TOLERANCE = 1e-6
OPTIONS = ("n_samples", "results_dir", "cache_dir", "threads", "method")
# Columns of scores.csv that are the sample's identity and its model's answers, compared exactly
# but shown only where they differ.
ANSWERS = ("label", "prediction", "target")


def parse_options(overrides: Sequence[str]) -> dict[str, str]:
    out = {}
    for text in overrides:
        key, eq, value = text.partition("=")
        if not eq or key not in OPTIONS:
            raise ConfigError(f"--check takes {', '.join(f'{o}=...' for o in OPTIONS)}; got {text!r}")
        out[key] = value
    return out


def evidence_folders(root: Path, table: str) -> list[Path]:
    """The evidence folders of ``table``: its own, or every one an experiment's sweep published
    (``keras`` -> ``keras_keras_cnn_digits``, ...)."""
    present = sorted(p.parent for p in root.glob(f"*/{MANIFEST}"))
    if (root / table / MANIFEST).is_file():
        return [root / table]
    own = [p for p in present if json.loads((p / MANIFEST).read_text()).get("table") == table]
    if own:
        return own
    raise ConfigError(f"no evidence for table {table!r} under {shown_path(root)}; tables with evidence: "
                      f"{', '.join(p.name for p in present) or '(none; publish one with paper_tables --publish)'}")


def cell_config(record: dict[str, Any], scratch: Path, cache_dir: str, options: dict[str, str]) -> DictConfig:
    """The cell's recorded config, run into ``scratch`` with this machine's model cache (and the
    first ``n_samples``, ``threads`` where given); always recomputed."""
    cfg = OmegaConf.create(record["config"])
    cfg.results_dir, cfg.cache_dir, cfg.force = str(scratch), cache_dir, True
    if "n_samples" in options:
        cfg.n_samples = int(options["n_samples"])
    if "threads" in options:
        cfg.threads = int(options["threads"]) if options["threads"].isdigit() else options["threads"]
    from experiments.run.config import validate

    validate(cfg)
    return cfg


def relative(a: np.ndarray, b: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Absolute and relative differences (module docstring); both NaN: 0, one NaN: inf."""
    both = np.isnan(a) & np.isnan(b)
    one = np.isnan(a) ^ np.isnan(b)
    diff = np.abs(np.where(both | one, 0.0, a - b))
    denom = np.maximum(np.maximum(np.abs(np.nan_to_num(a)), np.abs(np.nan_to_num(b))), scale)
    rel = np.divide(diff, denom, out=np.zeros_like(diff), where=denom > 0)
    diff[one], rel[one] = np.inf, np.inf
    return diff, rel


def compare(stored: pd.DataFrame, rerun: pd.DataFrame, scales: dict[str, float]) -> list[dict[str, Any]]:
    """One row per column of the stored scores: samples compared, largest |a-b| and relative difference."""
    both = stored.merge(rerun, on="sample", suffixes=("", "__rerun"))
    rows = []
    for column in stored.columns:
        if column == "sample":
            continue
        if f"{column}__rerun" not in both:
            rows.append({"metric": column, "samples": 0, "abs": np.inf, "rel": np.inf, "note": "missing in the rerun"})
            continue
        a = both[column].to_numpy(dtype=float)
        b = both[f"{column}__rerun"].to_numpy(dtype=float)
        diff, rel = relative(a, b, scales.get(column, 0.0))
        rows.append({"metric": column, "samples": len(both), "abs": float(diff.max(initial=0.0)),
                     "rel": float(rel.max(initial=0.0)), "note": "" if len(both) else "no sample in common"})
    return rows


def _number(x: float) -> str:
    return "inf" if x == np.inf else f"{x:.2e}"


def check_table(folder: Path, options: dict[str, str], scratch: Path, cache_dir: str) -> bool:
    """Check one table's evidence (module docstring); prints what it finds, returns whether it passed."""
    from experiments.run.pipeline import prepare
    from experiments.run.records import load_record
    from experiments.run.runner import run

    manifest = load_manifest(folder)
    name = manifest["name"]
    problem = table_files_problem(manifest, folder.parent.parent)
    if problem is not None:
        print(f"{name}: table and evidence out of step: {problem}; republish the table")
        return False
    wanted = options["method"].split(",") if options.get("method") else None
    cells = [c for c in manifest["cells"] if wanted is None or c["method"] in wanted or c["folder"] in wanted]
    if not cells:
        raise ConfigError(f"method={options['method']} names no cell of {name}; its cells: "
                          f"{', '.join(c['folder'] for c in manifest['cells'])}")
    n_all = int(manifest["n_samples"])
    if "n_samples" in options and not (options["n_samples"].isdigit() and 1 <= int(options["n_samples"]) <= n_all):
        raise ConfigError(f"n_samples={options['n_samples']} for {name}: choose 1..{n_all} (the samples its evidence holds)")
    stored = {c["folder"]: load_record_files(folder / c["folder"]) for c in manifest["cells"]}
    scales = _scales([scores for _, scores in stored.values()])
    configs = {c["folder"]: cell_config(stored[c["folder"]][0], scratch, cache_dir, options) for c in cells}

    expected = manifest["model"].get("weights_sha256")
    model = manifest["model"]
    if not expected:
        print(f"{name}: its evidence records no model weight hash (published before weights were recorded); "
              f"republish it")
        return False
    log = scratch / "check.log"
    scratch.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh, contextlib.redirect_stdout(fh):
        here = str(prepare(next(iter(configs.values()))).trained.weights_sha256)
    if here != expected:
        print(f"{name}: a different model: {model['name']} (cache key {model.get('cache_key')}) has weights sha256 "
              f"{here[:12]} here, the evidence {expected[:12]}; no cell rerun")
        return False
    print(f"{name}: model {model['name']} weights sha256 {here[:12]}, as in the evidence")
    k = int(options.get("n_samples", n_all))
    samples = f"the first {k} of {n_all}" if k < n_all else f"all {n_all}"
    print(f"{name}: rerunning {len(cells)} cell{'' if len(cells) == 1 else 's'} on {samples} samples into {scratch} "
          f"(log: {log})")

    rows = []
    for cell in cells:
        start = time.perf_counter()
        with open(log, "a") as fh, contextlib.redirect_stdout(fh):
            result = run(configs[cell["folder"]])
        record, scores = stored[cell["folder"]]
        _, rerun = load_record(result.path)
        print(f"  {cell['variant']}: rerun in {time.perf_counter() - start:.1f} s")
        shown = list(record["metrics"]) + [c for c in scores.columns if c not in record["metrics"] and c != "sample"]
        for row in compare(scores, rerun, scales):
            if row["metric"] in ANSWERS and row["rel"] == 0:
                continue
            rows.append({"method": cell["variant"], **row, "order": shown.index(row["metric"])})
    return _verdict(name, rows)


def load_record_files(folder: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """A cell's stored record and scores (the evidence holds no arrays for large tables, so the
    run records' own reader, which requires them, is not used)."""
    return json.loads((folder / "record.json").read_text()), pd.read_csv(folder / "scores.csv")


def _scales(frames: list[pd.DataFrame]) -> dict[str, float]:
    """Each column's largest |value| over every cell: the floor of the relative difference."""
    out: dict[str, float] = {}
    for frame in frames:
        for column in frame.columns:
            values = np.abs(pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float))
            if np.isfinite(values).any():
                out[column] = max(out.get(column, 0.0), float(np.nanmax(np.where(np.isfinite(values), values, np.nan))))
    return out


def _verdict(name: str, rows: list[dict[str, Any]]) -> bool:
    table = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(method_order(list(dict.fromkeys(table["method"]))))}
    table = table.sort_values(["method", "order"], key=lambda col: col.map(order) if col.name == "method" else col)
    shown = [{"method": r.method, "metric": r.metric, "samples": str(r.samples), "max |a-b|": _number(r.abs),
              "max relative": _number(r.rel), **({"note": r.note} if r.note else {})} for r in table.itertuples()]
    print(text_table(shown))
    worst = table.loc[table["rel"].idxmax()]
    bad = table[table["rel"] > TOLERANCE]
    if len(bad):
        listed = "; ".join(f"{r.method} {r.metric} (relative {_number(r.rel)}, absolute {_number(r.abs)})"
                           for r in bad.sort_values("rel", ascending=False).head(5).itertuples())
        print(f"{name}: FAILED: {len(bad)} of {len(table)} method x metric differ from the evidence by more than "
              f"{TOLERANCE:g} (relative): {listed}")
        return False
    print(f"{name}: passed: all {len(table)} method x metric within {TOLERANCE:g} of the evidence (relative); "
          f"largest {_number(worst['rel'])} ({worst['method']}, {worst['metric']})")
    return True


def check(table: str, overrides: Sequence[str], evidence_root: Optional[str | Path] = None) -> int:
    """Exit code of the check: 0 passed, 1 a score or the model differs, 2 bad input (one line)."""
    try:
        options = parse_options(overrides)
        root = Path(evidence_root) if evidence_root is not None else published_root() / "evidence"
        folders = evidence_folders(root, table)
        given = options.get("results_dir")
        if given is not None and Path(given).resolve().is_relative_to(published_root().resolve()):
            raise ConfigError(f"results_dir={given} is inside the published results/ ({published_root()}); the "
                              f"check writes only to a scratch folder: choose another")
        from experiments.run.config import check_writable, compose

        cache_dir = options.get("cache_dir") or str(compose(["metrics=none"]).cache_dir)
        scratch = Path(given) if given is not None else Path(tempfile.mkdtemp(prefix="backtrace-bench-check-"))
        check_writable("results_dir", scratch)
        passed = all([check_table(folder, options, scratch, cache_dir) for folder in folders])
    except (ConfigError, TableError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if given is None:
        if passed:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"the reruns are kept in {scratch}")
    return 0 if passed else 1
