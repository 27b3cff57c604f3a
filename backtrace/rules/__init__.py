"""Relevance rules, one per op kind; importing this package fills :data:`RULES`."""
from __future__ import annotations

import importlib
import importlib.util

from backtrace.rules import linear, merge, pooling, shape  # noqa: F401  (register on import)
from backtrace.rules.base import RULES, EvalOptions, Rule, register  # noqa: F401

# Rules for ConvTranspose, Embedding(Bag), LSTM, normalisations, attention and masks live in their own modules.
for _name in ("conv_transpose", "embedding", "recurrent", "norm_layer", "attention", "masking"):
    if importlib.util.find_spec(f"backtrace.rules.{_name}") is not None:
        importlib.import_module(f"backtrace.rules.{_name}")
