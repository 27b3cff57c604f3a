"""Pooling and reductions.

Max pooling sends each window's relevance to its maximum (split equally among ties). Average
pooling, adaptive/global average pooling and mean/sum over dimensions share relevance in
proportion to ``|x|`` within each window: for a linear op ``A`` with uniform non-negative
weights per window, ``R_in = |x| * A^T(R / A(|x|))`` does exactly that, whatever the window
layout (padding, ceil mode, adaptive windows), since the window's divisor cancels.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

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

    reads_output = False

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


def _window_max_share(windows: Tensor, window_max: Tensor, relevance: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``relevance`` of each window spread over its maximal elements (ties split equally).

    ``dims`` are the window's own axes of ``windows``; ``window_max`` and ``relevance`` have
    size 1 there.
    """
    hit = (windows == window_max).to(relevance.dtype)     # float: products with a bool mask are slow on CPU
    return hit.mul_(relevance / hit.sum(dim=dims, keepdim=True))


def _disjoint_max_share(x: Tensor, relevance: Tensor, pooled: Optional[Tensor], kh: int, kw: int) -> Tensor:
    """:func:`max_pool_relevance` for windows that tile ``x`` exactly (kernel == stride).

    In channels-last memory ``x`` is ``(B, out_h, kh, out_w, kw, C)`` as a view, so the
    comparison with each window's maximum and the product with each window's share are
    broadcasts along a contiguous channel axis, and the tie count is a sum pooling: no copy per
    window and no strided reduction (both several times slower on CPU).
    """
    B, C, H, W = x.shape
    out_h, out_w = H // kh, W // kw
    cl = torch.channels_last
    x = x.contiguous(memory_format=cl)
    if pooled is None:
        pooled = F.max_pool2d(x, (kh, kw))
    pooled = pooled.contiguous(memory_format=cl)

    def windows(t: Tensor) -> Tensor:            # (B, C, H, W) channels-last -> (B, oh, kh, ow, kw, C) view
        return t.permute(0, 2, 3, 1).view(B, out_h, kh, out_w, kw, C)

    def per_window(t: Tensor) -> Tensor:         # (B, C, oh, ow) channels-last -> (B, oh, 1, ow, 1, C) view
        return t.permute(0, 2, 3, 1)[:, :, None, :, None, :]

    hit = torch.empty_like(x, memory_format=cl)
    torch.eq(windows(x), per_window(pooled), out=windows(hit))                 # 1.0 at each maximum
    count = F.avg_pool2d(hit, (kh, kw), divisor_override=1)                   # ties per window (>= 1)
    share = relevance.contiguous(memory_format=cl) / count
    windows(hit).mul_(per_window(share))
    return hit


def max_pool_relevance(x: Tensor, relevance: Tensor, kernel: Sequence[int], stride: Sequence[int],
                       padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool,
                       pooled: Optional[Tensor] = None) -> Tensor:
    """Each window's relevance to its maximum, split equally among ties (2-D layout, any batch).

    ``pooled`` (the pooling's own output, optional) saves recomputing each window's maximum.
    Non-overlapping windows inside ``x`` (kernel == stride, no padding or dilation, the usual
    ``MaxPool2d(k)``) are a view of ``x`` (:func:`_disjoint_max_share`); other layouts take the
    windows as a strided view of the padded input and add the shares back with ``F.fold``.
    Neither copies ``x`` per window the way an im2col would.
    """
    B, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    out_h, out_w = relevance.shape[-2:]
    if pooled is None or tuple(pooled.shape) != tuple(relevance.shape):
        pooled = None
    if ((kh, kw) == (sh, sw) and (ph, pw) == (0, 0) and (dh, dw) == (1, 1)
            and out_h * kh <= H and out_w * kw <= W):
        back = _disjoint_max_share(x[..., : out_h * kh, : out_w * kw], relevance, pooled, kh, kw)
        if out_h * kh == H and out_w * kw == W:
            return back
        return F.pad(back, (0, W - out_w * kw, 0, H - out_h * kh))
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    used_h, used_w = (out_h - 1) * sh + span_h, (out_w - 1) * sw + span_w      # padded extent the windows cover
    extra_h, extra_w = max(0, used_h - (H + 2 * ph)), max(0, used_w - (W + 2 * pw))
    xp = F.pad(x, (pw, pw + extra_w, ph, ph + extra_h), value=float("-inf"))
    win = xp.unfold(2, span_h, sh).unfold(3, span_w, sw)[:, :, :out_h, :out_w, ::dh, ::dw]   # a view
    top = pooled if pooled is not None else win.amax(dim=(-2, -1))
    share = _window_max_share(win, top[..., None, None], relevance[..., None, None], (4, 5))
    cols = share.permute(0, 1, 4, 5, 2, 3).reshape(B, C * kh * kw, out_h * out_w)
    back = F.fold(cols, (used_h, used_w), (kh, kw), dilation=(dh, dw), stride=(sh, sw))
    full_h, full_w = max(used_h, H + ph), max(used_w, W + pw)
    back = F.pad(back, (0, full_w - used_w, 0, full_h - used_h))
    return back[..., ph:ph + H, pw:pw + W]


@register("max_pool1d", "max_pool2d")
class MaxPoolRule(LinearInRelevanceRule):
    """``params``: ``dims``, ``kernel_size``, ``stride``, ``padding``, ``dilation``, ``ceil_mode``."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        p = node.params
        nd = p["dims"]
        x = inputs[0]
        pooled = output if isinstance(output, Tensor) else None
        args = [_pair(p[k], nd) for k in ("kernel_size", "stride", "padding", "dilation")]
        if nd == 1:
            args = [(1,) + a if i != 2 else (0,) + a for i, a in enumerate(args)]
            r = max_pool_relevance(x.unsqueeze(-2), relevance.unsqueeze(-2), *args, p["ceil_mode"],
                                   None if pooled is None else pooled.unsqueeze(-2))
            return [r.squeeze(-2)]
        return [max_pool_relevance(x, relevance, *args, p["ceil_mode"], pooled)]


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
