"""Turn run records into tables: methods as rows, metrics as columns, with intervals and tests.

``python -m experiments.paper_tables`` reads every record under ``--results-dir`` and writes one
table per (table, model, dataset): ``results/tables/<name>.{md,csv,tex}`` and, for images,
``results/figures/<name>_heatmaps.png`` (for text, ``<name>_tokens.{png,html}``; the figures
themselves are drawn by ``experiments.report.figures``). Records of the paper's experiments carry their table's
name (``table=`` set by ``configs/experiment/``); any other sweep becomes a table named after its
model and dataset, so ``--results-dir DIR`` turns any sweep into a table.

Rows are method *variants*: the method's name plus the parameters that differ from its config
file (``ig (n_steps=4)``), so a sweep over a method's parameters gives one row each. Every cell of
a table must have explained the same samples of the same data with the same model, output
function, target and metric settings; a table whose cells differ is refused with one line naming
the difference, and nothing is written.

Every number is computed on the samples every method scored (``metrics.statistics.common_samples``):
the mean with its bootstrap 95% interval, ranks, the Friedman test, and Wilcoxon signed-rank tests
of the reference method (``--reference``, default ``backtrace`` when present) against every other,
Holm-corrected, with the rank-biserial effect size. A metric's best mean is bold, and so is every
method whose interval overlaps it. Under the table: what each method explains, its budget, the
value it treats as absent, what sign its maps actually had, and the metrics' own settings.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from baselines.vocabulary import OUTPUTS
from experiments.errors import TableError
from experiments.report.figures import heatmap_grid, token_heatmap, write_token_heatmap_html
from experiments.report.methods import REFERENCE, method_order
from experiments.report.table_data import TableData
from experiments.run.records import iter_records
from metrics.map_agreement import agreement_note
from metrics.statistics import MARKS, best_methods, table_statistics

ARROW = {"higher": "↑", "lower": "↓"}
TEX_ARROW = {"higher": r"$\uparrow$", "lower": r"$\downarrow$"}
# What every cell of one table must share (read from the record's resolved config).
SHARED_SETTINGS = ("dataset", "model", "output", "target", "seed", "n_samples", "sample_selection",
                   "channel_reduction", "metrics")
# Metric parameters that say what a metric removes features to, shown under the table.
METRIC_ABSENT_PARAMS = ("perturb_baseline", "baseline")


# -- variants ------------------------------------------------------------------------------------

def _method_defaults(target: str, output: str) -> Optional[dict[str, Any]]:
    """The parameters of the ``configs/method`` file whose ``_target_`` is ``target`` (None for a
    method that has no config file here)."""
    from omegaconf import OmegaConf

    from experiments.run.config import CONFIG_DIR, method_config

    for path in sorted((CONFIG_DIR / "method").glob("*.yaml")):
        if OmegaConf.load(path).get("_target_") == target:
            resolved = method_config(path.stem, output if output in OUTPUTS else "softmax")
            return OmegaConf.to_container(resolved, resolve=True)  # type: ignore[return-value]
    return None


def variant_label(record: dict[str, Any]) -> str:
    """The method's name plus every parameter that differs from its config file, e.g.
    ``ig (n_steps=4)``; the name alone for a method run as configured. Parameters that follow a
    run setting (``output``) are the same for a whole table and never make a variant."""
    name = record["method"]["name"]
    params = dict(record["method"].get("params") or {})
    defaults = _method_defaults(str(params.get("_target_")), str(record.get("output", "softmax")))
    if defaults is None:
        return name
    diff = [f"{k}={_short(v)}" for k, v in sorted(params.items())
            if k not in ("_target_", "output") and defaults.get(k, object()) != v]
    return f"{name} ({', '.join(diff)})" if diff else name


def _short(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


# -- collecting ----------------------------------------------------------------------------------

def _table_key(record: dict[str, Any]) -> tuple[str, str, str]:
    table = record["config"].get("table") or f"{record['model']['name']}_{record['dataset']['name']}"
    return table, record["model"]["name"], record["dataset"]["name"]


def _shared(record: dict[str, Any], samples: list[int]) -> dict[str, Any]:
    cfg = record["config"]
    out = {k: cfg.get(k) for k in SHARED_SETTINGS}
    out["model"] = record["model"].get("cache_key") or cfg.get("model")
    out["head"] = (record.get("dense") or {}).get("head")     # a dense model's explained value
    out["samples"] = samples
    return out


def _check_alike(name: str, cells: dict[str, tuple[dict, pd.DataFrame, Path]]) -> None:
    """Refuse a table whose cells differ in samples, data, model, output or metric settings."""
    shared = {variant: _shared(rec, scores["sample"].tolist()) for variant, (rec, scores, _) in cells.items()}
    first_variant, first = next(iter(shared.items()))
    for variant, s in shared.items():
        for key in first:
            if s[key] != first[key]:
                what = "samples" if key == "samples" else key
                detail = (f"{len(first[key])} vs {len(s[key])} samples" if key == "samples" and len(first[key]) != len(s[key])
                          else "different values")
                raise TableError(
                    f"table {name!r} mixes runs that differ in {what} ({first_variant!r} and {variant!r}: {detail}); "
                    f"rerun them with the same settings, or point --results-dir at one sweep")


def collect(results_dir: str | Path, tables: Optional[set[str]] = None) -> list[TableData]:
    """Group the records by (table, model, dataset) and method variant (the newest record of a
    variant wins), check that each table's cells are alike, and gather their scores."""
    groups: dict[tuple[str, str, str], dict[str, tuple[dict, pd.DataFrame, Path]]] = {}
    for record, scores, folder in iter_records(results_dir):
        key = _table_key(record)
        if tables and key[0] not in tables:
            continue
        variant = variant_label(record)
        current = groups.setdefault(key, {}).get(variant)
        if current is None or record["created"] > current[0]["created"]:
            groups[key][variant] = (record, scores, folder)
    per_table: dict[str, int] = {}
    for table, _, _ in groups:
        per_table[table] = per_table.get(table, 0) + 1
    out = []
    for (table, model, dataset), cells in sorted(groups.items()):
        name = table if per_table[table] == 1 else f"{table}_{model}_{dataset}"
        _check_alike(name, cells)
        out.append(_table_data(name, table, model, dataset, cells))
    return out


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
            metric_settings[metric] = {"n": k, "params": info.get("params", {})}
        runtime[variant] = record["runtime"]
        signed[variant] = bool(record["method"]["signed"])
        folders[variant] = folder
        methods[variant] = {key: record["method"].get(key) for key in ("signed", "returns", "budget", "absent")}
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

