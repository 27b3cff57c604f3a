"""Attention baselines for transformer text classifiers: attention rollout (Abnar and Zuidema,
2020, "Quantifying Attention Flow in Transformers") and the raw last-layer attention.

Both read the attention probabilities the model computes (``model.attentions(ids)``: every
layer's ``(N, heads, L, L)``, from eager attention) for the token the classifier reads: ``[CLS]``
(position 0) for ``pooling: cls``, the mean of the real tokens' rows for ``pooling: mean`` (the
pooling the classifier head applies). They ignore the target class, and are non-negative.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .base import ExplainContext, Explainer

TRANSFORMER_KINDS = ("transformer",)


def read_rows(scores: Tensor, real: Tensor, pooling: str) -> Tensor:
    """The row(s) of token-to-token scores ``(N, L, L)`` the classifier reads: row 0 (``cls``) or
    the mean of the rows of real (non-pad) tokens (``mean``)."""
    if pooling == "cls":
        return scores[:, 0]
    weights = real.to(scores.dtype)
    return (weights.unsqueeze(-1) * scores).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)


def head_mean(attention: Tensor, real: Tensor) -> Tensor:
    """One layer's attention averaged over heads, with the padding mask applied explicitly: each
    head's rows and columns of pad tokens are zeroed and its real rows renormalised (the softmax
    over the real keys alone) before the mean, so a model whose mask leaves a little mass on
    padding gives the same result as one whose mask leaves none."""
    pair = (real.unsqueeze(-1) & real.unsqueeze(-2)).to(attention.dtype).unsqueeze(1)
    a = attention * pair
    a = a / a.sum(-1, keepdim=True).clamp(min=torch.finfo(a.dtype).tiny)
    return a.mean(1)


def rollout(attentions: Sequence[Tensor], real: Tensor) -> Tensor:
    """Attention rollout ``(N, L, L)``: per layer the head-averaged attention plus the identity
    (the residual connection), rows renormalised, i.e. ``0.5 A + 0.5 I``; the layers multiplied
    from the first, ``R = A'_L ... A'_2 A'_1``. Pad tokens keep an all-zero row and column."""
    real = real.to(torch.bool)
    eye = torch.diag_embed(real.to(attentions[0].dtype))   # identity on the real tokens only
    result = eye
    for attention in attentions:
        a = head_mean(attention, real) + eye
        a = a / a.sum(-1, keepdim=True).clamp(min=torch.finfo(a.dtype).tiny)
        result = a @ result
    return result


class _AttentionMethod(Explainer):
    """Common part: transformers only, the pooling read from the model."""

    signed = False
    reads_output = False      # attention weights, whatever the head makes of them
    modalities = ("text",)
    model_kinds = TRANSFORMER_KINDS
    frameworks = ("torch",)

    def __init__(self, model: nn.Module, context: ExplainContext, **params: object) -> None:
        super().__init__(model, context, **params)
        if not hasattr(model, "attentions"):
            raise TypeError(f"method {self.name!r} needs a model with attentions(ids) (BertClassifier); "
                            f"{type(model).__name__} has none")
        self.pooling = str(getattr(model, "pooling", "cls"))

    def real_tokens(self, inputs: Tensor) -> Tensor:
        return self.model.attention_mask(inputs).to(torch.bool)


class AttentionRolloutMethod(_AttentionMethod):
    """Attention rollout through every layer; the attribution of a token is its share of the
    rolled-out attention of the classification token."""

    name = "attention_rollout"

    def __init__(self, model: nn.Module, context: ExplainContext) -> None:
        super().__init__(model, context)

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        real = self.real_tokens(inputs)
        return read_rows(rollout(self.model.attentions(inputs), real), real, self.pooling)


class AttentionLastMethod(_AttentionMethod):
    """The last layer's attention of the classification token, averaged over heads (no residual,
    no earlier layers)."""

    name = "attention_last"

    def __init__(self, model: nn.Module, context: ExplainContext) -> None:
        super().__init__(model, context)

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        real = self.real_tokens(inputs)
        last = self.model.attentions(inputs)[-1]
        return read_rows(head_mean(last, real), real, self.pooling)
