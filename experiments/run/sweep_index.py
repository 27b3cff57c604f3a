"""The sweep index: one line per cell of a multirun in ``<sweep dir>/index.csv``.

Columns: ``job`` (Hydra's job index), ``overrides`` (the cell's command-line overrides),
``status`` (``ok``: a record was written; ``skipped``: a valid record existed; ``error``: the cell
failed, ``message`` says why), ``record`` (the record folder), ``seconds`` (the cell's wall time)
and ``message``. Each cell appends its own line when it ends, in whichever process the launcher
ran it; parallel workers take turns on a lock file, so lines never interleave. When the sweep
ends (:class:`SweepIndexCallback`, in the launching process) the file is sorted by job index and
its path printed with a count per status, after a compact table of the cells' mean scores (one
row per cell, named by the overrides that differ between cells; one column per metric).
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Optional

import pandas as pd
from filelock import FileLock
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments.run.launchers import hydra_runtime, in_sweep
from experiments.run.text_table import text_table

INDEX_NAME = "index.csv"
COLUMNS = ("job", "overrides", "status", "record", "seconds", "message")
STATUSES = ("ok", "skipped", "error")


def index_path(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / INDEX_NAME


def append_line(path: Path, row: dict[str, Any]) -> None:
    """Append one CSV row (with the header if the file is new), holding ``<path>.lock`` meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    with FileLock(str(path) + ".lock"):
        if not path.exists() or path.stat().st_size == 0:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in COLUMNS})
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(buf.getvalue())
            fh.flush()


def record_cell(status: str, record: Optional[Path], seconds: float, message: str = "") -> Optional[Path]:
    """Add this cell's line to its sweep's index; nothing outside a multirun. Returns the index path."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; valid choices: {', '.join(STATUSES)}")
    if not in_sweep():
        return None
    hc = hydra_runtime()
    path = index_path(hc.sweep.dir)
    append_line(path, {"job": int(hc.job.num), "overrides": " ".join(hc.overrides.task), "status": status,
                       "record": "" if record is None else str(record), "seconds": f"{seconds:.3f}",
                       "message": " ".join(message.split())})
    return path


def read_index(path: str | Path) -> pd.DataFrame:
    """The index as a table sorted by job; ``record`` and ``message`` as strings ('' when empty)."""
    df = pd.read_csv(path, dtype={"overrides": str, "record": str, "message": str}, keep_default_na=False)
    return df.sort_values("job", kind="stable").reset_index(drop=True)


def finish(path: Path) -> str:
    """Sort the index by job (under the lock) and return a one-line summary of it."""
    with FileLock(str(path) + ".lock"):
        df = read_index(path)
        df.to_csv(path, index=False, lineterminator="\n")
    Path(str(path) + ".lock").unlink(missing_ok=True)  # every cell has ended: nobody waits on it
    counts = df["status"].value_counts()
    return (f"sweep index: {path} ({', '.join(f'{int(counts.get(s, 0))} {s}' for s in STATUSES)}; "
            f"{len(df)} cells)")


def _label(overrides: list[list[str]]) -> list[str]:
    """Each cell's name: its overrides less those every cell shares; the bare value where the cells
    differ in one setting only (``ig`` for ``method=ig``)."""
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    own = [[t for t in o if t not in common] for o in overrides]
    keys = {t.split("=", 1)[0] for o in own for t in o}
    if len(keys) == 1 and all(len(o) == 1 for o in own):
        return [o[0].split("=", 1)[1] for o in own]
    return [" ".join(o) or "(all alike)" for o in own]


def _number(value: object) -> str:
    """Three significant digits (``7.04e-04``, ``0.921``), so that small values never print as 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(float(value)):
        return "nan"
    value = float(value)
    return f"{value:.2e}" if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4) else f"{value:.3g}"


def cells_table(df: pd.DataFrame) -> str:
    """The sweep's cells x metrics table of mean scores, read from each cell's ``record.json``
    (a failed cell: ``error`` in its first column)."""
    labels = _label([str(o).split() for o in df["overrides"]])
    rows: list[dict[str, str]] = []
    metrics: list[str] = []
    for label, (_, line) in zip(labels, df.iterrows()):
        row = {"cell": label}
        record_file = Path(str(line["record"])) / "record.json" if line["record"] else None
        if line["status"] == "error" or record_file is None or not record_file.is_file():
            row["status"] = "error"
        else:
            row["status"] = str(line["status"])
            for metric, info in json.loads(record_file.read_text()).get("metrics", {}).items():
                if metric not in metrics:
                    metrics.append(metric)
                arrow = "↑" if info.get("direction") == "higher" else "↓"
                row[f"{metric} {arrow}"] = _number(info.get("mean"))
        rows.append(row)
    columns = list(dict.fromkeys(["cell", "status"] + [c for row in rows for c in row]))
    return text_table(rows, columns)


class SweepIndexCallback(Callback):
    """Hydra callback (``hydra.callbacks.sweep_index`` in configs/config.yaml): sorts the index
    and prints where it is once every cell of the sweep has ended."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = index_path(config.hydra.sweep.dir)
        if path.exists():
            summary = finish(path)
            print(cells_table(read_index(path)))
            print(summary)
