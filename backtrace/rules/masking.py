"""Values that carry no relevance, and ops that select between a live value and a mask.

- ``"aux"``: a value the model computes from no explained input (attention masks, position
  ids, rotary tables): it is read by the rules that need it and takes no relevance.
- ``"where"``: ``where(cond, a, b)``: relevance goes to ``a`` where ``cond`` holds, to ``b``
  elsewhere (broadcast operands get the sum); the condition takes none.
- ``"masked_fill"``: ``x.masked_fill(mask, v)``: relevance goes to ``x`` where the mask is off.
- ``"pointwise"``: an elementwise function of one tensor (``x ** 2``, ``exp``, the tanh form of
  GELU spelled out as several ops): it hands relevance on unchanged, as activations do.
- ``"interpolate"``: nearest / (bi)linear upsampling: the adjoint (``params["fn"]`` re-applies
  the op), so each output's relevance goes back to the inputs it was made from, by their
  interpolation weights.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from backtrace.ir import Node
from backtrace.rules.adjoint import adjoint, sum_to_shape
from backtrace.rules.base import EvalOptions, LinearInRelevanceRule, Relevance, register


@register("aux")
class AuxRule(LinearInRelevanceRule):
    reads_inputs = False
    reads_output = False

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        return [None] * len(inputs)


@register("pointwise")
class PointwiseRule(LinearInRelevanceRule):
    reads_inputs = False
    reads_output = False

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        return [relevance] + [None] * (len(inputs) - 1)


@register("where")
class WhereRule(LinearInRelevanceRule):
    reads_output = False

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        cond, a, b = inputs
        keep = cond.to(relevance.dtype)
        return [None, sum_to_shape(relevance * keep, a.shape), sum_to_shape(relevance * (1 - keep), b.shape)]


@register("masked_fill")
class MaskedFillRule(LinearInRelevanceRule):
    reads_output = False

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        x, mask = inputs
        return [sum_to_shape(relevance * (1 - mask.to(relevance.dtype)), x.shape), None]


@register("interpolate")
class InterpolateRule(LinearInRelevanceRule):
    reads_output = False

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        return [adjoint(node.params["fn"], inputs[0], relevance)] + [None] * (len(inputs) - 1)
