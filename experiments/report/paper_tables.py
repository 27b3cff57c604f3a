"""Turn run records into tables: methods as rows, metrics as columns, with intervals and tests.

``python -m experiments.paper_tables`` reads every record under ``--results-dir`` and writes one
table per (table, model, dataset) next to them: ``<results-dir>/tables/<name>.{md,csv,tex}`` and
its figures (drawn by ``experiments.report.figures``), or under ``--out``. Only ``--publish``
writes the published ``results/`` (under the current folder or ``$BACKTRACE_BENCH_HOME``; or
``--out``): the tables, their figures and their evidence (:mod:`experiments.report.evidence`),
moved in together, and the table blocks of ``RESULTS.md`` beside them (``--results-md PATH``); a
publish that would replace a table by one of fewer samples is refused (``--allow-smaller``).
Records of the paper's experiments carry their table's name (``table=`` set by
``configs/experiment/``); any other sweep becomes a table named after its model and dataset;
``--where KEY=VALUE`` takes only the records that match (:mod:`experiments.report.selection`).

Rows are method *variants* (:mod:`experiments.report.variants`): the name of the method config
chosen plus every parameter that differs between its records or from the project's config file
(``ig (n_steps=4)``), so a sweep over a method's parameters, or two configs of one's own of the
same class, give one row each. Every cell of
a table must have explained the same samples of the same data with the same model, output
function, target and metric settings. A table whose cells differ is skipped with a one-line
warning naming it, the differing setting and the ``--where`` filter that splits it, and the other
tables are written; a table asked for by name (``--table``) is refused with that line instead, and
nothing is written.

Every number is computed on the samples every method scored (``metrics.statistics.common_samples``):
the mean with its bootstrap 95% interval, ranks, the Friedman test, and Wilcoxon signed-rank tests
of the reference method (``--reference``, default ``backtrace`` when present) against every other,
Holm-corrected, with the rank-biserial effect size. A metric's best mean is bold, and so is every
method whose interval overlaps it. Under the table: what each method explains (or that it reads
no output), its budget, the value it treats as absent, what sign its maps actually had, which
metrics compare magnitudes, and the metrics' own settings. Where the samples are too few for any
Holm-corrected Wilcoxon test to reach 0.05, one line says so instead of a table of ``=``. Every
number is printed to three significant digits (:func:`metrics.statistics.significant`).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd

from experiments.errors import ConfigError, TableError
from experiments.report.evidence import evidence_line, publish, published_root, write_evidence
from experiments.report.figures import heatmap_grid, token_heatmap, write_token_heatmap_html
from experiments.report.method_table import choose_reference, method_statistics
from experiments.report.methods import method_order
from experiments.report.results_blocks import (check_published, check_results_md, default_results_md,  # noqa: F401
                                               update_results_md)
from experiments.report.selection import (Filter, as_text, check_keys, first_difference, matches, parse_filters,
                                         table_name)
from experiments.report.table_data import TableData, explained, explained_short
from experiments.report.variants import short, variant_labels
from experiments.run.config import home
from experiments.run.records import iter_records
from metrics.map_agreement import agreement_note
from metrics.statistics import (MARKS, significant, smallest_wilcoxon_pvalue,
                                wilcoxon_can_reach)

ARROW = {"higher": "↑", "lower": "↓"}
TEX_ARROW = {"higher": r"$\uparrow$", "lower": r"$\downarrow$"}
# What every cell of one table must share (read from the record's resolved config).
SHARED_SETTINGS = ("dataset", "model", "output", "target", "seed", "n_samples", "sample_selection",
                   "channel_reduction", "metrics")
# Metric parameters that say what a metric removes features to, shown under the table.
METRIC_ABSENT_PARAMS = ("perturb_baseline", "baseline")
# The model-free control whose rationale agreement the heading of a text table states.
RARITY = "rarity"
ALPHA = 0.05


# -- collecting ----------------------------------------------------------------------------------

def _table_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return table_name(record), record["model"]["name"], record["dataset"]["name"]


def _shared(record: dict[str, Any], samples: list[int]) -> dict[str, Any]:
    cfg = record["config"]
    out = {k: cfg.get(k) for k in SHARED_SETTINGS}
    out["model"] = record["model"].get("cache_key") or cfg.get("model")
    out["head"] = (record.get("dense") or {}).get("head")     # a dense model's explained value
    out["samples"] = samples
    return out


def _difference(key: str, names: tuple[str, str], records: tuple[dict, dict], values: tuple[Any, Any]) -> tuple[str, str]:
    """What differs between two cells in ``key`` (the clause) and how a filter splits them (the
    hint): the first config path whose values differ, e.g. ``--where n_samples=8``."""
    split: Optional[tuple[str, Any, Any]] = None
    if key == "samples":
        a, b = values
        detail = f"{len(a)} vs {len(b)} samples" if len(a) != len(b) else "different values"
        split = ("n", records[0]["n_samples"], records[1]["n_samples"]) if len(a) != len(b) else None
    else:
        split = first_difference(records[0]["config"].get(key), records[1]["config"].get(key), key)
        if split is None and key == "model":            # one model config, different cache keys
            split = ("cache_key", values[0], values[1])
        if split is not None and any(isinstance(v, dict) for v in split[1:]):
            detail, split = f"{split[0]} set in one only", None
        else:
            detail = f"{split[0]}={as_text(split[1])} vs {as_text(split[2])}" if split else "different values"
    clause = f"mixes runs that differ in {key} ({names[0]!r} and {names[1]!r}: {detail})"
    hint = (f"split it with --where {split[0]}={as_text(split[1])} (or {split[0]}={as_text(split[2])})" if split
            else "point --results-dir at one sweep")
    return clause, hint


def mixed_settings(cells: dict[str, tuple[dict, pd.DataFrame, Path]]) -> Optional[tuple[str, str]]:
    """None when a table's cells share samples, data, model (and its weights, where recorded),
    output and metric settings; else (what differs, how to split the table)."""
    shared = {variant: _shared(rec, scores["sample"].tolist()) for variant, (rec, scores, _) in cells.items()}
    first_variant, first = next(iter(shared.items()))
    for variant, s in shared.items():
        for key in first:
            if s[key] != first[key]:
                return _difference(key, (first_variant, variant), (cells[first_variant][0], cells[variant][0]),
                                   (first[key], s[key]))
    weights = {v: rec["model"].get("weights_sha256") for v, (rec, _, _) in cells.items() if rec["model"].get("weights_sha256")}
    distinct = list(dict.fromkeys(weights.values()))
    if len(distinct) > 1:
        va, vb = (next(v for v, w in weights.items() if w == d) for d in distinct[:2])
        wa, wb = distinct[0][:12], distinct[1][:12]
        return (f"mixes runs that differ in model weights ({va!r} and {vb!r}: sha256 {wa} vs {wb})",
                f"split it with --where weights={wa} (or weights={wb})")
    return None


def collect(results_dir: str | Path, tables: Optional[set[str]] = None, where: Sequence[Filter] = (),
            skip_mixed: bool = False) -> list[TableData]:
    """Group the records (those matching ``where``) by (table, model, dataset) and row
    (:mod:`experiments.report.variants`: the method config's name plus every parameter that sets
    it apart), check that each table's cells are alike, and gather their scores. Records of one
    row differ only in run settings (a rerun with other samples): the newest is used, and a note
    names the one left out. A table that mixes settings is refused (:class:`TableError`, one line),
    or with ``skip_mixed`` left out with a one-line warning on stderr (refused only if none is
    left). Asked for tables (``tables``) that the records lack: refused with the tables they hold."""
    found = list(iter_records(results_dir))
    check_keys([record for record, _, _ in found], where)
    records: dict[tuple[str, str, str], list[tuple[dict, pd.DataFrame, Path]]] = {}
    seen: set[str] = set()
    for record, scores, folder in found:
        if where and not matches(record, where):
            continue
        key = _table_key(record)
        seen.add(key[0])
        if tables and key[0] not in tables:
            continue
        records.setdefault(key, []).append((record, scores, folder))
    if tables and not records and seen:
        raise TableError(f"no table {', '.join(sorted(tables))!r} under {results_dir}"
                         + (" matching --where" if where else "") + f"; tables there: {', '.join(sorted(seen))}")
    groups: dict[tuple[str, str, str], dict[str, tuple[dict, pd.DataFrame, Path]]] = {}
    for key, cells in records.items():
        rows = groups.setdefault(key, {})
        for label, cell in zip(variant_labels([record for record, _, _ in cells]), cells):
            current = rows.get(label)
            if current is None:
                rows[label] = cell
                continue
            newer, older = (cell, current) if cell[0]["created"] > current[0]["created"] else (current, cell)
            rows[label] = newer
            _note_superseded(key[0], label, newer, older)
    per_table: dict[str, int] = {}
    for table, _, _ in groups:
        per_table[table] = per_table.get(table, 0) + 1
    out, skipped = [], []
    for (table, model, dataset), cells in sorted(groups.items()):
        name = table if per_table[table] == 1 else f"{table}_{model}_{dataset}"
        mixed = mixed_settings(cells)
        if mixed is not None:
            clause, hint = mixed
            if not skip_mixed:
                raise TableError(f"table {name!r} {clause}; rerun them with the same settings, or {hint}")
            print(f"warning: skipping table {name!r}: it {clause}; {hint}, or rerun them with the same settings",
                  file=sys.stderr)
            skipped.append(name)
            continue
        out.append(_table_data(name, table, model, dataset, cells))
    if skipped and not out:
        raise TableError(f"every table under {results_dir} mixes settings ({', '.join(skipped)}); nothing written "
                         f"(see the warnings above)")
    return out


def _note_superseded(table: str, label: str, newer: tuple[dict, pd.DataFrame, Path],
                     older: tuple[dict, pd.DataFrame, Path]) -> None:
    """One line on stderr: a row's older record (same method settings, other run settings) is not in the table."""
    new_shared = _shared(newer[0], newer[1]["sample"].tolist())
    old_shared = _shared(older[0], older[1]["sample"].tolist())
    differ = [k for k in new_shared if new_shared[k] != old_shared.get(k)]
    if differ:
        print(f"note: table {table!r}: row {label!r} has two records that differ in {', '.join(differ)}; "
              f"using the newer ({newer[2].name}), leaving out {older[2]}", file=sys.stderr)


