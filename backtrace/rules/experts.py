"""Mixture-of-experts layers: products by weights each row picks, and how relevance crosses a block.

A routed MoE block (Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE in transformers) computes, per token
``x`` with router logits ``l = W_r x``::

    p = softmax(l);  g, e = topk(p, k);  [g = g / sum(g)];  y = sum_j g_j E_{e_j}(x)
    [+ sigmoid(w_s . x) S(x)]                      (Qwen2-MoE's shared expert)

with ``E_e(x) = W_down[e] (act(W_gate[e] x) * (W_up[e] x))``. It needs no rule of its own: every
op of it has one, so the block explains as its ops do, whichever way transformers writes it
(experts sorted into groups, ``"grouped_linear"``; weights gathered per row,
``"batched_linear"``). The relevance of ``y`` goes

- over the k weighted outputs ``g_j E_{e_j}(x)`` by the add rule (the sum over the top-k rows:
  in proportion to ``|g_j E_j|`` in default mode), so each selected expert is reached in
  proportion to its gated contribution, and an expert no token chose gets nothing;
- from each weighted output to the expert's output and to its gate by the multiply rule
  (``"mul"``: ``R_E = |gE - E| / (|gE - E| + |gE - g|) R`` and ``R_g`` the rest, per element);
- through the expert by the linear rule (the products below) and its ``act(gate) * up`` by the
  multiply rule again;
- from the gates back through the renormalisation (a division by their sum, a statistic: a
  scale), ``topk`` (to the probabilities it selected) and the softmax (an activation: relevance
  passes) into the router's linear layer (the linear rule, with the softmax's saturation
  bounds) and so to the block's input, where it adds to what came through the experts.

The routing decision carries none: the expert indices are integer values (``"aux"``), and so are
the sorts, counts, offsets and masks computed from them; they are read by the rules that select
by them.

Why the multiply rule for the gate: it is the engine's rule wherever two values computed from the
input are multiplied (SwiGLU's ``act(gate) * up``, LSTM gates, Qwen's sigmoid gate on the shared
expert, squeeze-excite), and the routing weight is such a value: the router computes it from the
block's input, and it scales the expert's output. Treating it as a constant scale instead (as a
normalisation's statistic is treated) would give the router nothing, so the routed gate and the
shared expert's sigmoid gate of one block would follow two different rules.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from backtrace.ir import Node
from backtrace.rules.adjoint import sum_to_shape
from backtrace.rules.base import EvalOptions, PairRelevance, Relevance, Rule, register, saturation_bounds
from backtrace.rules.linear import LinearMap, dense_contrastive, dense_default


def _dense_maps() -> tuple[LinearMap, LinearMap]:
    """``x W^T`` and its adjoint ``c W``, for a weight in ``nn.Linear``'s (out, in) layout."""
    return (lambda x, w: torch.matmul(x, w.t())), (lambda c, w: torch.matmul(c, w))


