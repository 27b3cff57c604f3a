"""Ops that move values without mixing them: relevance follows the inverse index map exactly."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from backtrace.ir import Node
from backtrace.ops import kinds
from backtrace.rules.adjoint import adjoint
from backtrace.rules.base import EvalOptions, LinearInRelevanceRule, Relevance, register, tree_zeros_like


@register("reshape")
class ReshapeRule(LinearInRelevanceRule):
    """view / reshape / flatten / unflatten / squeeze / unsqueeze: reshape back to the input."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        return [relevance.reshape(inputs[0].shape)] + [None] * (len(inputs) - 1)


@register("index_map")
class IndexMapRule(LinearInRelevanceRule):
    """permute / transpose / slicing / padding / expand / repeat / flip ...: any op that copies
    elements. ``params["fn"]`` re-applies it to one tensor; its adjoint (by autograd) is the
    inverse index map (crop for padding, sum over copies for expand)."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        return [adjoint(node.params["fn"], inputs[0], relevance)] + [None] * (len(inputs) - 1)


@register("getitem")
class GetItemRule(LinearInRelevanceRule):
    """``value[index]``: on a structured output (tuple) the relevance goes to the selected part
    of a mirroring structure of zeros; on a tensor it is scattered back by the index map."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        value: Any = inputs[0]
        index = node.params["index"]
        if isinstance(value, (tuple, list)):
            parts = list(tree_zeros_like(value))
            parts[index] = relevance
            return [type(value)(parts)]
        return [adjoint(lambda t: t[index], value, relevance)]


@register("cat")
class CatRule(LinearInRelevanceRule):
    """Concatenation: split the relevance along the concatenation axis (``params["dim"]``)."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        dim = node.params["dim"]
        # torch.cat skips legacy empty 1-D operands (an empty key/value cache): they take none
        same = [t.dim() == relevance.dim() for t in inputs]
        parts = relevance.split([t.shape[dim] if s else 0 for t, s in zip(inputs, same)], dim=dim)
        return [p if s else None for p, s in zip(parts, same)]


@register("split")
class SplitRule(LinearInRelevanceRule):
    """split / chunk / unbind-like ops returning a tuple: concatenate the parts' relevance back
    (``params["dim"]``; ``params["stack"]`` for unbind)."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Any,
                opts: EvalOptions) -> list[Relevance]:
        dim = node.params["dim"]
        if node.params.get("stack"):
            return [torch.stack(list(relevance), dim=dim)] + [None] * (len(inputs) - 1)
        return [torch.cat(list(relevance), dim=dim)] + [None] * (len(inputs) - 1)


@register("identity", "dropout", *kinds("activation"))
class PassThroughRule(LinearInRelevanceRule):
    """Activations, Dropout and identities hand the relevance on unchanged (an activation's
    effect is taken into account by the layer before it, through its saturation bounds)."""

    reads_inputs = False
    reads_output = False

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        return [relevance] + [None] * (len(inputs) - 1)
