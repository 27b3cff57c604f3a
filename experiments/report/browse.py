"""Browse the stored run records: ``python -m experiments.records list|show [filters] [--results-dir DIR]``.

``list`` prints one line per record (newest first): its hash, table, model, dataset, method (the
row it makes, with the parameters that differ from the method's config), samples explained and
when it was made. ``show`` prints, for each record that matches (or the one whose hash starts
with a given prefix: ``show 3fa2``), its settings and its aggregate score per metric. Filters are
``key=value`` (:mod:`experiments.report.selection`): ``model=mlp method=ig,saliency
table=paper_tabular n_samples=16 method.n_steps=4``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from experiments.errors import ConfigError
from experiments.report.selection import as_text, check_keys, matches, parse_filters, table_name
from experiments.report.variants import variant_labels
from experiments.run.records import iter_records
from experiments.run.text_table import text_table

COMMANDS = ("list", "show")


def select(results_dir: str | Path, tokens: list[str]) -> list[dict[str, Any]]:
    """The records under ``results_dir`` that match every filter (a bare token: a hash prefix), newest first."""
    filters = parse_filters([t if "=" in t else f"hash={t}" for t in tokens])
    records = [record for record, _, _ in iter_records(results_dir)]
    check_keys(records, filters)
    chosen = [r for r in records if matches(r, filters)]
    return sorted(chosen, key=lambda r: str(r.get("created", "")), reverse=True)


def row_labels(records: list[dict[str, Any]]) -> list[str]:
    """Each record's row in its table (:func:`experiments.report.variants.variant_labels`, asked
    of the listed records of that table)."""
    labels: dict[int, str] = {}
    tables: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        tables.setdefault(table_name(record), []).append(i)
    for members in tables.values():
        labels.update(zip(members, variant_labels([records[i] for i in members])))
    return [labels[i] for i in range(len(records))]


def list_lines(records: list[dict[str, Any]]) -> str:
    rows = [{"hash": r["config_hash"], "table": table_name(r), "model": r["model"]["name"],
             "dataset": r["dataset"]["name"], "method": label, "n": r["n_samples"], "created": r.get("created", "")}
            for r, label in zip(records, row_labels(records))]
    return text_table(rows)


def _number(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    value = float(value)
    return f"{value:.3g}" if value == 0 or 1e-2 <= abs(value) < 1e4 else f"{value:.2e}"


def show_text(record: dict[str, Any], folder: Optional[Path] = None) -> str:
    """A record's settings, then a metric / better / mean / n / n_nan table."""
    cfg, model = record.get("config") or {}, record["model"]
    acc = model.get("test_accuracy")
    settings = [
        ("record", f"{record['config_hash']}" + (f" ({folder})" if folder else "")),
        ("created", str(record.get("created", "-"))),
        ("table", table_name(record)),
        ("model", f"{model['name']} (cache key {model.get('cache_key', '-')}, weights sha256 "
                  f"{str(model.get('weights_sha256') or '-')[:12]}"
                  + (f", test accuracy {acc:.3f})" if acc is not None else ")")),
        ("dataset", f"{record['dataset']['name']} ({record['dataset'].get('modality', '-')})"),
        ("method", f"{row_labels([record])[0]}: " + ", ".join(
            f"{k}={as_text(v)}" for k, v in (record["method"].get("params") or {}).items() if k != "_target_")),
        ("samples", f"{record['n_samples']} explained ({cfg.get('sample_selection', '-')}, seed {cfg.get('seed', '-')})"),
        ("output, target", f"{record.get('output', cfg.get('output'))}, {cfg.get('target', '-')} class"),
        ("runtime", f"{_number((record.get('runtime') or {}).get('seconds_per_sample'))} s/sample"),
    ]
    width = max(len(k) for k, _ in settings)
    lines = [f"{k:<{width}}  {v}" for k, v in settings]
    metrics = [{"metric": m, "better": info.get("direction", "-"), "mean": _number(info.get("mean")),
                "n": info.get("n", "-"), "n_nan": info.get("n_nan", "-")} for m, info in record["metrics"].items()]
    lines += ["", text_table(metrics) if metrics else "(no metrics)"]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.records", description=__doc__.splitlines()[0])
    parser.add_argument("command", help="list | show")
    parser.add_argument("filters", nargs="*", help="key=value filters, e.g. model=mlp method=ig table=paper_tabular "
                                                   "(show: also a hash prefix)")
    parser.add_argument("--results-dir", default="results/runs", help="where the records are (any sweep's results_dir)")
    args = parser.parse_args(argv)
    try:
        if args.command not in COMMANDS:
            raise ConfigError(f"unknown command {args.command!r}; valid choices: {', '.join(COMMANDS)}")
        records = select(args.results_dir, args.filters)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not records:
        print(f"error: no records under {args.results_dir}" + (f" match {' '.join(args.filters)}" if args.filters else ""),
              file=sys.stderr)
        return 2
    if args.command == "list":
        print(list_lines(records))
        print(f"{len(records)} records under {args.results_dir}")
    else:
        folder = Path(args.results_dir)
        print("\n\n".join(show_text(r, folder / r["config_hash"]) for r in records))
    return 0
