"""Pooling and reductions.

Max pooling sends each window's relevance to its maximum (split equally among ties). Average
pooling, adaptive/global average pooling and mean/sum over dimensions share relevance in
proportion to ``|x|`` within each window: for a linear op ``A`` with uniform non-negative
weights per window, ``R_in = |x| * A^T(R / A(|x|))`` does exactly that, whatever the window
layout (padding, ceil mode, adaptive windows), since the window's divisor cancels.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from backtrace.ir import Node
from backtrace.rules.adjoint import adjoint
from backtrace.rules.base import (EvalOptions, LinearInRelevanceRule, PairRelevance, Relevance, Rule,
                                  register, safe_div)
from backtrace.rules.linear import contrast_coefficients


@register("avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "mean", "sum")
class ProportionalPoolRule(Rule):
    """``params["fn"]``: the op itself as a one-argument callable (module or closure)."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        fn = node.params["fn"]
        ax = inputs[0].abs()
        return [ax * adjoint(fn, ax, safe_div(relevance, fn(ax)))]

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        # each window is an add of its elements: the add rule's contrastive split per window
        fn = node.params["fn"]
        x = inputs[0]
        xp, xn = x.clamp(min=0), -x.clamp(max=0)
        a_pp, a_pn, a_np, a_nn = contrast_coefficients(fn(xp), fn(xn), None, relevance[0], relevance[1],
                                                        one_sided=True)
        g = adjoint(fn, x, torch.cat([a_pp, a_pn, a_np, a_nn], dim=0)).chunk(4, dim=0)
        return [(xp * g[0] + xn * g[2], xp * g[1] + xn * g[3])]


def _pair(v: int | Sequence[int], n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * n


def max_pool_relevance(x: Tensor, relevance: Tensor, kernel: Sequence[int], stride: Sequence[int],
                       padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool) -> Tensor:
    """Each window's relevance to its maximum, split equally among ties (2-D layout, any batch)."""
    B, C, H, W = x.shape
    out_h, out_w = relevance.shape[-2:]
    extra = [max(0, (o - 1) * s + d * (k - 1) + 1 - (n + 2 * p))
             for o, s, d, k, n, p in zip((out_h, out_w), stride, dilation, kernel, (H, W), padding)]
    xp = F.pad(x, (padding[1], padding[1] + extra[1], padding[0], padding[0] + extra[0]), value=float("-inf"))
    cols = F.unfold(xp, kernel, dilation=dilation, stride=stride).view(B, C, kernel[0] * kernel[1], -1)
    cols = cols[..., : out_h * out_w]
    hit = (cols == cols.amax(dim=2, keepdim=True)).to(relevance.dtype)
    share = hit / hit.sum(dim=2, keepdim=True) * relevance.reshape(B, C, 1, out_h * out_w)
    back = F.fold(share.reshape(B, C * kernel[0] * kernel[1], -1), xp.shape[-2:], kernel, dilation=dilation,
                  stride=stride)
    return back[..., padding[0]:padding[0] + H, padding[1]:padding[1] + W]


@register("max_pool1d", "max_pool2d")
class MaxPoolRule(LinearInRelevanceRule):
    """``params``: ``dims``, ``kernel_size``, ``stride``, ``padding``, ``dilation``, ``ceil_mode``."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        p = node.params
        nd = p["dims"]
        x = inputs[0]
        args = [_pair(p[k], nd) for k in ("kernel_size", "stride", "padding", "dilation")]
        if nd == 1:
            args = [(1,) + a if i != 2 else (0,) + a for i, a in enumerate(args)]
            r = max_pool_relevance(x.unsqueeze(-2), relevance.unsqueeze(-2), *args, p["ceil_mode"])
            return [r.squeeze(-2)]
        return [max_pool_relevance(x, relevance, *args, p["ceil_mode"])]


@register("adaptive_max_pool1d", "adaptive_max_pool2d")
class AdaptiveMaxPoolRule(LinearInRelevanceRule):
    """Global max: to the maximum (ties split equally). Other output sizes: to the element
    the pooling selected (``params["fn"]`` is the pooling op)."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        x = inputs[0]
        nd = 1 if node.kind.endswith("1d") else 2
        spatial = tuple(range(x.dim() - nd, x.dim()))
        if all(s == 1 for s in output.shape[-nd:]):
            hit = (x == x.amax(dim=spatial, keepdim=True)).to(relevance.dtype)
            return [hit / hit.sum(dim=spatial, keepdim=True) * relevance]
        fn = node.params["fn"]
        return [_routed(fn, x, relevance)]


def _routed(fn: Callable[[Tensor], Tensor], x: Tensor, relevance: Tensor) -> Tensor:
    """Relevance routed the way the op's gradient is: to the selected elements."""
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        y = fn(xx)
        (g,) = torch.autograd.grad(y, xx, grad_outputs=relevance.to(y.dtype))
    return g
