"""Linear and convolution layers: the proportional rule as a handful of (transposed) convolutions.

For one output unit j the contributions are ``z_ji = W_ji x_i``; the rule shares ``R_j`` over
them in proportion to ``|z_ji|`` (default mode) or by sign (contrastive mode). Summed over j
this is never a loop: ``sum_j |z_ji| c_j = |x_i| (|W|^T c)_i`` and
``sum_j z_ji c_j = x_i (W^T c)_i``, so a layer costs a few forward and transposed products:
default mode without saturation bounds (ReLU or no activation) one of each,
``D = fwd(|x|, |W|) + |b|`` and ``R_in = |x| bwd(R / D, |W|)``. ``fwd(x, W)`` is the layer's
linear map without bias and ``bwd(c, W)`` its adjoint (``c @ W`` for a dense layer, the
transposed convolution otherwise).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from backtrace.ir import Node
from backtrace.rules.base import (EvalOptions, PairRelevance, Relevance, Rule, register, safe_div,
                                  safe_div_into, saturation_bounds)

LinearMap = Callable[[Tensor, Tensor], Tensor]


def dense_default(x: Tensor, relevance: Tensor, weight: Tensor, abs_weight: Tensor, bias: Optional[Tensor],
                  fwd: LinearMap, bwd: LinearMap, bounds: tuple[Optional[float], Optional[float]],
                  conv_saturation: bool = False) -> Tensor:
    """Default-mode relevance of the input of ``y = act(fwd(x, W) + b)``.

    ``bias`` is broadcastable to the output (``None`` for none). With no saturation bound the
    positive and negative sides are both kept, so the denominator is ``fwd(|x|, |W|) + |b|``
    and the rule is one forward and one transposed product. With bounds ``(L, U)`` a side is
    dropped where the pre-activation ``T`` (dense; the reference) or the sum of magnitudes
    ``P + N`` (``conv_saturation``; the reference's convolutions) crosses the bound; the dense
    rule then also drops that side from the denominator.

    Temporaries are updated in place: this runs once per layer on activation-sized tensors.
    """
    ax = x.abs()
    mag = fwd(ax, abs_weight)                                    # P + N
    low, up = bounds
    if low is None and up is None:
        if bias is not None and bool((bias != 0).all()):
            # every unit has a bias share: D > 0 everywhere, a plain division is safe
            return bwd(torch.div(relevance, mag.add_(bias.abs()), out=mag), abs_weight).mul_(ax)
        den = mag.add_(bias.abs()) if bias is not None else mag
        return bwd(safe_div_into(relevance, den), abs_weight).mul_(ax)
    if conv_saturation:
        keep_p = (mag > low) if low is not None else None
        keep_n = (mag < up) if up is not None else None
        den = mag.add_(bias.abs()) if bias is not None else mag
    else:
        signed = fwd(x, weight)                                  # P - N
        pre = signed + bias if bias is not None else signed
        keep_p = ~(pre < low) if low is not None else None
        keep_n = ~(pre > up) if up is not None else None
        half_p, half_n = (mag + signed).mul_(0.5), mag.sub_(signed).mul_(0.5)
        den = (half_p if keep_p is None else half_p.mul_(keep_p)).add_(
            half_n if keep_n is None else half_n.mul_(keep_n))
        if bias is not None:
            den.add_(bias.abs())
    c = safe_div_into(relevance, den)
    # c_p = c [side P kept], c_n = c [side N kept]; input share |x| |W|^T (c_p + c_n) / 2 + x W^T (c_p - c_n) / 2
    k_p = keep_p.to(c.dtype) if keep_p is not None else 1.0
    k_n = keep_n.to(c.dtype) if keep_n is not None else 1.0
    out = bwd(c * ((k_p + k_n) * 0.5), abs_weight).mul_(ax)
    diff = (k_p - k_n) * 0.5
    if isinstance(diff, Tensor) and bool(diff.any()):
        out.add_(bwd(c * diff, weight).mul_(x))
    return out


def contrast_coefficients(pos: Tensor, neg: Tensor, bias: Optional[Tensor], r_pos: Tensor, r_neg: Tensor,
                          one_sided: bool, out: Optional[Sequence[Tensor]] = None
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per output unit, the factors that turn positive/negative contributions into R+ / R-.

    Returns ``(a_pp, a_pn, a_np, a_nn)``: a positive contribution ``z`` receives ``z * a_pp`` of
    R+ and ``z * a_pn`` of R-; a negative one ``|z| * a_np`` of R+ and ``|z| * a_nn`` of R-.
    ``one_sided`` selects the dense/add behaviour of the reference (units with contributions of
    one sign share both maps over them; a tie ``R+ = R-`` goes the "swapped" way); without it
    (convolutions) every unit takes the mixed branch and ties give nothing. ``out``: four
    tensors (views of one buffer, say) to write the factors into.
    """
    # The case analysis runs on 0/1 float masks built from signs: on CPU, products and selects
    # with bool operands are many times slower than float arithmetic. pos, neg >= 0.
    t = pos - neg
    if bias is not None:
        t = t.add_(bias) if torch.broadcast_shapes(t.shape, bias.shape) == t.shape else t + bias
    s_t = t.sign_()
    order = (r_pos - r_neg).sign_().mul_(s_t)          # +1: the dominant side's map is the larger
    same = order.clamp(min=0)
    if one_sided:
        s_p, s_n = pos.sign(), neg.sign()
        only_p = s_p * (1 - s_n)
        only_n = s_n.mul_(1 - s_p)
        mixed = (1 - only_p).sub_(only_n)
        swapped = s_t.abs_().sub_(same).mul_(mixed)     # t != 0 and not same (ties included)
        same.mul_(mixed)
        take_pp, take_pn, take_np, take_nn = only_p + same, only_p.add_(swapped), only_n + swapped, only_n.add_(same)
    else:
        swapped = order.neg_().clamp_(min=0)
        take_pp, take_pn, take_np, take_nn = same, swapped, swapped, same
    one = torch.ones((), dtype=pos.dtype, device=pos.device)
    inv_pos, inv_neg = safe_div(one, pos), safe_div(one, neg)
    # mask first: a unit that takes nothing gets an exact 0 however small its side's sum
    dest = list(out) if out is not None else [None] * 4
    a_pp = torch.mul(r_pos, take_pp, out=dest[0]).mul_(inv_pos)
    a_pn = torch.mul(r_neg, take_pn, out=dest[1]).mul_(inv_pos)
    a_np = torch.mul(r_pos, take_np, out=dest[2]).mul_(inv_neg)
    a_nn = torch.mul(r_neg, take_nn, out=dest[3]).mul_(inv_neg)
    return a_pp, a_pn, a_np, a_nn


def dense_contrastive(x: Tensor, relevance: tuple[Tensor, Tensor], weight: Tensor, bias: Optional[Tensor],
                      fwd: LinearMap, bwd: LinearMap, one_sided: bool,
                      unit_dim: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """Contrastive-mode ``(R+, R-)`` of the input of ``y = fwd(x, W) + b`` (activations ignored).

    Positive and negative sums are computed from the sign-split operands, so that "no
    contribution of this sign" is an exact zero and a small side's sum carries no cancellation
    error (its coefficient ``R / side`` can be large). For the same reason the redistribution
    keeps ``W+`` and ``W-`` apart instead of using ``|x| |W|^T`` and ``x W^T``. A non-negative
    input (after ReLU, pooling of one, images) has no ``x-`` half: that halves the products.

    ``unit_dim`` (the output's unit/channel axis; ``None`` for grouped convolutions) lets the
    non-negative case run both sides as one product with ``W+`` and ``W-`` stacked as output
    units, and the redistribution as one transposed product over ``[W+; -W-]``.
    """
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    r_pos, r_neg = relevance
    if not bool((x < 0).any()):
        # R+ = x (W+^T a_pp - W-^T a_np);  R- = x (W+^T a_pn - W-^T a_nn)
        if unit_dim is None:
            pos, neg = fwd(x, wp), fwd(x, wn).neg_()
            a_pp, a_pn, a_np, a_nn = contrast_coefficients(pos, neg, bias, r_pos, r_neg, one_sided)
            del pos, neg
            g = bwd(torch.cat([a_pp, a_pn], dim=0), wp).sub_(bwd(torch.cat([a_np, a_nn], dim=0), wn))
        else:
            units = weight.shape[0]
            both = fwd(x, torch.cat([wp, wn], dim=0))
            pos, neg = both.narrow(unit_dim, 0, units), both.narrow(unit_dim, units, units).neg()
            # the four factors go straight into the transposed product's input: [a_pp a_np; a_pn a_nn]
            batch = pos.shape[0]
            coeffs = _stacked_buffer(both, batch)
            views = [coeffs.narrow(0, b0, batch).narrow(unit_dim, u0, units)
                     for b0, u0 in ((0, 0), (batch, 0), (0, units), (batch, units))]
            contrast_coefficients(pos, neg, bias, r_pos, r_neg, one_sided, out=views)
            del both, pos, neg, views
            g = bwd(coeffs, torch.cat([wp, -wn], dim=0))
        g_pos, g_neg = g.chunk(2, dim=0)
        return g_pos.mul_(x), g_neg.mul_(x)
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    pos = fwd(xp, wp).add_(fwd(xn, wn))
    neg = fwd(xp, wn).add_(fwd(xn, wp)).neg_()
    a_pp, a_pn, a_np, a_nn = contrast_coefficients(pos, neg, bias, r_pos, r_neg, one_sided)
    del pos, neg
    coeffs = torch.cat([a_pp, a_pn, a_np, a_nn], dim=0)
    del a_pp, a_pn, a_np, a_nn
    g_p = bwd(coeffs, wp).chunk(4, dim=0)
    g_n = bwd(coeffs, wn).chunk(4, dim=0)
    # sum_j z+_ji a_j = x+ (W+^T a) + x- (W-^T a);  sum_j |z-_ji| a_j = -x+ (W-^T a) - x- (W+^T a)
    r_pos = xp * (g_p[0] - g_n[2]) + xn * (g_n[0] - g_p[2])
    r_neg = xp * (g_p[1] - g_n[3]) + xn * (g_n[1] - g_p[3])
    return r_pos, r_neg


def _stacked_buffer(like: Tensor, batch: int) -> Tensor:
    """An empty ``(2 * batch, ...)`` tensor shaped and laid out like ``like`` otherwise."""
    shape = (2 * batch,) + tuple(like.shape[1:])
    channels_last = like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(
        memory_format=torch.channels_last)
    return torch.empty(shape, dtype=like.dtype, device=like.device,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _dense_maps(node: Node) -> tuple[LinearMap, LinearMap]:
    return (lambda x, w: torch.matmul(x, w.t())), (lambda c, w: torch.matmul(c, w))


def _conv_maps(node: Node, x_shape: Sequence[int]) -> tuple[LinearMap, LinearMap]:
    """The convolution without bias and its adjoint, a transposed convolution.

    2-D maps run in channels-last layout: oneDNN's kernels for it are several times faster on
    CPU here (notably for few input channels, and for the transposed convolution, which is
    also faster than the convolution's input-gradient routine). The values are the same.
    """
    p = node.params
    nd = p["dims"]
    conv, conv_t = ((F.conv1d, F.conv_transpose1d), (F.conv2d, F.conv_transpose2d))[nd - 1]
    stride, padding, dilation, groups = p["stride"], p["padding"], p["dilation"], p["groups"]
    kernel = tuple(p["weight"].shape[2:])
    # the transposed convolution's output_padding that gives back exactly the input's size
    extra = tuple((n + 2 * pd - d * (k - 1) - 1) % s
                  for n, pd, d, k, s in zip(x_shape[2:], padding, dilation, kernel, stride))
    fmt = torch.channels_last if nd == 2 else torch.contiguous_format

    def fwd(x: Tensor, w: Tensor) -> Tensor:
        return conv(x.contiguous(memory_format=fmt), w, None, stride, padding, dilation, groups)

    def bwd(c: Tensor, w: Tensor) -> Tensor:
        return conv_t(c.contiguous(memory_format=fmt), w, None, stride, padding, extra, groups, dilation)

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

    reads_output = False

    def _prepare(self, node: Node, x: Tensor) -> tuple[Tensor, LinearMap, LinearMap]:
        pre = node.params.get("pre_pad")
        if pre is not None:
            x = F.pad(x, pre)
        if node.kind == "linear":
            return x, *_dense_maps(node)
        if node.params["dims"] == 2:
            x = x.contiguous(memory_format=torch.channels_last)     # see _conv_maps
        return x, *_conv_maps(node, x.shape)

    @staticmethod
    def _crop(node: Node, r: Tensor) -> Tensor:
        pre = node.params.get("pre_pad")
        return r if pre is None else F.pad(r, [-v for v in pre])

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        p = node.params
        rows = _live_rows(node, inputs[0], [relevance])
        if rows is not None:
            (r,) = self.default(node, [_take(inputs[0], rows)], None, _take(relevance, rows), opts)[:1]
            return [_put(r, rows, inputs[0])] + [None] * (len(inputs) - 1)
        x, fwd, bwd = self._prepare(node, inputs[0])
        r = dense_default(x, relevance, p["weight"], p["abs_weight"], _bias_shape(node, p["bias"]), fwd, bwd,
                          saturation_bounds(node), conv_saturation=node.kind != "linear")
        return [self._crop(node, r)] + [None] * (len(inputs) - 1)

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        p = node.params
        rows = _live_rows(node, inputs[0], list(relevance))
        if rows is not None:
            ((rp, rn),) = self.contrastive(node, [_take(inputs[0], rows)], None,
                                           (_take(relevance[0], rows), _take(relevance[1], rows)), opts)[:1]
            return [(_put(rp, rows, inputs[0]), _put(rn, rows, inputs[0]))] + [None] * (len(inputs) - 1)
        x, fwd, bwd = self._prepare(node, inputs[0])
        unit_dim = -1 if node.kind == "linear" else (1 if p["groups"] == 1 else None)
        rp, rn = dense_contrastive(x, relevance, p["weight"], _bias_shape(node, p["bias"]), fwd, bwd,
                                   one_sided=node.kind == "linear", unit_dim=unit_dim)
        return [(self._crop(node, rp), self._crop(node, rn))] + [None] * (len(inputs) - 1)


def _live_rows(node: Node, x: Tensor, maps: Sequence[Tensor]) -> Optional[Tensor]:
    """For a dense layer applied to a sequence (input of 3 or more dimensions): the rows (tokens,
    over all leading dimensions) that hold any relevance, when they are under half of them (a
    language model's head explained at one position). The others give exactly 0, so the rule
    runs on these rows only: the same values for a fraction of the time and memory."""
    if node.kind != "linear" or x.dim() < 3:
        return None
    live = maps[0].reshape(-1, maps[0].shape[-1]).ne(0).any(dim=1)
    for m in maps[1:]:
        live |= m.reshape(-1, m.shape[-1]).ne(0).any(dim=1)
    if int(live.sum()) * 2 > live.numel():
        return None
    return live.nonzero().squeeze(1)


def _take(t: Tensor, rows: Tensor) -> Tensor:
    return t.reshape(-1, t.shape[-1]).index_select(0, rows)


def _put(r: Tensor, rows: Tensor, like: Tensor) -> Tensor:
    out = torch.zeros(like.shape[:-1].numel(), r.shape[-1], dtype=r.dtype, device=r.device)
    return out.index_copy_(0, rows, r).reshape(like.shape[:-1] + (r.shape[-1],))


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
