"""A published table's evidence: what each of its cells was computed from, next to the table.

Publishing a table (``python -m experiments.paper_tables --publish``) writes, besides
``tables/<name>.{md,csv,tex}`` and its figures, ``evidence/<name>/``:

- ``evidence.json``: the table, its model (name, cache key, weight hash), data, sample count, one
  entry per cell (row label, folder, config hash) and the sha256 of the table files it backs;
- ``<cell>/record.json`` and ``<cell>/scores.csv``: the cell's run record and its per-sample
  scores, byte for byte as the run wrote them, so that every mean, interval and paired test of the
  table can be recomputed, and every cell rerun from its resolved config
  (``python -m experiments.reproduce <name> --check``);
- ``<cell>/arrays.npz`` (attributions, targets, inputs) where the file is small: at most
  :data:`ARRAYS_MAX_BYTES` (the tabular and text tables' maps; image tables' are left out).

A table and its evidence are never out of step: everything is written into a hidden staging folder
under the publish folder, then moved into place under a lock, the old evidence and table files
set aside first and put back if a move fails. ``evidence.json`` keeps the hash of each table file,
so a table that was changed or replaced without its evidence is found by ``--check``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from filelock import FileLock

from experiments.errors import TableError
from experiments.report.table_data import TableData
from experiments.run.config import home


def published_root() -> Path:
    """Where published tables, figures, the report page and evidence live (``--publish``):
    ``results/`` under the harness's home (the current folder, or ``$BACKTRACE_BENCH_HOME``; in a
    checkout run from its root, the committed ``results/``)."""
    return home() / "results"


MANIFEST = "evidence.json"
# A cell's arrays.npz travels with the evidence only up to this size: the attributions of a
# tabular table (143 rows x 30 features) or a text table (64 sentences x 64 tokens) take a few
# tens of KiB; an image table's (128 maps of 28x28, plus the inputs) take about 1 MiB per cell.
ARRAYS_MAX_BYTES = 256 * 1024
STAGING = ".publish-"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cell_folder(variant: str, taken: set[str]) -> str:
    """A folder name for a row: ``ig (n_steps=4)`` -> ``ig_n_steps_4``, unique within the table."""
    base = re.sub(r"[^A-Za-z0-9]+", "_", variant).strip("_").lower() or "cell"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder where it lies under it (how a README names it)."""
    full, here = path.resolve(), Path.cwd().resolve()
    return full.relative_to(here).as_posix() if full.is_relative_to(here) else str(full)


def evidence_line(name: str, folder: Path) -> str:
    """The sentence under a published table that names its evidence and the check."""
    published = folder.parent.resolve() == (published_root() / "evidence").resolve()
    root = "" if published else f" --evidence {shown_path(folder.parent)}"
    return (f"Evidence: `{shown_path(folder)}/` holds each cell's `record.json` and per-sample `scores.csv` "
            f"(the model's weight hash included); `python -m experiments.reproduce {name} --check{root}` reruns "
            f"the cells and compares.")


def _model_of(data: TableData) -> dict[str, Any]:
    records = [json.loads((folder / "record.json").read_text()) for folder in data.folders.values()]
    model = records[0]["model"]
    weights = sorted({r["model"].get("weights_sha256") for r in records}, key=str)
    if len(weights) > 1:
        raise TableError(f"table {data.name!r} holds cells of different model weights ({', '.join(map(str, weights))}); "
                         f"nothing published")
    entry = {"name": model["name"], "cache_key": model.get("cache_key"), "weights_sha256": weights[0],
             "test_accuracy": model.get("test_accuracy")}
    if model.get("test_score_name") not in (None, "test accuracy"):   # a dense model's own score (test IoU)
        entry.update(test_score=model.get("test_score"), test_score_name=model["test_score_name"])
    return entry


