"""One static page of every results table: ``python -m experiments.report``.

Reads the run records under ``--results-dir`` the way ``experiments.report.paper_tables`` does (the same
tables and statistics; a table that mixes settings is left out with a one-line warning naming the
setting and the ``--where`` filter that splits it) and writes ``index.html`` with its images next to
it: into ``<results-dir>/report/``, or ``--out``; the published ``results/report/`` only with ``--publish``.
Per table: its heading and run settings, the table with intervals, bold best sets and the paired
tests' marks, the method notes (budgets, absent values, signs), the sample figure (heatmap grid
for images, token heatmap for text), the mean-rank chart across metrics and the cost chart.
Static files only: open ``index.html`` in a browser, no server needed.
"""
from __future__ import annotations

import argparse
import html
import json
import re
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from experiments.errors import ConfigError, TableError
from experiments.report import figures
from experiments.report.methods import method_order, method_title
from experiments.report.evidence import published_root
from experiments.report.paper_tables import build, collect, to_markdown
from experiments.report.selection import Filter, parse_filters
from experiments.report.table_data import TableData
from experiments.run.config import home

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1500px;
       padding: 0 24px 48px; color: #1b1b1b; line-height: 1.45; }
h1 { margin-top: 24px; } h2 { margin-top: 40px; border-top: 2px solid #ddd; padding-top: 16px; }
nav ul { columns: 3; } code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
table { border-collapse: collapse; margin: 10px 0; font-size: 12.5px; }
th, td { border: 1px solid #d7d7d7; padding: 3px 6px; vertical-align: top; }
th { background: #f4f6f8; }
.table-wrap { overflow-x: auto; max-width: 100%; }
.table-wrap th:first-child, .table-wrap td:first-child { position: sticky; left: 0; z-index: 1; background: #fff;
       box-shadow: 1px 0 0 #d7d7d7; }
.table-wrap th:first-child { background: #f4f6f8; }
.table-wrap td.value { white-space: nowrap; }
td.better { background: #e3f4e3; } td.worse { background: #fbe3e3; } td.ambiguous { background: #fff4d6; }
dl.settings { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; font-size: 13px; }
dl.settings dt { font-weight: 600; } dl.settings dd { margin: 0; }
figure { margin: 14px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 12.5px; color: #444; }
details summary { cursor: pointer; font-size: 13px; margin: 6px 0; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.charts figure { flex: 1 1 520px; max-width: 760px; } .charts figure img { width: 100%; }
"""
HEATMAP_DPI = 85          # the heatmap grid PNG; its text is sized for it (figures.legible_pt)
MARK_CLASS = {"+": "better", "-": "worse", "~": "ambiguous"}
# A cell that holds a number: a mean with its interval, a paired test's outcome (its mark, then p=),
# a NaN count; such a cell never wraps inside it (the table scrolls instead).
VALUE_CELL = re.compile(r"<td>((?:<strong>)?(?:[+\-~=] p=)?[-+]?(?:\d|nan\b|n/a\b|inf\b).*?)</td>")


def _markdown(text: str) -> str:
    """paper_tables' markdown (heading, table, notes, tests) as HTML, via markdown-it."""
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    rendered = rendered.replace("<table>", '<div class="table-wrap"><table>').replace("</table>", "</table></div>")
    rendered = VALUE_CELL.sub(lambda m: f'<td class="value">{m.group(1)}</td>', rendered)
    # the Wilcoxon cells start with their outcome mark: colour them
    return re.sub(r'<td class="value">([+\-~]) p=',
                  lambda m: f'<td class="value {MARK_CLASS[m.group(1)]}">{m.group(1)} p=', rendered)


def _first_record(data: TableData) -> dict[str, Any]:
    folder = data.folders[method_order(list(data.folders))[0]]
    return json.loads((folder / "record.json").read_text())


def run_settings(data: TableData) -> list[tuple[str, str]]:
    """What every cell of the table shared, as (setting, value) rows."""
    record = _first_record(data)
    cfg = record.get("config") or {}
    model = record.get("model") or {}
    s = data.settings
    n = f"{s.get('n_samples')} explained"
    if record.get("n_samples_requested") not in (None, s.get("n_samples")):
        n += f" (asked for {record['n_samples_requested']}; the test split holds fewer)"
    acc = f", {data.score_name} {data.accuracy:.3f}" if data.accuracy is not None else ""
    rows = [("model", f"{data.model} (cache key {model.get('cache_key', '-')}{acc})"),
            ("dataset", f"{data.dataset} ({data.modality})"),
            ("samples", n + (f", selection {cfg['sample_selection']}" if cfg.get("sample_selection") else "")),
            *([("output explained", str(s.get("output"))), ("target", f"{s.get('target')} class")]
              if not s.get("dense") else
              [("value explained", f"{s['dense'].get('explains')} (output {s.get('output')})"),
               ("head", ", ".join(f"{k}={v}" for k, v in (s["dense"].get("head") or {}).items()))]),
            ("seed", str(cfg.get("seed", "-"))), ("channel reduction", str(cfg.get("channel_reduction", "-"))),
            ("methods", ", ".join(method_title(m) for m in method_order(list(data.folders))))]
    return rows


def metric_settings(data: TableData) -> list[tuple[str, str]]:
    """Each metric's direction, sample count and parameters, as (metric, description) rows."""
    rows = []
    for metric, info in data.metric_settings.items():
        params = {k: v for k, v in (info.get("params") or {}).items() if k != "_target_"}
        rows.append((metric, f"{data.directions[metric]} is better; n={info['n']}; "
                     + (", ".join(f"{k}={json.dumps(v)}" for k, v in params.items()) or "no parameters")))
    return rows


def _settings_list(rows: list[tuple[str, str]]) -> str:
    return '<dl class="settings">' + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows) + "</dl>"


def _figure(src: Optional[Path], caption: str, out: Path) -> str:
    if src is None:
        return ""
    return (f'<figure><img src="{html.escape(src.relative_to(out).as_posix())}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def table_section(data: TableData, stats: dict[str, Any], out: Path) -> str:
    """One table's part of the page; its images are written into ``out``."""
    name = html.escape(data.name)
    parts = [f'<section id="table-{name}" class="results-table"><h2>{name}</h2>',
             "<h3>Run settings</h3>", _settings_list(run_settings(data)),
             f"<details><summary>Metric settings ({len(data.metric_settings)} metrics)</summary>"
             + _settings_list(metric_settings(data)) + "</details>",
             "<h3>Table</h3>", _markdown(to_markdown(data, stats, title=method_title))]
    if data.modality == "image":
        rows = ("index, IoU of the prediction, explained value" if data.settings.get("dense")
                 else "index, class, target, prediction")
        parts.append(_figure(figures.heatmap_grid(data, out / f"{data.name}_heatmaps.png", n_rows=4, dpi=HEATMAP_DPI),
                             f"The first samples (rows: {rows}) and each method's map; {figures.SCALE_NOTE}.", out))
    elif data.modality == "text":
        parts.append(_figure(figures.token_heatmap(data, out / f"{data.name}_tokens.png"),
                             "Token relevance of the first samples, one line per method.", out))
        parts.append(figures.token_heatmap_html(data))
    charts = [_figure(figures.rank_chart(data, out / f"{data.name}_ranks.png"),
                      "Mean rank across the table's metrics with a bootstrap 95% interval over samples.", out),
              _figure(figures.cost_chart(data, out / f"{data.name}_cost.png"),
                      "Seconds per explained sample and the same time in forward+backward passes of the model.", out)]
    parts.append('<h3>Ranks and cost</h3><div class="charts">' + "".join(charts) + "</div>")
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def report_folder(results_dir: str | Path, out: Optional[str | Path], publish: bool) -> Path:
    """``out``, else ``<results_dir>/report``; with ``publish``, ``out`` or the published
    ``results/report`` (refused without it)."""
    if publish:
        return Path(out) if out is not None else published_root() / "report"
    folder = Path(out) if out is not None else Path(results_dir) / "report"
    if folder.resolve() == (published_root() / "report").resolve():
        raise TableError(f"--out {folder} holds the published report; add --publish to write there")
    return folder


def write_report(results_dir: str | Path, out: str | Path, reference: Optional[str] = None,
                 where: Sequence[Filter] = ()) -> Path:
    """Build every table (a table that mixes settings is left out with a warning, as paper_tables
    does when asked for every table), then write the page and its images."""
    built = [(data, build(data, reference)) for data in collect(results_dir, where=where, skip_mixed=True)]
    built.sort(key=lambda b: (not b[0].table.startswith("paper_"), b[0].name))   # the paper's tables first
    if not built:
        raise TableError(f"no records under {results_dir}; run e.g. `python run.py -m +experiment=paper_tabular` first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = [table_section(data, stats, out) for data, stats in built]
    # the published page names the published evidence, not the folder of records it was made from
    published = out.resolve() == (published_root() / "report").resolve()
    source = ("the run records of the published tables (their per-sample evidence: <code>results/evidence/</code>)"
              if published else f"the run records under <code>{html.escape(str(results_dir))}</code>")
    toc = "".join(f'<li><a href="#table-{html.escape(d.name)}">{html.escape(d.name)}</a>: '
                  f"{html.escape(d.model)} on {html.escape(d.dataset)}</li>" for d, _ in built)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>backtrace-bench results</title>
<style>{CSS}{figures.TOKEN_CSS}</style></head>
<body>
<h1>backtrace-bench results</h1>
<p>Every table from {source}: mean [bootstrap 95%
interval] per method and metric on the samples every method scored, bold where a method cannot be told apart from
the best; Friedman tests across methods and Holm-corrected Wilcoxon signed-rank tests of the reference method
against each other one (green: the reference is better, red: worse).</p>
<nav><ul>{toc}</ul></nav>
{''.join(sections)}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page)
    return index


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default=str(home() / "results" / "runs"),
                        help="records to report (any sweep's results_dir)")
    parser.add_argument("--out", default=None,
                        help="folder of index.html and its images (default: <results-dir>/report; with --publish: "
                             "results/report)")
    parser.add_argument("--publish", action="store_true", help="write the published results/report (or --out)")
    parser.add_argument("--where", nargs="+", default=[], metavar="KEY=VALUE",
                        help="only the records that match, e.g. n_samples=16 (splits a mixed table)")
    parser.add_argument("--reference", default=None,
                        help="the method the paired tests compare every other against (default: backtrace when present)")
    args = parser.parse_args(argv)
    try:
        index = write_report(args.results_dir, report_folder(args.results_dir, args.out, args.publish),
                             args.reference, parse_filters(args.where))
    except (TableError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
