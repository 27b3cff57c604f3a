"""LayerNorm, RMSNorm, GroupNorm, InstanceNorm: relevance passes through unchanged, as the
reference does for normalisations.

Kinds ``"layer_norm"``, ``"rms_norm"``, ``"group_norm"``, ``"instance_norm"``. Inputs: ``(x,)`` for a module call; a functional
``F.layer_norm(x, shape, weight, bias)`` may list the affine tensors too, which take no
relevance (``None``). No ``node.params`` are needed.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from backtrace.ir import Node
from backtrace.rules.base import EvalOptions, PairRelevance, Relevance, Rule, register


@register("layer_norm", "rms_norm", "group_norm", "instance_norm")
class LayerNormRule(Rule):
    """Identity on relevance: normalisation rescales every feature of a token alike, so the
    reference treats it as transparent (default and contrastive)."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        return [relevance] + [None] * (len(inputs) - 1)

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        return [(relevance[0], relevance[1])] + [None] * (len(inputs) - 1)
