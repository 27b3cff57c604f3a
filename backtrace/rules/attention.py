"""Self-attention: products of two activations and fused scaled dot-product attention.

The reference's BERT encoder rule, vectorised over the batch and the heads:

- ``"matmul"`` (``a @ b``, both computed from the input; batched over leading dimensions;
  ``params["recompute"]`` when the op also added a mask, as ``baddbmm`` does):
  each contribution ``a_ik b_kj`` of ``O_ij`` takes ``R_ij a_ik b_kj / stabilize(2 O_ij)``, half
  of its share for each factor: ``S = R / stabilize(2 O)``, ``R_a = (S b^T) * a``,
  ``R_b = (a^T S) * b``. ``stabilize(v) = v + 1e-6 sign(v)`` as in the reference; ``O = 0``
  gives nothing.
- ``"attention"`` (fused ``scaled_dot_product_attention(q, k, v, mask)``): the eager path's
  rules in one: ``O = A V`` with ``A = softmax(Q K^T scale + mask)`` is split into ``A`` and
  ``V`` by the matmul rule; the softmax and the scale hand ``R_A`` on unchanged to the scores
  (the reference), where the mask (boolean, additive, causal) keeps it only on allowed pairs;
  the scores ``Q K^T`` are split into ``Q`` and ``K`` by the matmul rule. Padded keys get no
  relevance (their attention weight is 0). Grouped-query attention (fewer key/value heads)
  shares each key/value head over its group of query heads, and sums the group's relevance
  back.

Both rules are linear in the relevance: contrastive mode sends ``R+`` and ``R-`` through the
same rule.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from backtrace.ir import Node
from backtrace.rules.adjoint import sum_to_shape
from backtrace.rules.base import EvalOptions, LinearInRelevanceRule, Relevance, register, safe_div

STABILIZE_EPS = 1e-6


def stabilize(v: Tensor, eps: float = STABILIZE_EPS) -> Tensor:
    """``v + eps * sign(v)``: the reference's guard against small denominators."""
    return v + eps * torch.sign(v)


def matmul_relevance(a: Tensor, b: Tensor, out: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
    """``(R_a, R_b)`` of ``out = a @ b`` (matrices; leading dimensions broadcast)."""
    s = safe_div(relevance, stabilize(2 * out.to(relevance.dtype)))
    a, b = a.to(relevance.dtype), b.to(relevance.dtype)
    r_a = torch.matmul(s, b.transpose(-1, -2)).mul_(a) if s.shape[:-1] + b.shape[-2:-1] == a.shape else \
        torch.matmul(s, b.transpose(-1, -2)) * a
    r_b = torch.matmul(a.transpose(-1, -2), s) * b
    return sum_to_shape(r_a, a.shape), sum_to_shape(r_b, b.shape)


@register("matmul")
class MatmulRule(LinearInRelevanceRule):
    """``a @ b`` between two activations (attention scores ``Q K^T`` and ``A V``)."""

    ill_conditioned = True

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        a, b = inputs
        if a.dim() < 2 or b.dim() < 2:
            raise ValueError(f"node {node.name!r}: matmul relevance needs matrices, got shapes "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        recompute = output is None or node.params.get("recompute", False)    # the output holds more than a @ b
        return list(matmul_relevance(a, b, torch.matmul(a, b) if recompute else output, relevance))


def attention_weights(q: Tensor, k: Tensor, mask: Optional[Tensor], is_causal: bool,
                      scale: Optional[float]) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """``(Q K^T, A, allowed)`` of scaled dot-product attention (``k`` with as many heads as ``q``)."""
    scores = torch.matmul(q, k.transpose(-1, -2))
    logits = scores * (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    allowed = None
    if mask is not None:
        if mask.dtype == torch.bool:
            allowed = mask
        else:
            logits = logits + mask
            allowed = mask > torch.finfo(mask.dtype).min / 2
    if is_causal:
        L, S = q.shape[-2], k.shape[-2]
        causal = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        allowed = causal if allowed is None else allowed & causal
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(logits, dim=-1).nan_to_num_(0.0)      # a fully masked row attends nowhere
    return scores, weights, allowed


def _repeat_heads(t: Tensor, groups: int) -> Tensor:
    return t if groups == 1 else t.repeat_interleave(groups, dim=-3)


def _sum_heads(r: Tensor, groups: int) -> Tensor:
    return r if groups == 1 else r.unflatten(-3, (r.shape[-3] // groups, groups)).sum(dim=-3)


@register("attention")
class AttentionRule(LinearInRelevanceRule):
    """Fused scaled dot-product attention. Inputs ``(q, k, v[, mask])`` shaped
    ``(..., heads, length, dim)``; ``params``: ``is_causal``, ``scale`` (``None``: 1/sqrt(dim))."""

    reads_output = False
    ill_conditioned = True

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        q, k, v = (t.to(relevance.dtype) for t in inputs[:3])
        mask = inputs[3] if len(inputs) > 3 else None
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(relevance.dtype)
        groups = q.shape[-3] // k.shape[-3] if q.dim() >= 3 and k.dim() >= 3 else 1
        k_all, v_all = _repeat_heads(k, groups), _repeat_heads(v, groups)
        scores, weights, allowed = attention_weights(q, k_all, mask, node.params.get("is_causal", False),
                                                     node.params.get("scale"))
        r_weights, r_v = matmul_relevance(weights, v_all, torch.matmul(weights, v_all), relevance)
        if allowed is not None:
            r_weights = r_weights * allowed
        r_q, r_kt = matmul_relevance(q, k_all.transpose(-1, -2), scores, r_weights)
        r_k = _sum_heads(r_kt.transpose(-1, -2), groups)
        return [r_q, r_k, _sum_heads(r_v, groups)] + [None] * (len(inputs) - 3)
