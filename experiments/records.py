"""Run records: one folder per config hash, written atomically, read back by the table writer.

A record folder holds ``record.json`` (resolved config, hash, versions, accuracy, timings,
aggregate score and direction per metric), ``scores.csv`` (one row per explained sample) and
``arrays.npz`` (the attributions and, for images, the inputs, for figures). It is built in a
temporary folder and renamed into place, so a killed run leaves no half record.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from experiments.training import stable_hash

# Settings that change where or how fast a run happens, not what it computes.
NON_SEMANTIC = ("results_dir", "cache_dir", "force", "device", "batch_size", "threads")
PACKAGES = ("torch", "numpy", "captum", "quantus", "shap", "lime", "hydra-core", "pandas",
            "scikit-learn", "scipy", "backtrace-bench")


def config_hash(cfg: DictConfig) -> str:
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    return stable_hash({k: v for k, v in data.items() if k not in NON_SEMANTIC and k != "hydra"})


def record_path(results_dir: str | Path, chash: str) -> Path:
    return Path(results_dir) / chash


def record_exists(results_dir: str | Path, chash: str) -> bool:
    return (record_path(results_dir, chash) / "record.json").is_file()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_record(results_dir: str | Path, chash: str, record: dict[str, Any], scores: pd.DataFrame,
                 arrays: dict[str, np.ndarray]) -> Path:
    """Write the record into a temporary sibling folder, then rename it into place."""
    root = Path(results_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = record_path(root, chash)
    tmp = root / f".tmp-{chash}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        scores.to_csv(tmp / "scores.csv", index=False)
        np.savez_compressed(tmp / "arrays.npz", **arrays)
        with open(tmp / "record.json", "w") as f:
            json.dump(record, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # force=true: move the old record aside, then drop it
            old = root / f".old-{chash}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def iter_records(results_dir: str | Path) -> Iterator[tuple[dict[str, Any], pd.DataFrame, Path]]:
    """Every complete record under ``results_dir`` (temporary folders are skipped)."""
    root = Path(results_dir)
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not (folder / "record.json").is_file():
            continue
        with open(folder / "record.json") as f:
            record = json.load(f)
        scores = pd.read_csv(folder / "scores.csv")
        yield record, scores, folder
