"""Linear and convolution layers: the proportional rule as a handful of (transposed) convolutions.

For one output unit j the contributions are ``z_ji = W_ji x_i``; the rule shares ``R_j`` over
them in proportion to ``|z_ji|`` (default mode) or by sign (contrastive mode). Summed over j
this is never a loop: ``sum_j |z_ji| c_j = |x_i| (|W|^T c)_i`` and
``sum_j z_ji c_j = x_i (W^T c)_i``, so a layer costs one or two forward and one or two
transposed products. ``fwd(x, W)`` is the layer's linear map without bias and ``bwd(c, W)``
its adjoint (``c @ W`` for a dense layer, the input gradient of the convolution otherwise).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from backtrace.ir import Node
from backtrace.rules.base import (EvalOptions, PairRelevance, Relevance, Rule, register, safe_div,
                                  saturation_bounds)

LinearMap = Callable[[Tensor, Tensor], Tensor]


def dense_default(x: Tensor, relevance: Tensor, weight: Tensor, abs_weight: Tensor, bias: Optional[Tensor],
                  fwd: LinearMap, bwd: LinearMap, bounds: tuple[Optional[float], Optional[float]],
                  conv_saturation: bool = False) -> Tensor:
    """Default-mode relevance of the input of ``y = act(fwd(x, W) + b)``.

    ``bias`` is broadcastable to the output (``None`` for none). With no saturation bound the
    positive and negative sides are both kept, so the denominator is ``fwd(|x|, |W|) + |b|``.
    With bounds ``(L, U)`` a side is dropped where the pre-activation ``T`` (dense; the reference)
    or the sum of magnitudes ``P + N`` (``conv_saturation``; the reference's convolutions)
    crosses the bound; the dense rule then also drops that side from the denominator.
    """
    ax = x.abs()
    mag = fwd(ax, abs_weight)                                    # P + N
    babs = bias.abs() if bias is not None else torch.zeros((), dtype=x.dtype, device=x.device)
    low, up = bounds
    if low is None and up is None:
        return ax * bwd(safe_div(relevance, mag + babs), abs_weight)
    signed = fwd(x, weight)                                      # P - N
    if conv_saturation:
        keep_p = mag > low if low is not None else torch.ones_like(mag, dtype=torch.bool)
        keep_n = mag < up if up is not None else torch.ones_like(mag, dtype=torch.bool)
        den = mag + babs
    else:
        pre = signed + (bias if bias is not None else 0.0)
        keep_p = ~(pre < low) if low is not None else torch.ones_like(mag, dtype=torch.bool)
        keep_n = ~(pre > up) if up is not None else torch.ones_like(mag, dtype=torch.bool)
        den = (mag + signed) / 2 * keep_p + (mag - signed) / 2 * keep_n + babs
    c_p = safe_div(relevance * keep_p, den)
    c_n = safe_div(relevance * keep_n, den)
    return ax * bwd((c_p + c_n) / 2, abs_weight) + x * bwd((c_p - c_n) / 2, weight)


def contrast_coefficients(pos: Tensor, neg: Tensor, bias: Optional[Tensor], r_pos: Tensor, r_neg: Tensor,
                          one_sided: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per output unit, the factors that turn positive/negative contributions into R+ / R-.

    Returns ``(a_pp, a_pn, a_np, a_nn)``: a positive contribution ``z`` receives ``z * a_pp`` of
    R+ and ``z * a_pn`` of R-; a negative one ``|z| * a_np`` of R+ and ``|z| * a_nn`` of R-.
    ``one_sided`` selects the dense/add behaviour of the reference (units with contributions of
    one sign share both maps over them; a tie ``R+ = R-`` goes the "swapped" way); without it
    (convolutions) every unit takes the mixed branch and ties give nothing.
    """
    t = pos - neg + (bias if bias is not None else 0.0)
    gt, lt = t > 0, t < 0
    same = (gt & (r_pos > r_neg)) | (lt & (r_pos < r_neg))
    if one_sided:
        only_p = (neg == 0) & (pos > 0)
        only_n = (pos == 0) & (neg > 0)
        mixed = ~(only_p | only_n)
        swapped = (gt | lt) & ~same
    else:
        only_p = only_n = torch.zeros_like(same)
        mixed = torch.ones_like(same)
        swapped = (gt & (r_pos < r_neg)) | (lt & (r_pos > r_neg))
    a_pp = safe_div(r_pos * (only_p | (mixed & same)), pos)
    a_pn = safe_div(r_neg * (only_p | (mixed & swapped)), pos)
    a_np = safe_div(r_pos * (only_n | (mixed & swapped)), neg)
    a_nn = safe_div(r_neg * (only_n | (mixed & same)), neg)
    return a_pp, a_pn, a_np, a_nn


def dense_contrastive(x: Tensor, relevance: tuple[Tensor, Tensor], weight: Tensor, bias: Optional[Tensor],
                      fwd: LinearMap, bwd: LinearMap, one_sided: bool) -> tuple[Tensor, Tensor]:
    """Contrastive-mode ``(R+, R-)`` of the input of ``y = fwd(x, W) + b`` (activations ignored).

    Positive and negative sums are computed exactly from the sign-split operands so that
    "no contribution of this sign" is an exact zero.
    """
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    pos = fwd(xp, wp) + fwd(xn, wn)
    neg = -(fwd(xp, wn) + fwd(xn, wp))
    a_pp, a_pn, a_np, a_nn = contrast_coefficients(pos, neg, bias, relevance[0], relevance[1], one_sided)
    coeffs = torch.cat([a_pp, a_pn, a_np, a_nn], dim=0)
    g_p = bwd(coeffs, wp).chunk(4, dim=0)
    g_n = bwd(coeffs, wn).chunk(4, dim=0)
    # sum_j z+_ji a_j = x+ (W+^T a) + x- (W-^T a);  sum_j |z-_ji| a_j = -x+ (W-^T a) - x- (W+^T a)
    r_pos = xp * (g_p[0] - g_n[2]) + xn * (g_n[0] - g_p[2])
    r_neg = xp * (g_p[1] - g_n[3]) + xn * (g_n[1] - g_p[3])
    return r_pos, r_neg


def _dense_maps(node: Node) -> tuple[LinearMap, LinearMap]:
    return (lambda x, w: torch.matmul(x, w.t())), (lambda c, w: torch.matmul(c, w))


def _conv_maps(node: Node, x_shape: Sequence[int]) -> tuple[LinearMap, LinearMap]:
    p = node.params
    nd = p["dims"]
    conv = (F.conv1d, F.conv2d)[nd - 1]
    grad_input = (torch.nn.grad.conv1d_input, torch.nn.grad.conv2d_input)[nd - 1]
    args = (p["stride"], p["padding"], p["dilation"], p["groups"])

    def fwd(x: Tensor, w: Tensor) -> Tensor:
        return conv(x, w, None, *args)

    def bwd(c: Tensor, w: Tensor) -> Tensor:
        return grad_input((c.shape[0],) + tuple(x_shape[1:]), w, c, *args)

    return fwd, bwd


def _bias_shape(node: Node, bias: Optional[Tensor]) -> Optional[Tensor]:
    if bias is None or node.kind == "linear":
        return bias
    return bias.reshape((-1,) + (1,) * node.params["dims"])


@register("linear", "conv1d", "conv2d")
class LinearConvRule(Rule):
    """Dense layers and 1-D/2-D convolutions (stride, zero padding, dilation, groups).

    ``node.params``: ``weight``, ``bias`` (or ``None``), ``abs_weight`` (cached ``|W|``); for
    convolutions also ``dims``, ``stride``, ``padding``, ``dilation``, ``groups`` and optionally
    ``pre_pad`` (an ``F.pad`` tuple for asymmetric "same" padding, cropped from the relevance).
    """

    def _prepare(self, node: Node, x: Tensor) -> tuple[Tensor, LinearMap, LinearMap]:
        pre = node.params.get("pre_pad")
        if pre is not None:
            x = F.pad(x, pre)
        if node.kind == "linear":
            return x, *_dense_maps(node)
        return x, *_conv_maps(node, x.shape)

    @staticmethod
    def _crop(node: Node, r: Tensor) -> Tensor:
        pre = node.params.get("pre_pad")
        return r if pre is None else F.pad(r, [-v for v in pre])

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        p = node.params
        x, fwd, bwd = self._prepare(node, inputs[0])
        r = dense_default(x, relevance, p["weight"], p["abs_weight"], _bias_shape(node, p["bias"]), fwd, bwd,
                          saturation_bounds(node), conv_saturation=node.kind != "linear")
        return [self._crop(node, r)] + [None] * (len(inputs) - 1)

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        p = node.params
        x, fwd, bwd = self._prepare(node, inputs[0])
        rp, rn = dense_contrastive(x, relevance, p["weight"], _bias_shape(node, p["bias"]), fwd, bwd,
                                   one_sided=node.kind == "linear")
        return [(self._crop(node, rp), self._crop(node, rn))] + [None] * (len(inputs) - 1)


@register("batch_norm")
class AffineRule(Rule):
    """BatchNorm that could not be folded: ``y = a x + c`` per channel, the dense rule with a
    diagonal weight (the shift's share is dropped like a bias). ``params``: ``scale_vec``,
    ``shift_vec`` (one value per channel, dimension 1 of the input)."""

    @staticmethod
    def _affine(node: Node, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return node.params["scale_vec"].reshape(shape), node.params["shift_vec"].reshape(shape)

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        scale, shift = self._affine(node, inputs[0])
        z = (inputs[0] * scale).abs()
        return [z * safe_div(relevance, z + shift.abs())]

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        # one contribution per unit: always the one-sided case, both maps pass where it is non-zero
        scale, _ = self._affine(node, inputs[0])
        live = (inputs[0] * scale != 0).to(relevance[0].dtype)
        return [(relevance[0] * live, relevance[1] * live)]
