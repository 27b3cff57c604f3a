"""Turn run records into the paper's tables: methods as rows, metrics as columns.

``python -m experiments.paper_tables`` reads every record under ``--results-dir`` that belongs to a
table (``table=`` set by ``configs/experiment/``), and writes per (table, model, dataset)
``results/tables/<name>.{md,csv,tex}`` and, for image tables, ``results/figures/<name>_heatmaps.png``.
Markdown and TeX show the mean with the best value in bold and an arrow for each metric's direction;
the CSV carries the bootstrap CI, ``n``, ``n_nan`` and ranks; the Markdown adds the Friedman test
and the Holm-corrected Wilcoxon tests of backtrace against every other method.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from experiments.records import iter_records
from metrics.statistics import table_statistics

REFERENCE = "backtrace"
CONTROLS = ("random", "sobel")
ARROW = {"higher": "↑", "lower": "↓"}
TEX_ARROW = {"higher": r"$\uparrow$", "lower": r"$\downarrow$"}


@dataclass
class TableData:
    """Everything one table is made of: the per-sample scores of each method and their context."""

    name: str
    table: str
    model: str
    dataset: str
    modality: str
    scores: pd.DataFrame                       # long: method, metric, sample, score
    directions: dict[str, str]
    runtime: dict[str, dict[str, Optional[float]]]
    accuracy: Optional[float]
    folders: dict[str, Path] = field(default_factory=dict)
    signed: dict[str, bool] = field(default_factory=dict)


def method_order(methods: list[str]) -> list[str]:
    """backtrace first, then the other methods alphabetically, the controls last."""
    def key(m: str) -> tuple[int, str]:
        return (0 if m.startswith(REFERENCE) else 2 if m in CONTROLS else 1, m)
    return sorted(methods, key=key)


def collect(results_dir: str | Path) -> list[TableData]:
    """Group the table records by (table, model, dataset); the newest record of a method wins."""
    groups: dict[tuple[str, str, str], dict[str, tuple[dict, pd.DataFrame, Path]]] = {}
    for record, scores, folder in iter_records(results_dir):
        table = record["config"].get("table")
        if not table:
            continue
        key = (table, record["model"]["name"], record["dataset"]["name"])
        method = record["method"]["name"]
        current = groups.setdefault(key, {}).get(method)
        if current is None or record["created"] > current[0]["created"]:
            groups[key][method] = (record, scores, folder)
    per_table: dict[str, int] = {}
    for table, _, _ in groups:
        per_table[table] = per_table.get(table, 0) + 1
    out = []
    for (table, model, dataset), methods in sorted(groups.items()):
        name = table if per_table[table] == 1 else f"{table}_{model}_{dataset}"
        frames, directions, runtime, signed, folders, accuracy, modality = [], {}, {}, {}, {}, None, ""
        for method, (record, scores, folder) in methods.items():
            for metric, info in record["metrics"].items():
                directions[metric] = info["direction"]
                frames.append(pd.DataFrame({"method": method, "metric": metric, "sample": scores["sample"],
                                            "score": scores[metric].astype(float)}))
            runtime[method] = record["runtime"]
            signed[method] = record["method"]["signed"]
            folders[method] = folder
            accuracy = record["model"]["test_accuracy"]
            modality = record["dataset"]["modality"]
        long = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "metric", "sample", "score"])
        out.append(TableData(name, table, model, dataset, modality, long, directions, runtime, accuracy, folders, signed))
    return out


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.4f}"


def build(data: TableData) -> dict[str, pd.DataFrame]:
    """The statistics of one table and its wide layout (methods x metrics)."""
    stats = table_statistics(data.scores, data.directions, reference=REFERENCE)
    summary = stats["summary"]
    ranks = stats["ranks"]
    rows = []
    for method in method_order(list(summary["method"].unique())):
        part = summary[summary["method"] == method].set_index("metric")
        row: dict[str, Any] = {"method": method}
        for metric in list(data.directions):
            if metric in part.index:
                r = part.loc[metric]
                row.update({f"{metric}": r["mean"], f"{metric}_ci_low": r["ci_low"], f"{metric}_ci_high": r["ci_high"],
                            f"{metric}_n": int(r["n"]), f"{metric}_n_nan": int(r["n_nan"]),
                            f"{metric}_rank": ranks.loc[method, metric] if metric in ranks.columns else np.nan})
        row["mean_rank"] = ranks.loc[method, "mean_rank"] if method in ranks.index else np.nan
        rt = data.runtime.get(method, {})
        row["seconds_per_sample"] = rt.get("seconds_per_sample")
        row["forward_backward_units"] = rt.get("forward_backward_units")
        rows.append(row)
    stats["wide"] = pd.DataFrame(rows)
    return stats


def _best(wide: pd.DataFrame, metric: str, direction: str) -> set[str]:
    col = wide[metric].astype(float)
    if col.notna().sum() == 0:
        return set()
    best = col.max() if direction == "higher" else col.min()
    return set(wide.loc[np.isclose(col, best, rtol=0, atol=0), "method"])


def to_markdown(data: TableData, stats: dict[str, pd.DataFrame]) -> str:
    wide = stats["wide"]
    metrics = list(data.directions)
    head = ["method"] + [f"{m} {ARROW[data.directions[m]]}" for m in metrics] + ["mean rank ↓", "s/sample", "fwd+bwd units"]
    lines = [f"**{data.table}**: model `{data.model}` on `{data.dataset}`"
             + (f" (test accuracy {data.accuracy:.3f})" if data.accuracy is not None else "")
             + f", {int(data.scores['sample'].nunique())} samples. Mean over samples; best in bold; "
             "↑/↓: higher/lower is better; (k NaN): samples with an undefined score.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = {m: _best(wide, m, data.directions[m]) for m in metrics}
    for _, row in wide.iterrows():
        cells = [row["method"]]
        for m in metrics:
            v = row.get(m, np.nan)
            cell = _fmt(float(v))
            if row["method"] in best[m]:
                cell = f"**{cell}**"
            n_nan = row.get(f"{m}_n_nan", 0)
            if isinstance(n_nan, (int, np.integer, float)) and not pd.isna(n_nan) and n_nan > 0:
                cell += f" ({int(n_nan)} NaN)"
            cells.append(cell)
        cells += [_fmt(float(row["mean_rank"])), _fmt(float(row["seconds_per_sample"] or np.nan)),
                  _fmt(float(row["forward_backward_units"] or np.nan))]
        lines.append("| " + " | ".join(cells) + " |")
    fr = stats["friedman"]
    if len(fr):
        lines += ["", "Friedman test across methods (samples as blocks): " + "; ".join(
            f"{r.metric} p={_fmt(r.pvalue)}" + (f" ({r.note})" if r.note else "") for r in fr.itertuples())]
    wx = stats["wilcoxon"]
    if len(wx):
        lines += ["", f"Wilcoxon signed-rank, `{REFERENCE}` vs each method, Holm-corrected per metric "
                  "(+: backtrace better, -: worse, =: no difference at 0.05):", "",
                  "| method | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
        for method in method_order(list(wx["method"].unique())):
            cells = [method]
            for m in metrics:
                r = wx[(wx["method"] == method) & (wx["metric"] == m)]
                if not len(r) or pd.isna(r["pvalue_holm"].iloc[0]):
                    cells.append("n/a")
                    continue
                p = float(r["pvalue_holm"].iloc[0])
                mark = "=" if p >= 0.05 else ("+" if bool(r["reference_better"].iloc[0]) else "-")
                cells.append(f"{mark} p={_fmt(p)}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    return s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def to_latex(data: TableData, stats: dict[str, pd.DataFrame]) -> str:
    wide = stats["wide"]
    metrics = list(data.directions)
    best = {m: _best(wide, m, data.directions[m]) for m in metrics}
    cols = "l" + "r" * (len(metrics) + 2)
    out = [r"\begin{tabular}{" + cols + "}", r"\toprule",
           " & ".join(["Method"] + [f"{_tex_escape(m)} {TEX_ARROW[data.directions[m]]}" for m in metrics]
                      + [r"Mean rank $\downarrow$", "s/sample"]) + r" \\", r"\midrule"]
    for _, row in wide.iterrows():
        cells = [_tex_escape(row["method"])]
        for m in metrics:
            cell = _fmt(float(row.get(m, np.nan)))
            cells.append(rf"\textbf{{{cell}}}" if row["method"] in best[m] else cell)
        cells += [_fmt(float(row["mean_rank"])), _fmt(float(row["seconds_per_sample"] or np.nan))]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    caption = f"% {data.table}: model {data.model} on {data.dataset}; mean over samples, best in bold."
    return caption + "\n" + "\n".join(out) + "\n"


def heatmap_grid(data: TableData, path: Path, n_rows: int = 6) -> Optional[Path]:
    """Samples as rows, the input then each method as columns; signed maps on a diverging scale
    centred at zero, unsigned ones on a sequential scale; each cell scaled to its own max |value|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = method_order(list(data.folders))
    arrays = {m: np.load(data.folders[m] / "arrays.npz") for m in methods}
    first = next((a for a in arrays.values() if "inputs" in a), None)
    if first is None:
        return None
    inputs = first["inputs"][:n_rows]
    n = len(inputs)
    fig, axes = plt.subplots(n, len(methods) + 1, figsize=(1.6 * (len(methods) + 1), 1.6 * n), squeeze=False)
    for i in range(n):
        img = inputs[i]
        img = img[0] if img.shape[0] == 1 else np.transpose((img - img.min()) / (np.ptp(img) + 1e-12), (1, 2, 0))
        axes[i, 0].imshow(img, cmap="gray" if img.ndim == 2 else None)
        for j, m in enumerate(methods, start=1):
            a = arrays[m]["attributions"][i]
            a = a.reshape(a.shape[-2:]) if a.ndim == 3 else a
            scale = float(np.abs(a).max()) or 1.0
            if data.signed.get(m, True):
                axes[i, j].imshow(a, cmap="bwr", vmin=-scale, vmax=scale)
            else:
                axes[i, j].imshow(a, cmap="Reds", vmin=0, vmax=scale)
    for j, title in enumerate(["input"] + methods):
        axes[0, j].set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{data.table}: {data.model} on {data.dataset}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_tables(results_dir: str | Path, out_dir: str | Path, only: Optional[str] = None) -> list[Path]:
    written = []
    out = Path(out_dir)
    for data in collect(results_dir):
        if only and data.table != only:
            continue
        stats = build(data)
        tables = out / "tables"
        tables.mkdir(parents=True, exist_ok=True)
        md = to_markdown(data, stats)
        (tables / f"{data.name}.md").write_text(md)
        stats["wide"].to_csv(tables / f"{data.name}.csv", index=False)
        (tables / f"{data.name}.tex").write_text(to_latex(data, stats))
        written += [tables / f"{data.name}.{ext}" for ext in ("md", "csv", "tex")]
        if data.modality == "image":
            fig = heatmap_grid(data, out / "figures" / f"{data.name}_heatmaps.png")
            if fig:
                written.append(fig)
        print(md)
    return written


def update_readme(readme: Path, tables_dir: Path) -> None:
    """Replace each ``<!-- table:NAME -->...<!-- /table -->`` block with the generated table."""
    text = readme.read_text()

    def repl(match: re.Match[str]) -> str:
        md = tables_dir / f"{match.group(1)}.md"
        body = md.read_text() if md.exists() else "(not generated yet)\n"
        return f"<!-- table:{match.group(1)} -->\n{body}<!-- /table -->"

    readme.write_text(re.sub(r"<!-- table:([\w-]+) -->.*?<!-- /table -->", repl, text, flags=re.S))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default="results/runs")
    parser.add_argument("--out", default="results")
    parser.add_argument("--table", default=None, help="only this table (e.g. paper_tabular)")
    parser.add_argument("--readme", default=None, help="also refresh the table blocks of this README")
    args = parser.parse_args(argv)
    written = write_tables(args.results_dir, args.out, args.table)
    if not written:
        print(f"error: no table records under {args.results_dir}; run e.g. "
              "`python run.py -m +experiment=paper_tabular` first", file=sys.stderr)
        return 2
    if args.readme:
        update_readme(Path(args.readme), Path(args.out) / "tables")
    print("wrote:\n" + "\n".join(f"  {p}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