def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    value = float(value)
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 10 ** -(digits - 1)):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def reference_of(data: TableData, reference: Optional[str]) -> Optional[str]:
    """The method the tests compare every other against: ``reference`` if given (it must be in
    the table), else ``backtrace`` when present, else none."""
    methods = set(data.scores["method"])
    if reference is not None:
        if reference not in methods:
            raise TableError(f"unknown reference method {reference!r} for table {data.name!r}; "
                             f"valid choices: {', '.join(method_order(sorted(methods)))}")
        return reference
    return REFERENCE if REFERENCE in methods else None


def build(data: TableData, reference: Optional[str] = None) -> dict[str, Any]:
    """The statistics of one table, its wide layout (methods x metrics) and the bold sets."""
    ref = reference_of(data, reference)
    stats: dict[str, Any] = table_statistics(data.scores, data.directions, reference=ref)
    summary, ranks = stats["summary"], stats["ranks"]
    rows = []
    for method in method_order(list(summary["method"].unique())):
        part = summary[summary["method"] == method].set_index("metric")
        row: dict[str, Any] = {"method": method}
        for metric in data.directions:
            if metric in part.index:
                r = part.loc[metric]
                row.update({metric: r["mean"], f"{metric}_ci_low": r["ci_low"], f"{metric}_ci_high": r["ci_high"],
                            f"{metric}_n": int(r["n"]), f"{metric}_n_nan": int(r["n_nan"]),
                            f"{metric}_rank": ranks.loc[method, metric] if metric in ranks.columns else np.nan})
        row["mean_rank"] = ranks.loc[method, "mean_rank"] if method in ranks.index else np.nan
        rt = data.runtime.get(method, {})
        row["seconds_per_sample"] = rt.get("seconds_per_sample")
        row["forward_backward_units"] = rt.get("forward_backward_units")
        rows.append(row)
    stats["wide"] = pd.DataFrame(rows)
    stats["best"] = {m: set(best_methods(summary, m, d)) for m, d in data.directions.items()}
    stats["reference"] = ref
    return stats


def _interval(row: pd.Series, metric: str, digits: int = 4) -> str:
    low, high = row.get(f"{metric}_ci_low", np.nan), row.get(f"{metric}_ci_high", np.nan)
    return f"{_fmt(row.get(metric, np.nan), digits)} [{_fmt(low, 3)}, {_fmt(high, 3)}]"


def _declared(entry: Optional[dict[str, Any]]) -> str:
    if not entry:
        return "-"
    return ", ".join(f"{k}={_short(v)}" for k, v in entry.items())


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
    return out


