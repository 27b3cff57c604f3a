"""Ops that merge several tensors elementwise: residual add and gating multiply."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from backtrace.ir import Node
from backtrace.rules.adjoint import sum_to_shape
from backtrace.rules.base import (EvalOptions, LinearInRelevanceRule, PairRelevance, Relevance, Rule,
                                  register, safe_div, safe_div_into)
from backtrace.rules.linear import contrast_coefficients


def _terms(node: Node, inputs: Sequence[Tensor]) -> list[Tensor]:
    signs = node.params.get("signs") or (1,) * len(inputs)
    return [t if s == 1 else s * t for s, t in zip(signs, inputs)]


@register("add")
class AddRule(Rule):
    """``a_1 + a_2 + ... (+ c)``: per element, ``R`` is split over the summands in proportion to
    ``|a_k|`` (default) or by the add rule's sign split (contrastive). A python-number
    summand ``c`` (``params["constant"]``) acts as a bias: its share is dropped. Subtraction
    is an add of the negated operand (``params["signs"]``). Broadcast operands get the sum
    over the broadcast dimensions."""

    reads_output = False

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        mags = [t.abs() for t in inputs]                       # |s a| = |a|: the signs do not matter here
        const = abs(node.params.get("constant", 0.0))
        den = mags[0] + mags[1] if len(mags) > 1 else mags[0] + const      # a new tensor of the output's shape
        for m in mags[2:]:
            den = den.add_(m) if torch.broadcast_shapes(den.shape, m.shape) == den.shape else den + m
        if const and len(mags) > 1:
            den.add_(const)
        c = safe_div_into(relevance, den)
        return [sum_to_shape(m.mul_(c) if m.shape == c.shape else m * c, t.shape) for m, t in zip(mags, inputs)]

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        terms = _terms(node, inputs)
        pos_parts = [t.clamp(min=0) for t in terms]
        neg_parts = [-t.clamp(max=0) for t in terms]
        shape = relevance[0].shape
        pos = sum(p.expand(shape) for p in pos_parts)
        neg = sum(n.expand(shape) for n in neg_parts)
        const = node.params.get("constant", 0.0)
        bias = torch.full_like(pos, float(const)) if const else None
        a_pp, a_pn, a_np, a_nn = contrast_coefficients(pos, neg, bias, relevance[0], relevance[1], one_sided=True)
        return [(sum_to_shape(p * a_pp + n * a_np, t.shape), sum_to_shape(p * a_pn + n * a_nn, t.shape))
                for p, n, t in zip(pos_parts, neg_parts, inputs)]


@register("mul")
class MulRule(LinearInRelevanceRule):
    """Gate ``a * b``: ``R_a = |ab - a| / (|ab - a| + |ab - b|) R`` and ``R_b`` likewise (the
    reference's multiply rule, used for LSTM gates and squeeze-excite)."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        a, b = inputs
        prod = a * b
        da, db = (prod - a).abs(), (prod - b).abs()
        den = da + db
        return [sum_to_shape(safe_div(da, den) * relevance, a.shape),
                sum_to_shape(safe_div(db, den) * relevance, b.shape)]


@register("scale")
class ScaleRule(LinearInRelevanceRule):
    """Multiplication/division by a constant, negation, dtype casts: relevance passes to the
    one data input (the first); constant operands take none."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        return [relevance] + [None] * (len(inputs) - 1)