def _table_data(name: str, table: str, model: str, dataset: str,
                cells: dict[str, tuple[dict, pd.DataFrame, Path]]) -> TableData:
    frames, directions, runtime, signed, folders, methods, metric_settings = [], {}, {}, {}, {}, {}, {}
    accuracy, score_name, modality, settings = None, "test accuracy", "", {}
    for variant, (record, scores, folder) in cells.items():
        for metric, info in record["metrics"].items():
            directions[metric] = info["direction"]
            k = int(info.get("n", len(scores)))  # a metric may score only the first k samples
            part = scores.iloc[:k]
            frames.append(pd.DataFrame({"method": variant, "metric": metric, "sample": part["sample"],
                                        "score": part[metric].astype(float)}))
            metric_settings[metric] = {"n": k, "params": info.get("params", {}), "category": info.get("category"),
                                       "attributions": info.get("attributions")}
        runtime[variant] = record["runtime"]
        signed[variant] = bool(record["method"]["signed"])
        folders[variant] = folder
        methods[variant] = {key: record["method"].get(key) for key in ("signed", "returns", "budget", "absent")}
        methods[variant]["reads_output"] = record["method"].get("reads_output", True)
        methods[variant]["diagnostics"] = record.get("diagnostics") or {}
        accuracy = record["model"].get("test_score", record["model"]["test_accuracy"])
        score_name = record["model"].get("test_score_name", "test accuracy")
        modality = record["dataset"]["modality"]
        cfg = record["config"]
        settings = {"output": record.get("output", cfg.get("output")), "target": cfg.get("target"),
                    "n_samples": int(record.get("n_samples", len(scores))),
                    "saturated": record.get("saturated_samples"), "dense": record.get("dense")}
    long = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "metric", "sample", "score"])
    return TableData(name, table, model, dataset, modality, long, directions, runtime, accuracy, folders, signed,
                     methods, metric_settings, settings, score_name)