def explained(data: TableData) -> str:
    """What every method of the table explains: a classifier's output for the target class, or a
    dense model's head value (with its settings)."""
    s = data.settings
    dense = s.get("dense")
    if not dense:
        return f"every method explains the **{s.get('output')}** output for the {s.get('target')} class"
    head = ", ".join(f"{k}={_short(v)}" for k, v in (dense.get("head") or {}).items())
    return f"every method explains **{dense.get('explains')}** (the {dense.get('task')} head's value, {head})"


def _kept(diagnostics: dict[str, Any]) -> str:
    """Backtrace's conservation: each sample's total input relevance over its starting relevance
    (contrastive mode: one ratio per map, R+ and R-)."""
    names = {"conservation": "", "conservation_positive": "R+ ", "conservation_negative": "R- "}
    parts = [f"{names[k]}{diagnostics[k]['mean']:.3f}" for k in names if k in diagnostics]
    return ", ".join(parts) if parts else "-"


def method_notes(data: TableData) -> list[str]:
    """What each method was told (budget, absent value) and what its maps held."""
    lines = ["| method | explains | signed (declared) | samples with mixed-sign maps | budget | absent value "
             "| relevance kept (mean) |", "|---|---|---|---|---|---|---|"]
    for method in method_order(list(data.methods)):
        info = data.methods[method]
        returns = info.get("returns") or {}
        mixed = returns.get("mixed_sign_samples")
        lines.append(f"| {method} | {data.settings.get('output')} | {'yes' if info.get('signed') else 'no (scored as magnitude)'} | "
                     f"{'-' if mixed is None else f'{100 * mixed:.0f}%'} | {_declared(info.get('budget'))} | "
                     f"{_declared(info.get('absent'))} | {_kept(info.get('diagnostics') or {})} |")
    absent = sorted({f"{m}: {k}={_short(v['params'][k])}" for m, v in data.metric_settings.items()
                     for k in METRIC_ABSENT_PARAMS if k in v.get("params", {})})
    if absent:
        lines += ["", "Metrics remove features to: " + "; ".join(absent)
                  + " (`black`: the sample's minimum; `zero`: 0, the training mean of standardised columns)."]
    return lines


