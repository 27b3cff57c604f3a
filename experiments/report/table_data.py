"""What one results table is made of, as the table writer collects it from run records and the
figures and the report page read it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from experiments.report.variants import short


@dataclass
class TableData:
    """Everything one table is made of: the per-sample scores of each method variant and their
    context."""

    name: str
    table: str
    model: str
    dataset: str
    modality: str
    scores: pd.DataFrame                       # long: method (variant), metric, sample, score
    directions: dict[str, str]
    runtime: dict[str, dict[str, Optional[float]]]
    accuracy: Optional[float]
    folders: dict[str, Path] = field(default_factory=dict)
    signed: dict[str, bool] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)    # variant -> what it declared/returned
    metric_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)              # output, target, samples, ...
    score_name: str = "test accuracy"          # what ``accuracy`` is: a dense model's own test score (mean IoU)


def explained(data: TableData) -> str:
    """What every method of the table explains: a classifier's output for the target class, or a
    dense model's head value (with its settings)."""
    s = data.settings
    dense = s.get("dense")
    if not dense:
        return f"every method explains the **{s.get('output')}** output for the {s.get('target')} class"
    head = ", ".join(f"{k}={short(v)}" for k, v in (dense.get("head") or {}).items())
    return f"every method explains **{dense.get('explains')}** (the {dense.get('task')} head's value, {head})"


def explained_short(data: TableData) -> str:
    """The method notes' "explains" cell: the output function, or a dense model's head value (its
    output function is the identity; the heading says which scalar the head computes)."""
    dense = data.settings.get("dense")
    return f"{dense.get('task')} head value" if dense else str(data.settings.get("output"))