# -- statistics and layout ---------------------------------------------------------------------

def _fmt(value: Any) -> str:
    return significant(value)


def reference_of(data: TableData, reference: Optional[str]) -> Optional[str]:
    """The method the tests compare every other against: ``reference`` if given (it must be in
    the table), else ``backtrace`` when present, else none."""
    return choose_reference(sorted(set(data.scores["method"])), reference, f"table {data.name!r}")


def build(data: TableData, reference: Optional[str] = None) -> dict[str, Any]:
    """The statistics of one table, its wide layout (methods x metrics) and the bold sets
    (:func:`experiments.report.method_table.method_statistics`, which the Python API's
    ``summary_table`` shares)."""
    return method_statistics(data.scores, data.directions, reference_of(data, reference), data.runtime)


def _interval(row: pd.Series, metric: str) -> str:
    low, high = row.get(f"{metric}_ci_low", np.nan), row.get(f"{metric}_ci_high", np.nan)
    return f"{_fmt(row.get(metric, np.nan))} [{_fmt(low)}, {_fmt(high)}]"


def _declared(entry: Optional[dict[str, Any]]) -> str:
    if not entry:
        return "-"
    return ", ".join(f"{k}={short(v)}" for k, v in entry.items())


def heading(data: TableData, stats: dict[str, Any]) -> str:
    s = data.settings
    counts = sorted({int(c) for c in stats["summary"]["n"]}) if len(stats["summary"]) else []
    n_text = f"{s.get('n_samples')} test samples"
    acc = f" ({data.score_name} {data.accuracy:.3f})" if data.accuracy is not None else ""
    out = (f"**{data.name}**: model `{data.model}` on `{data.dataset}`{acc}, {n_text}; {explained(data)}, and "
           f"every metric reads it. Cells: mean [bootstrap 95% interval] over the samples every method scored; **bold**: the best mean "
           f"and every method whose interval overlaps it; ↑/↓: higher/lower is better; (k NaN): samples on "
           f"which that method's score is undefined (left out of every method's mean for that metric).")
    subsets = {m: v["n"] for m, v in data.metric_settings.items() if v["n"] < int(s.get("n_samples") or 0)}
    if subsets:
        by_n: dict[int, list[str]] = {}
        for m, k in subsets.items():
            by_n.setdefault(k, []).append(m)
        out += " " + "; ".join(f"{', '.join(ms)}: on the first {k} samples only (a declared budget)"
                               for k, ms in sorted(by_n.items())) + "."
    if s.get("saturated") is not None:
        out += f" Samples with a saturated target probability: {s['saturated']}."
    if counts and (len(counts) > 1 or counts[0] != int(s.get("n_samples") or 0)):
        out += f" Samples per metric after leaving out undefined scores: {', '.join(map(str, counts))}."
    floor = rarity_floor(data, stats)
    if floor:
        out += (f" Model-free floor: the `{RARITY}` control (each token's rarity in the training split; it runs no "
                f"model) scores {floor} on these samples; agreement above it needs the model.")
    return out