def write_evidence(data: TableData, folder: Path, table_files: dict[str, Path]) -> Path:
    """Write ``folder`` (which must not exist): every cell's record and scores, small arrays, and
    the manifest with the hashes of ``table_files`` (name -> file)."""
    folder.mkdir(parents=True)
    cells, taken = [], set()
    for variant, source in sorted(data.folders.items()):
        name = cell_folder(variant, taken)
        (folder / name).mkdir()
        for file in ("record.json", "scores.csv"):
            shutil.copyfile(source / file, folder / name / file)
        arrays = source / "arrays.npz"
        small = arrays.is_file() and arrays.stat().st_size <= ARRAYS_MAX_BYTES
        if small:
            shutil.copyfile(arrays, folder / name / "arrays.npz")
        record = json.loads((source / "record.json").read_text())
        cells.append({"variant": variant, "folder": name, "config_hash": record.get("config_hash"),
                      "method": record["method"]["name"], "arrays": small})
    manifest = {
        "name": data.name, "table": data.table, "model": _model_of(data), "dataset": data.dataset,
        "modality": data.modality, "n_samples": data.settings.get("n_samples"),
        "published": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "check": f"python -m experiments.reproduce {data.name} --check",   # --evidence DIR where not published
        "arrays_max_bytes": ARRAYS_MAX_BYTES,
        "table_files": {key: sha256_file(path) for key, path in sorted(table_files.items())},
        "cells": cells,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def load_manifest(folder: Path) -> dict[str, Any]:
    """A table's evidence manifest, refused in one line where it or a cell's files are missing."""
    path = folder / MANIFEST
    if not path.is_file():
        raise TableError(f"no evidence at {folder} (no {MANIFEST}); publish the table first: "
                         f"python -m experiments.paper_tables --publish --table <table>")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TableError(f"{path} does not parse ({exc})") from None
    for cell in manifest.get("cells", []):
        for file in ("record.json", "scores.csv"):
            if not (folder / cell["folder"] / file).is_file():
                raise TableError(f"evidence {folder} lacks {cell['folder']}/{file}; republish the table")
    return manifest


def table_files_problem(manifest: dict[str, Any], publish_root: Path) -> Optional[str]:
    """None when the published table files next to the evidence are the ones it backs (or are not
    there to compare), else which file differs."""
    for key, digest in manifest.get("table_files", {}).items():
        path = publish_root / key
        if path.is_file() and sha256_file(path) != digest:
            return f"{shown_path(path)} is not the table this evidence backs (sha256 differs)"
    return None


def _move_in(staged: Path, target: Path, aside: Path, moved: list[tuple[Path, Optional[Path]]]) -> None:
    """Move ``staged`` to ``target``, setting an existing ``target`` aside first; remember both."""
    old = None
    if target.exists():
        old = aside / f"{len(moved)}-{target.name}"
        os.replace(target, old)
    target.parent.mkdir(parents=True, exist_ok=True)
    moved.append((target, old))
    os.replace(staged, target)


def _roll_back(moved: list[tuple[Path, Optional[Path]]]) -> None:
    for target, old in reversed(moved):
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink()
        if old is not None:
            os.replace(old, target)


def publish(name: str, out: Path, write: Callable[[Path], dict[str, list[Path]]]) -> list[Path]:
    """Stage a table's files with ``write(stage)`` (which returns the staged paths by kind:
    ``tables``, ``figures``, ``evidence``; paths relative to ``stage`` are kept under ``out``), then
    move them into ``out`` together. Returns the published paths."""
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out / ".publish.lock")):
        for stale in out.glob(f"{STAGING}*"):          # a publish killed before it moved anything in
            shutil.rmtree(stale, ignore_errors=True)
        stage = out / f"{STAGING}{name}-{uuid.uuid4().hex[:8]}"
        aside = stage / ".aside"
        aside.mkdir(parents=True)
        moved: list[tuple[Path, Optional[Path]]] = []
        try:
            staged = write(stage)
            # the evidence first, then the files it names: a reader never sees a table newer than it
            for path in staged.get("evidence", []) + staged.get("tables", []) + staged.get("figures", []):
                _move_in(path, out / path.relative_to(stage), aside, moved)
        except BaseException:
            _roll_back(moved)
            raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return [target for target, _ in moved]
