"""Small run records in the runner's format, one call per cell, for the table writer, report,
evidence and records-browser tests: a tabular table (two metrics) whose config can be varied."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from experiments.run.records import write_record
from experiments.zoo.training import stable_hash

METRICS = {"faith": "higher", "complexity": "lower"}


def write_cell(root: Path, method: str, n: int = 12, table: str = "toy", offset: float = 0.0,
               config: Optional[dict[str, Any]] = None, weights: Optional[str] = "a" * 64,
               big_arrays: bool = False, created: str = "2026-01-01T00:00:00+00:00", model: str = "mlp") -> Path:
    """One cell's record under ``root`` (its folder named ``<table>-<method>-<n>``): scores that
    rise with ``offset``, config settings from ``config`` (``n_samples`` defaults to ``n``)."""
    rng = np.random.default_rng(abs(hash((method, n, offset))) % 2**32)
    cfg = {"table": table, "seed": 0, "target": "label", "output": "softmax", "n_samples": n,
           "sample_selection": "first", "channel_reduction": "sum", "metrics": {"faith": {"_target_": "x.Faith"}},
           "model": {"name": model, "train": {"epochs": 3}}, **(config or {})}
    record = {
        "config_hash": f"{table}-{method}-{n}", "config": cfg, "created": created, "n_samples": n,
        "model": {"name": model, "test_accuracy": 0.9, "cache_key": stable_hash(cfg["model"]), "weights_sha256": weights},
        "dataset": {"name": "toy_rows", "modality": "tabular", "n_classes": 2, "class_names": ["a", "b"]},
        "method": {"name": method, "signed": True, "params": {}, "budget": {}, "absent": {}, "returns": {}},
        "output": "softmax", "saturated_samples": 0,
        "runtime": {"seconds_per_sample": 0.01, "forward_backward_units": 2.0},
        "metrics": {m: {"direction": d, "mean": 0.0, "n": n, "n_nan": 0} for m, d in METRICS.items()},
    }
    scores = pd.DataFrame({"sample": np.arange(n), "label": 0, "prediction": 0, "target": 0,
                           "faith": rng.normal(offset, 0.1, n), "complexity": rng.normal(-offset, 0.1, n)})
    size = (n, 64, 64) if big_arrays else (n, 4)
    arrays = {"attributions": rng.normal(size=size), "targets": np.zeros(n, dtype=np.int64)}
    return write_record(root, str(record["config_hash"]), record, scores, arrays)