def rarity_floor(data: TableData, stats: dict[str, Any]) -> str:
    """The rarity control's means on the table's rationale-agreement metrics, as the heading
    states them (empty where the table has no such row or metric); read from the records."""
    summary = stats["summary"]
    part = summary[summary["method"] == RARITY]
    agreement = [m for m in data.directions if (data.metric_settings.get(m) or {}).get("category") == "localisation"]
    means = [(m, float(part.loc[part["metric"] == m, "mean"].iloc[0])) for m in agreement
             if (part["metric"] == m).any()]
    return ", ".join(f"{m} {_fmt(v)}" for m, v in means if np.isfinite(v))


def _kept(diagnostics: dict[str, Any]) -> str:
    """Backtrace's conservation: each sample's total input relevance over its starting relevance
    (contrastive mode: one ratio per map, R+ and R-)."""
    names = {"conservation": "", "conservation_positive": "R+ ", "conservation_negative": "R- "}
    parts = [f"{names[k]}{_fmt(diagnostics[k]['mean'])}" for k in names if k in diagnostics]
    return ", ".join(parts) if parts else "-"


def scoring_rule(data: TableData) -> str:
    """Which metrics rank the attributions as scored (signed where the method is) and which
    compare magnitudes for every method, from each metric's declared ``attributions``."""
    signed = [m for m in data.directions if (data.metric_settings.get(m) or {}).get("attributions") == "signed"]
    absolute = [m for m in data.directions if (data.metric_settings.get(m) or {}).get("attributions") == "absolute"]
    parts = []
    if absolute:
        parts.append(f"{', '.join(absolute)} compare magnitudes |a| for every method")
    if signed:
        parts.append(f"{', '.join(signed)} take the attributions as scored (signed where the method is signed, "
                     "|a| where it is not)")
    return ("Scoring: " + "; ".join(parts) + ".") if parts else ""


