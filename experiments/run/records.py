"""Run records: one folder per config hash, written atomically, validated when read.

A record folder holds ``record.json`` (resolved config, hash, versions, accuracy, timings,
aggregate score and direction per metric), ``scores.csv`` (one row per explained sample) and
``arrays.npz`` (the attributions and, for images, the inputs, for figures).

Faults this module is built to survive:

- A record counts only if it validates (:func:`record_problem`): all three files present and
  readable, ``record.json`` parses and holds the expected keys, one score row and one attribution
  per recorded sample. An invalid record is reported and recomputed; readers skip it with one line.
- A record is built in a hidden ``.tmp-<hash>-*`` sibling and renamed into place. A rerun moves
  the old record aside (``.old-<hash>-*``) before renaming the new one in and deletes it only
  afterwards, so a writer killed at any instant leaves one complete record, under its name or
  aside; :func:`recover` puts an aside record back and removes what killed writers left.
- Writers of one cell hold a lock file (``.lock-<hash>``, ``filelock``), so two processes
  forcing the same cell take turns instead of colliding; a leftover folder is stale exactly
  when its cell's lock is free, whatever the age or pid of whoever made it.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from experiments.zoo.training import stable_hash

# Settings that change where or how fast a run happens, not what it computes; and the name of the
# method config chosen (two configs of identical content compute the same cell).
NON_SEMANTIC = ("results_dir", "cache_dir", "force", "device", "batch_size", "threads", "method_config")
PACKAGES = ("torch", "numpy", "captum", "quantus", "shap", "lime", "hydra-core", "pandas",
            "scikit-learn", "scipy", "backtrace-bench")
RECORD_FILES = ("record.json", "scores.csv", "arrays.npz")
RECORD_KEYS = ("config_hash", "config", "created", "model", "dataset", "method", "n_samples", "runtime", "metrics")
TMP, OLD, LOCK = ".tmp-", ".old-", ".lock-"
# What the table writer and the report page put next to the records they read (``<results_dir>/tables``,
# ...): never records, so readers pass them by without a warning.
OUTPUT_FOLDERS = ("tables", "figures", "report")


class InvalidRecord(ValueError):
    """A record folder that is not a complete record; the message says what is wrong."""


def config_hash(cfg: DictConfig) -> str:
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    return stable_hash({k: v for k, v in data.items() if k not in NON_SEMANTIC and k != "hydra"})


def record_path(results_dir: str | Path, chash: str) -> Path:
    return Path(results_dir) / chash


def load_record(folder: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """``(record, scores)`` of a complete record; :class:`InvalidRecord` naming the fault otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidRecord("no record folder")
    missing = [name for name in RECORD_FILES if not (folder / name).is_file()]
    if missing:
        raise InvalidRecord(f"missing {', '.join(missing)}")
    try:
        record = json.loads((folder / "record.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRecord(f"record.json does not parse ({exc})") from None
    if not isinstance(record, dict):
        raise InvalidRecord("record.json does not hold an object")
    lacking = [k for k in RECORD_KEYS if k not in record]
    if lacking:
        raise InvalidRecord(f"record.json lacks {', '.join(lacking)}")
    n = record["n_samples"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidRecord(f"record.json has n_samples={n!r}")
    if not isinstance(record["metrics"], dict):
        raise InvalidRecord("record.json metrics is not an object")
    try:
        scores = pd.read_csv(folder / "scores.csv")
    except Exception as exc:  # pandas raises several types for a cut or garbled file
        raise InvalidRecord(f"scores.csv does not parse ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    if len(scores) != n:
        raise InvalidRecord(f"scores.csv has {len(scores)} rows for n_samples={n}")
    absent = [c for c in ("sample", *record["metrics"]) if c not in scores.columns]
    if absent:
        raise InvalidRecord(f"scores.csv lacks column(s) {', '.join(absent)}")
    try:
        with np.load(folder / "arrays.npz") as arrays:
            attributions = arrays["attributions"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidRecord(f"arrays.npz is unreadable ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    if attributions.ndim < 1 or attributions.shape[0] != n:
        raise InvalidRecord(f"arrays.npz holds {attributions.shape[:1]} attributions for n_samples={n}")
    return record, scores


def record_problem(folder: str | Path) -> Optional[str]:
    """None when ``folder`` holds a complete record, else what is wrong with it (one line)."""
    try:
        load_record(folder)
    except InvalidRecord as exc:
        return str(exc)
    return None


def record_exists(results_dir: str | Path, chash: str) -> bool:
    """True only for a record that validates: a cut or partial one does not count as done."""
    return record_problem(record_path(results_dir, chash)) is None


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def cell_lock(results_dir: str | Path, chash: str, timeout: float = -1) -> FileLock:
    """The lock of one cell's record. The lock file is kept after release (unlinking a lock
    file on Unix lets two waiters lock different inodes); it is hidden, so readers ignore it."""
    return FileLock(str(Path(results_dir) / f"{LOCK}{chash}"), timeout=timeout, preserve_lock_file=True)


def _leftovers(root: Path, chash: str) -> tuple[list[Path], list[Path]]:
    tmps = [p for p in root.glob(f"{TMP}{chash}-*") if p.is_dir()]
    olds = sorted((p for p in root.glob(f"{OLD}{chash}-*") if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    return tmps, olds


def _recover_locked(root: Path, chash: str) -> None:
    """With the cell's lock held: put back an aside record if the cell has no valid one, then
    delete every temporary and aside folder of the cell (no writer is using them)."""
    final = record_path(root, chash)
    tmps, olds = _leftovers(root, chash)
    if olds and record_problem(final) is not None:
        for old in olds:
            if record_problem(old) is None:
                if final.exists():
                    trash = root / f"{TMP}{chash}-{uuid.uuid4().hex[:8]}"
                    os.replace(final, trash)
                    tmps.append(trash)
                os.replace(old, final)
                olds.remove(old)
                print(f"restored record {final} from {old.name} (left aside by an interrupted rerun)")
                break
    for folder in tmps + olds:
        shutil.rmtree(folder, ignore_errors=True)


def recover(results_dir: str | Path) -> None:
    """Clean what killed writers left under ``results_dir``: restore aside records whose cell
    has none, remove temporary and aside folders. Cells whose lock is held (a live writer) are
    left alone; a folder that cannot be locked (read-only) is left as it is."""
    root = Path(results_dir)
    if not root.is_dir():
        return
    hashes = {p.name[len(TMP):].rsplit("-", 1)[0] for p in root.iterdir()
              if p.name.startswith((TMP, OLD)) and p.is_dir()}  # TMP and OLD have the same length
    for chash in sorted(hashes):
        try:
            with cell_lock(root, chash, timeout=0):
                _recover_locked(root, chash)
        except Timeout:
            continue  # a live writer holds this cell: its folders are not leftovers
        except OSError:
            return  # not writable: nothing can be cleaned here


def write_record(results_dir: str | Path, chash: str, record: dict[str, Any], scores: pd.DataFrame,
                 arrays: dict[str, np.ndarray]) -> Path:
    """Write the record into a hidden sibling, then swap it in under the cell's lock.

    The old record (``force=true``) is renamed aside before the new one is renamed in, and
    deleted after: at every instant a complete record exists under the final or the aside name.
    """
    root = Path(results_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = record_path(root, chash)
    with cell_lock(root, chash):
        _recover_locked(root, chash)
        tmp = root / f"{TMP}{chash}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            scores.to_csv(tmp / "scores.csv", index=False)
            np.savez_compressed(tmp / "arrays.npz", **arrays)
            with open(tmp / "record.json", "w") as f:
                json.dump(record, f, indent=2, default=str)
                f.flush()
                os.fsync(f.fileno())
            old = None
            if final.exists():
                old = root / f"{OLD}{chash}-{uuid.uuid4().hex[:8]}"
                os.replace(final, old)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return final


def iter_records(results_dir: str | Path) -> Iterator[tuple[dict[str, Any], pd.DataFrame, Path]]:
    """Every complete record under ``results_dir``. Hidden folders (temporary, aside, locks) and the
    writers' output folders (:data:`OUTPUT_FOLDERS`) are not records; an invalid record is skipped
    with one line on stderr naming it and its fault."""
    root = Path(results_dir)
    if not root.is_dir():
        return
    recover(root)
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or folder.name in OUTPUT_FOLDERS or not folder.is_dir():
            continue
        try:
            record, scores = load_record(folder)
        except InvalidRecord as exc:
            print(f"warning: skipping invalid record {folder}: {exc}", file=sys.stderr)
            continue
        yield record, scores, folder