def to_markdown(data: TableData, stats: dict[str, Any]) -> str:
    wide = stats["wide"]
    metrics = list(data.directions)
    head = ["method"] + [f"{m} {ARROW[data.directions[m]]}" for m in metrics] + ["mean rank ↓", "s/sample", "fwd+bwd units"]
    lines = [heading(data, stats), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in wide.iterrows():
        cells = [row["method"]]
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
    lines += [""] + method_notes(data)
    agreement = agreement_note(data.folders, text=data.modality == "text")   # backtrace vs lrp / attnlrp maps
    lines += [""] + agreement if agreement else []
    fr = stats["friedman"]
    if len(fr):
        lines += ["", "Friedman test across methods (samples as blocks): " + "; ".join(
            f"{r.metric} p={_fmt(r.pvalue)}" + (f" ({r.note})" if r.note else "") for r in fr.itertuples())]
    wx, ref = stats["wilcoxon"], stats["reference"]
    if ref is not None and len(wx):
        lines += ["", f"Wilcoxon signed-rank, `{ref}` vs each method, Holm-corrected per metric; each cell: "
                  f"outcome, Holm p, rank-biserial r (positive: `{ref}` better). +: `{ref}` better, -: worse, "
                  "=: no difference at 0.05, ~: significant but the mean difference and r disagree in direction.",
                  "", "| method | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
        for method in method_order(list(wx["method"].unique())):
            cells = [method]
            for m in metrics:
                r = wx[(wx["method"] == method) & (wx["metric"] == m)]
                if not len(r) or pd.isna(r["pvalue_holm"].iloc[0]):
                    cells.append("n/a")
                    continue
                r = r.iloc[0]
                cells.append(f"{MARKS[r['outcome']]} p={_fmt(float(r['pvalue_holm']))} r={float(r['effect_size']):+.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    elif ref is None:
        lines += ["", "No reference method in this table (pass --reference METHOD for the paired tests)."]
    return "\n".join(lines) + "\n"


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
            mean = _fmt(row.get(m, np.nan), 3)
            if row["method"] in stats["best"][m]:
                mean = rf"\textbf{{{mean}}}"
            low, high = _fmt(row.get(f"{m}_ci_low", np.nan), 3), _fmt(row.get(f"{m}_ci_high", np.nan), 3)
            cells.append(rf"{mean} {{\tiny [{low}, {high}]}}")
        cells += [_fmt(row["mean_rank"], 2), _fmt(row["seconds_per_sample"] or np.nan, 3)]
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


def write_tables(results_dir: str | Path, out_dir: str | Path, only: Optional[str] = None,
                 reference: Optional[str] = None, readme: Optional[Path] = None,
                 allow_smaller: bool = False) -> list[Path]:
    """Build every table first (refusing the lot if one cannot be made, or, with ``readme``, if
    it would replace a README table by one of fewer samples), then write them."""
    out = Path(out_dir)
    built = [(data, build(data, reference)) for data in collect(results_dir, {only} if only else None)]
    if readme is not None:
        check_readme(readme, out / "tables", {data.name: to_markdown(data, stats) for data, stats in built},
                     allow_smaller)
    written = []
    for data, stats in built:
        tables = out / "tables"
        tables.mkdir(parents=True, exist_ok=True)
        md = to_markdown(data, stats)
        (tables / f"{data.name}.md").write_text(md)
        stats["wide"].to_csv(tables / f"{data.name}.csv", index=False)
        (tables / f"{data.name}.tex").write_text(to_latex(data, stats))
        written += [tables / f"{data.name}.{ext}" for ext in ("md", "csv", "tex")]
        written += write_figures(data, out / "figures")
        print(md)
    return written


_BLOCK = re.compile(r"<!-- table:([\w-]+) -->\n?(.*?)<!-- /table -->", flags=re.S)


def sample_sizes(block: str) -> dict[str, int]:
    """The sample sizes a table's heading states: ``"all"`` (test samples explained) and each
    metric scored on fewer (``max_samples``)."""
    sizes: dict[str, int] = {}
    found = re.search(r"(\d+) test samples", block)
    if found:
        sizes["all"] = int(found.group(1))
    for names, k in re.findall(r"([\w]+(?:, [\w]+)*): on the first (\d+) samples only", block):
        sizes.update({name: int(k) for name in names.split(", ")})
    return sizes


def check_readme(readme: Path, tables_dir: Path, new: Optional[dict[str, str]] = None,
                 allow_smaller: bool = False) -> dict[str, str]:
    """The new body of each README table block (``new``, else ``tables_dir/<name>.md``; a block
    with neither is left as it is), refused with one line if a table would shrink: fewer test
    samples, or a metric scored on fewer, than the table it replaces (``allow_smaller``: replace
    anyway). Nothing is written here."""
    if not readme.is_file():
        raise TableError(f"--readme {str(readme)!r} is not a file")
    bodies: dict[str, str] = {}
    for name, old in _BLOCK.findall(readme.read_text()):
        md = tables_dir / f"{name}.md"
        body = (new or {}).get(name) or (md.read_text() if md.exists() else None)
        if body is None:
            continue
        before, after = sample_sizes(old), sample_sizes(body)
        if "all" in before and "all" in after and not allow_smaller:
            shrunk = [(key, n, after.get(key, after["all"])) for key, n in before.items()
                      if after.get(key, after["all"]) < n]
            if shrunk:
                what = "; ".join(f"{'test samples' if key == 'all' else key + ' samples'} {n} -> {m}"
                                 for key, n, m in shrunk)
                raise TableError(f"table {name!r} in {readme} would shrink ({what}); nothing written: rerun with "
                                 f"the README's sample sizes, or pass --allow-smaller to replace it anyway")
        bodies[name] = body
    return bodies


def update_readme(readme: Path, tables_dir: Path, allow_smaller: bool = False) -> None:
    """Replace each ``<!-- table:NAME -->...<!-- /table -->`` block with the generated table
    (blocks whose table was never generated stay as they are); refuse, writing nothing, where a
    table would shrink (:func:`check_readme`)."""
    bodies = check_readme(readme, tables_dir, None, allow_smaller)

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"<!-- table:{name} -->\n{bodies[name]}<!-- /table -->" if name in bodies else match.group(0)

    readme.write_text(_BLOCK.sub(repl, readme.read_text()))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default="results/runs", help="records to tabulate (any sweep's results_dir)")
    parser.add_argument("--out", default="results")
    parser.add_argument("--table", default=None, help="only this table (e.g. paper_tabular)")
    parser.add_argument("--reference", default=None,
                        help="the method the paired tests compare every other against (default: backtrace when present)")
    parser.add_argument("--readme", default=None, help="also refresh the table blocks of this README")
    parser.add_argument("--allow-smaller", action="store_true",
                        help="let --readme replace a table by one of fewer samples (refused otherwise)")
    args = parser.parse_args(argv)
    readme = Path(args.readme) if args.readme else None
    try:
        written = write_tables(args.results_dir, args.out, args.table, args.reference, readme, args.allow_smaller)
        if written and readme is not None:
            update_readme(readme, Path(args.out) / "tables", args.allow_smaller)
    except TableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not written:
        print(f"error: no records under {args.results_dir}"
              + (f" for table {args.table!r}" if args.table else "")
              + "; run e.g. `python run.py -m +experiment=paper_tabular` first", file=sys.stderr)
        return 2
    print("wrote:\n" + "\n".join(f"  {p}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