def method_notes(data: TableData, title: Callable[[str], str] = str) -> list[str]:
    """What each method was told (budget, absent value) and what its maps held; ``title``: how
    the method column writes a method (the report page writes them out, the markdown files keep
    the config names)."""
    lines = ["| method | explains | signed (declared) | samples with mixed-sign maps | budget | absent value "
             "| relevance kept (mean) |", "|---|---|---|---|---|---|---|"]
    for method in method_order(list(data.methods)):
        info = data.methods[method]
        returns = info.get("returns") or {}
        mixed = returns.get("mixed_sign_samples")
        explains = explained_short(data) if info.get("reads_output", True) else "reads no output"
        lines.append(f"| {title(method)} | {explains} | {'yes' if info.get('signed') else 'no (scored as magnitude)'} | "
                     f"{'-' if mixed is None else f'{100 * mixed:.0f}%'} | {_declared(info.get('budget'))} | "
                     f"{_declared(info.get('absent'))} | {_kept(info.get('diagnostics') or {})} |")
    rule = scoring_rule(data)
    if rule:
        lines += ["", rule]
    absent = sorted({f"{m}: {k}={short(v['params'][k])}" for m, v in data.metric_settings.items()
                     for k in METRIC_ABSENT_PARAMS if k in v.get("params", {})})
    if absent:
        lines += ["", "Metrics remove features to: " + "; ".join(absent)
                  + " (`black`: the sample's minimum; `zero`: 0, the training mean of standardised columns)."]
    return lines


