"""Relevance rules, one per op kind of the catalogue (:mod:`backtrace.ops`); importing this
package registers them all in :data:`RULES`."""
from __future__ import annotations

from backtrace.rules import (attention, conv_transpose, embedding, linear, masking, merge,  # noqa: F401
                             norm_layer, pooling, recurrent, shape)
from backtrace.rules.base import RULES, EvalOptions, Rule, register  # noqa: F401