@register("batched_linear")
class BatchedLinearRule(Rule):
    """``x @ W`` (``params["side"] == "left"``) or ``W @ x`` (``"right"``) where ``W`` carries no
    relevance: weights the model computed (an MoE router's pick of one expert's matrix per row,
    gathered) or a constant. Inputs are the two factors in the product's order. The linear rule
    (no bias) with ``W`` as the weights, batched over the leading dimensions (``W``'s broadcast
    over ``x``'s)."""

    reads_output = False

    @staticmethod
    def _batch(node: Node, inputs: Sequence[Tensor], dtype: torch.dtype
               ) -> tuple[Tensor, Tensor, LinearMap, LinearMap, tuple[int, ...]]:
        left = node.params["side"] == "left"
        x, w = (inputs[0], inputs[1]) if left else (inputs[1], inputs[0])
        lead = tuple(torch.broadcast_shapes(x.shape[:-2], w.shape[:-2]))
        xb = x.to(dtype).expand(lead + tuple(x.shape[-2:])).reshape((-1,) + tuple(x.shape[-2:]))
        w = w.to(dtype)
        if w.dim() > 2:
            w = w.expand(lead + tuple(w.shape[-2:])).reshape((-1,) + tuple(w.shape[-2:]))
        batch = xb.shape[0]
        if left:
            fwd: LinearMap = lambda t, m: torch.matmul(t, m)                       # noqa: E731
            back: LinearMap = lambda c, m: torch.matmul(c, m.transpose(-1, -2))    # noqa: E731
        else:
            fwd = lambda t, m: torch.matmul(m, t)                                  # noqa: E731
            back = lambda c, m: torch.matmul(m.transpose(-1, -2), c)               # noqa: E731

        def bwd(c: Tensor, m: Tensor) -> Tensor:
            # contrastive mode hands several coefficient maps stacked along the batch dimension
            k = c.shape[0] // batch
            if k > 1 and m.dim() > 2:
                return back(c.unflatten(0, (k, batch)), m).flatten(0, 1)
            return back(c, m)
        return xb, w, fwd, bwd, lead

    @staticmethod
    def _back(node: Node, inputs: Sequence[Tensor], r: Tensor, lead: tuple[int, ...]) -> list[Relevance]:
        live = 0 if node.params["side"] == "left" else 1
        x = inputs[live]
        r = sum_to_shape(r.reshape(lead + tuple(x.shape[-2:])), x.shape)
        return [r if i == live else None for i in range(len(inputs))]

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        x, w, fwd, bwd, lead = self._batch(node, inputs, relevance.dtype)
        r = dense_default(x, relevance.reshape((-1,) + tuple(relevance.shape[-2:])), w, w.abs(), None, fwd, bwd,
                          saturation_bounds(node))
        return self._back(node, inputs, r, lead)

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        x, w, fwd, bwd, lead = self._batch(node, inputs, relevance[0].dtype)
        maps = tuple(r.reshape((-1,) + tuple(r.shape[-2:])) for r in relevance)
        rp, rn = dense_contrastive(x, maps, w, None, fwd, bwd, one_sided=True)
        pos, neg = self._back(node, inputs, rp, lead), self._back(node, inputs, rn, lead)
        return [None if p is None else (p, n) for p, n in zip(pos, neg)]


def _groups(offs: Tensor) -> list[tuple[int, int, int]]:
    """``(group, first row, end row)`` of each non-empty group; ``offs`` holds the groups' end rows."""
    ends = [int(e) for e in offs.tolist()]
    starts = [0] + ends[:-1]
    return [(g, s, e) for g, (s, e) in enumerate(zip(starts, ends)) if e > s]


@register("grouped_linear")
class GroupedLinearRule(Rule):
    """``grouped_mm(x, W, offs)``: the rows of ``x`` come sorted into groups (the tokens routed to
    each expert), group ``g`` being rows ``offs[g-1]:offs[g]``, multiplied by ``W[g]``
    (``(in, out)``). Inputs ``(x, W, offs)``; the linear rule (no bias) per group. Rows past the
    last group get none."""

    reads_output = False

    def _each(self, inputs: Sequence[Tensor], dtype: torch.dtype,
              apply: Callable[[Tensor, Tensor, slice], None]) -> None:
        x, w, offs = inputs[:3]
        for g, start, end in _groups(offs):
            apply(x[start:end].to(dtype), w[g].to(dtype).t(), slice(start, end))

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        out = torch.zeros(inputs[0].shape, dtype=relevance.dtype, device=relevance.device)
        fwd, bwd = _dense_maps()
        bounds = saturation_bounds(node)

        def apply(x: Tensor, w: Tensor, rows: slice) -> None:
            out[rows] = dense_default(x, relevance[rows], w, w.abs(), None, fwd, bwd, bounds)
        self._each(inputs, relevance.dtype, apply)
        return [out, None, None]

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        pos = torch.zeros(inputs[0].shape, dtype=relevance[0].dtype, device=relevance[0].device)
        neg = torch.zeros_like(pos)
        fwd, bwd = _dense_maps()

        def apply(x: Tensor, w: Tensor, rows: slice) -> None:
            pos[rows], neg[rows] = dense_contrastive(x, (relevance[0][rows], relevance[1][rows]), w, None, fwd, bwd,
                                                     one_sided=True, unit_dim=-1)
        self._each(inputs, relevance[0].dtype, apply)
        return [(pos, neg), None, None]