def to_markdown(data: TableData, stats: dict[str, Any], title: Callable[[str], str] = str) -> str:
    """The table, its method notes and tests as markdown; ``title`` writes each method's name in
    the tables (the config name by default; :func:`~experiments.report.methods.method_title` on the page)."""
    wide = stats["wide"]
    metrics = list(data.directions)
    head = ["method"] + [f"{m} {ARROW[data.directions[m]]}" for m in metrics] + ["mean rank ↓", "s/sample", "fwd+bwd units"]
    lines = [heading(data, stats), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in wide.iterrows():
        cells = [title(row["method"])]
        for m in metrics:
            cell = _interval(row, m)
            if row["method"] in stats["best"][m]:
                cell = f"**{cell}**"
            n_nan = row.get(f"{m}_n_nan", 0)
            if not pd.isna(n_nan) and n_nan > 0:
                cell += f" ({int(n_nan)} NaN)"
            cells.append(cell)
        cells += [_fmt(row["mean_rank"]), _fmt(row["seconds_per_sample"] or np.nan),
                  _fmt(row["forward_backward_units"] or np.nan)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + method_notes(data, title)
    agreement = agreement_note(data.folders, text=data.modality == "text")   # backtrace vs lrp / attnlrp maps
    lines += [""] + agreement if agreement else []
    fr = stats["friedman"]
    if len(fr):
        lines += ["", "Friedman test across methods (samples as blocks): " + "; ".join(
            f"{r.metric} p={_fmt(r.pvalue)}" + (f" ({r.note})" if r.note else "") for r in fr.itertuples())]
    wx, ref = stats["wilcoxon"], stats["reference"]
    if ref is not None and len(wx):
        lines += [""] + wilcoxon_lines(wx, ref, metrics, title=title)
    elif ref is None:
        lines += ["", "No reference method in this table (pass --reference METHOD for the paired tests)."]
    return "\n".join(lines) + "\n"


def unreachable(wx: pd.DataFrame, metrics: list[str], alpha: float = ALPHA) -> dict[str, tuple[int, int]]:
    """The metrics on which no Holm-corrected Wilcoxon test could reach ``alpha``: metric -> (the
    most pairs any comparison had, the number of comparisons Holm corrects over)."""
    out = {}
    for m in metrics:
        part = wx[wx["metric"] == m]
        tested = part[np.isfinite(part["pvalue"].to_numpy(dtype=np.float64))]
        if not len(tested):
            continue
        n, k = int(tested["n_pairs"].max()), len(tested)
        if not wilcoxon_can_reach(n, k, alpha):
            out[m] = (n, k)
    return out


def wilcoxon_lines(wx: pd.DataFrame, ref: str, metrics: list[str], alpha: float = ALPHA,
                   title: Callable[[str], str] = str) -> list[str]:
    """The paired tests under a table; one line instead, where the samples are too few for any
    of them to come out below ``alpha``."""
    short = unreachable(wx, metrics, alpha)
    tested = {m for m in wx.loc[np.isfinite(wx["pvalue"].to_numpy(dtype=np.float64)), "metric"]}
    if short and set(short) >= tested:
        sizes = sorted(set(short.values()))
        what = "; ".join(f"n = {n} pairs: smallest p {_fmt(smallest_wilcoxon_pvalue(n))}, x {k} comparisons = "
                         f"{_fmt(k * smallest_wilcoxon_pvalue(n))}" for n, k in sizes)
        return [f"Wilcoxon signed-rank tests of `{ref}` against each method are not shown: too few samples for any "
                f"Holm-corrected test to reach {alpha} ({what}). Rerun with more samples for the paired tests."]
    lines = [f"Wilcoxon signed-rank, `{ref}` vs each method, Holm-corrected per metric; each cell: "
             f"outcome, Holm p, rank-biserial r (positive: `{ref}` better). +: `{ref}` better, -: worse, "
             f"=: no difference at {alpha}, ~: significant but the mean difference and r disagree in direction.",
             "", "| method | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
    for method in method_order(list(wx["method"].unique())):
        cells = [title(method)]
        for m in metrics:
            r = wx[(wx["method"] == method) & (wx["metric"] == m)]
            if m in short:
                cells.append("n too small")
                continue
            if not len(r) or pd.isna(r["pvalue_holm"].iloc[0]):
                cells.append("n/a")
                continue
            r = r.iloc[0]
            cells.append(f"{MARKS[r['outcome']]} p={_fmt(float(r['pvalue_holm']))} r={float(r['effect_size']):+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if short:
        lines += ["", "n too small: " + "; ".join(
            f"{m} (n = {n} pairs, {k} comparisons: the smallest Holm p is {_fmt(k * smallest_wilcoxon_pvalue(n))})"
            for m, (n, k) in short.items()) + f"; no test there can reach {alpha}."]
    return lines


def _tex_escape(s: str) -> str:
    return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&") \
        .replace("#", r"\#").replace("$", r"\$").replace("{", r"\{").replace("}", r"\}")


def to_latex(data: TableData, stats: dict[str, Any]) -> str:
    """A booktabs table in a ``table`` float with a caption and label; intervals under each mean."""
    wide = stats["wide"]
    metrics = list(data.directions)
    cols = "l" + "r" * (len(metrics) + 2)
    out = [r"\begin{table}[t]", r"\centering", r"\scriptsize",
           r"\caption{" + _tex_escape(re.sub(r"\*\*|`", "", heading(data, stats))) + "}",
           r"\label{tab:" + data.name + "}", r"\begin{tabular}{" + cols + "}", r"\toprule",
           " & ".join(["Method"] + [f"{_tex_escape(m)} {TEX_ARROW[data.directions[m]]}" for m in metrics]
                      + [r"Mean rank $\downarrow$", "s/sample"]) + r" \\", r"\midrule"]
    for _, row in wide.iterrows():
        cells = [_tex_escape(row["method"])]
        for m in metrics:
            mean = _fmt(row.get(m, np.nan))
            if row["method"] in stats["best"][m]:
                mean = rf"\textbf{{{mean}}}"
            low, high = _fmt(row.get(f"{m}_ci_low", np.nan)), _fmt(row.get(f"{m}_ci_high", np.nan))
            cells.append(rf"{mean} {{\tiny [{low}, {high}]}}")
        cells += [_fmt(row["mean_rank"]), _fmt(row["seconds_per_sample"] or np.nan)]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def write_figures(data: TableData, figures: Path) -> list[Path]:
    """The table's sample figure: a heatmap grid for images, a token heatmap (PNG and HTML) for
    text; nothing for tabular data."""
    made: list[Optional[Path]] = []
    if data.modality == "image":
        made.append(heatmap_grid(data, figures / f"{data.name}_heatmaps.png"))
    elif data.modality == "text":
        made += [token_heatmap(data, figures / f"{data.name}_tokens.png"),
                 write_token_heatmap_html(data, figures / f"{data.name}_tokens.html")]
    return [p for p in made if p is not None]


def output_folder(results_dir: str | Path, out: Optional[str | Path], publish: bool) -> Path:
    """Where tables/ and figures/ go: ``out``, else next to the records read (``results_dir``);
    with ``publish``, ``out`` or the published ``results/``. The published ``results/`` is
    refused without ``publish``: what is there is published, with its evidence and its guard."""
    if publish:
        return Path(out) if out is not None else published_root()
    folder = Path(out) if out is not None else Path(results_dir)
    if folder.resolve() == published_root().resolve():
        raise TableError(f"--out {out or results_dir} holds the published tables; add --publish to write there "
                         f"(with their evidence, refused where a table would shrink)")
    return folder


def _table_files(data: TableData, stats: dict[str, Any], md: str, tables: Path) -> list[Path]:
    tables.mkdir(parents=True, exist_ok=True)
    (tables / f"{data.name}.md").write_text(md)
    stats["wide"].to_csv(tables / f"{data.name}.csv", index=False)
    (tables / f"{data.name}.tex").write_text(to_latex(data, stats))
    return [tables / f"{data.name}.{ext}" for ext in ("md", "csv", "tex")]


def publish_table(data: TableData, stats: dict[str, Any], md: str, out: Path) -> list[Path]:
    """Publish one table into ``out``: its files, figures and evidence staged, then moved in
    together (:func:`experiments.report.evidence.publish`)."""
    def write(stage: Path) -> dict[str, list[Path]]:
        files = _table_files(data, stats, md, stage / "tables")
        figures = write_figures(data, stage / "figures")
        evidence = write_evidence(data, stage / "evidence" / data.name,
                                  {f"tables/{p.name}": p for p in files})
        return {"tables": files, "figures": figures, "evidence": [evidence]}
    return publish(data.name, out, write)


def published_markdown(data: TableData, stats: dict[str, Any], out: Path) -> str:
    """A published table's markdown: the table, then the line naming its evidence folder."""
    return to_markdown(data, stats) + "\n" + evidence_line(data.name, out / "evidence" / data.name) + "\n"


def write_tables(results_dir: str | Path, out_dir: Optional[str | Path] = None, only: Optional[str] = None,
                 reference: Optional[str] = None, results_md: Optional[Path] = None,
                 allow_smaller: bool = False, publish: bool = False, where: Sequence[Filter] = ()) -> list[Path]:
    """Build every table first (refusing the lot if one cannot be made; asked for every table, a
    table that mixes settings is left out with a warning), then write them next to the records
    (:func:`output_folder`). With ``publish``, refuse the lot if a table would replace a published
    one (or, with ``results_md``, a RESULTS.md table) of more samples, then publish each with its evidence."""
    out = output_folder(results_dir, out_dir, publish)
    if results_md is not None and not publish:
        raise TableError("--results-md refreshes the published tables of RESULTS.md: add --publish")
    built = [(data, build(data, reference)) for data in
             collect(results_dir, {only} if only else None, where, skip_mixed=only is None)]
    mds = {data.name: (published_markdown(data, stats, out) if publish else to_markdown(data, stats))
           for data, stats in built}
    if publish:
        check_published(out / "tables", mds, allow_smaller)
        if results_md is not None:
            check_results_md(results_md, out / "tables", mds, allow_smaller)
    written = []
    for data, stats in built:
        md = mds[data.name]
        if publish:
            written += publish_table(data, stats, md, out)
        else:
            written += _table_files(data, stats, md, out / "tables")
            written += write_figures(data, out / "figures")
        print(md)
    return written


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default=str(home() / "results" / "runs"),
                        help="records to tabulate (any sweep's results_dir)")
    parser.add_argument("--out", default=None,
                        help="where tables/ and figures/ go (default: the --results-dir folder; with --publish: "
                             "results/)")
    parser.add_argument("--publish", action="store_true",
                        help="publish: tables, figures and evidence/<table>/ into results/ (or --out), refused "
                             "where a table would shrink")
    parser.add_argument("--table", default=None, help="only this table (e.g. paper_tabular)")
    parser.add_argument("--where", nargs="+", default=[], metavar="KEY=VALUE",
                        help="only the records that match, e.g. n_samples=16 model=mlp (splits a mixed table)")
    parser.add_argument("--reference", default=None,
                        help="the method the paired tests compare every other against (default: backtrace when present)")
    parser.add_argument("--results-md", default=None,
                        help="with --publish: the results page whose table blocks are refreshed (default: RESULTS.md "
                             "beside the published results/, where it exists and --out is not given)")
    parser.add_argument("--allow-smaller", action="store_true",
                        help="let --publish replace a table by one of fewer samples (refused otherwise)")
    args = parser.parse_args(argv)
    results_md = Path(args.results_md) if args.results_md else None
    if results_md is None and args.publish and args.out is None and default_results_md().is_file():
        results_md = default_results_md()
    try:
        where = parse_filters(args.where)
        written = write_tables(args.results_dir, args.out, args.table, args.reference, results_md, args.allow_smaller,
                               args.publish, where)
        if written and results_md is not None:
            update_results_md(results_md, output_folder(args.results_dir, args.out, True) / "tables", args.allow_smaller)
    except (TableError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not written:
        print(f"error: no records under {args.results_dir}"
              + (f" for table {args.table!r}" if args.table else "")
              + (f" matching --where {' '.join(args.where)}" if args.where else "")
              + "; run e.g. `python run.py -m +experiment=paper_tabular` first", file=sys.stderr)
        return 2
    print("wrote:\n" + "\n".join(f"  {p}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
