"""What one results table is made of, as the table writer collects it from run records and the
figures and the report page read it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd


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
