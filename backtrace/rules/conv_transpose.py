"""Transposed convolutions (ConvTranspose1d/2d/3d): the proportional rule on the adjoint map.

Kinds ``"conv_transpose1d"``, ``"conv_transpose2d"``, ``"conv_transpose3d"``. ``node.params``:
``"module"`` = the ``nn.ConvTranspose*d`` (weight, bias, stride, padding, output_padding,
dilation, groups are read from it), or those same names as plain entries (the argument names
of ``F.conv_transpose*d``; ``dims`` is read from the kind). The activation that follows is
``node.meta["activation"]`` (the engine's convention), turned into saturation bounds by
:func:`backtrace.rules.base.saturation_bounds`.

Each output position j is fed by the inputs i with ``z_ji = W_ji x_i``. Default mode, as for
conv: ``D_j = P_j + N_j + |b_j|``; positives kept only where ``P + N > L``, negatives only
where ``P + N < U`` (non-zero bounds only); ``R_i = sum_j R_j |z_ji| / D_j``. Contrastive mode
follows the conv version (``t = P + b - N``; the dominant side takes ``max(R+, R-)`` into the
map it came from, the other side the minimum; no one-sided special case).

Vectorised: ``x = x+ + x-`` and ``W = W+ + W-``; P and N are two transposed convolutions of
the sign-split input with the sign-split kernel, and the redistribution is the adjoint (a
plain convolution) of the coefficients ``R / D``. The sign halves are stacked along the
channel axis (per group) so one call does the work of four.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backtrace.ir import Node
from backtrace.rules.base import (EvalOptions, PairRelevance, Relevance, Rule, register, safe_div,
                                  saturation_bounds)

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass(frozen=True)
class ConvTransposeSpec:
    """Everything ``F.conv_transpose*d`` needs, whatever the node came from."""

    dims: int
    weight: Tensor                 # (Cin, Cout / groups, *k)
    bias: Optional[Tensor]
    stride: Any
    padding: Any
    output_padding: Any
    dilation: Any
    groups: int

    @staticmethod
    def from_node(node: Node) -> "ConvTransposeSpec":
        dims = int(node.kind[-2])
        module = node.params.get("module")
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            if module.padding_mode != "zeros":
                raise ValueError(f"node {node.name!r}: ConvTranspose padding_mode {module.padding_mode!r} "
                                 f"is not supported; valid: 'zeros'")
            bias = None if module.bias is None else module.bias.detach()
            return ConvTransposeSpec(dims, module.weight.detach(), bias, module.stride, module.padding,
                                     module.output_padding, module.dilation, module.groups)
        p = node.params
        return ConvTransposeSpec(dims, p["weight"], p.get("bias"), p.get("stride", 1), p.get("padding", 0),
                                 p.get("output_padding", 0), p.get("dilation", 1), int(p.get("groups", 1)))

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        return _CONV_T[self.dims](x, weight, None, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)

    def adjoint(self, y: Tensor, weight: Tensor, in_shape: torch.Size) -> Tensor:
        """The transpose of :meth:`forward` (a strided convolution), cropped to the input size
        (output_padding can leave one extra position when it is not below the stride)."""
        out = _CONV[self.dims](y, weight, None, self.stride, self.padding, self.dilation, self.groups)
        crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in in_shape[2:])
        return out[crop]


def _stack_halves(a: Tensor, b: Tensor, groups: int) -> Tensor:
    """Concatenate two channel-first tensors along dim 1, group by group, so that a grouped
    conv sees ``[a_g, b_g]`` as group g's channels."""
    n, c = a.shape[:2]
    rest = a.shape[2:]
    return torch.stack((a.reshape(n, groups, c // groups, *rest), b.reshape(n, groups, c // groups, *rest)),
                       dim=2).reshape(n, 2 * c, *rest)


def _split_halves(t: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`_stack_halves`."""
    n, c2 = t.shape[:2]
    rest = t.shape[2:]
    v = t.reshape(n, groups, 2, c2 // (2 * groups), *rest)
    return v[:, :, 0].reshape(n, c2 // 2, *rest), v[:, :, 1].reshape(n, c2 // 2, *rest)


class _SignSplit:
    """The input and kernel split by sign, stacked so that one transposed convolution gives the
    positive sums P and one more the negative sums N; ``redistribute`` is the matching adjoint."""

    def __init__(self, spec: ConvTransposeSpec, x: Tensor) -> None:
        self.spec = spec
        w = spec.weight.to(x.dtype)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        # ConvTranspose weight is (Cin, Cout/g, *k): "channels" of the weight are its dim 0.
        self.w_pn = _stack_halves(wp.unsqueeze(0), wn.unsqueeze(0), spec.groups).squeeze(0)   # [W+, W-]
        self.xp, self.xn = x.clamp(min=0), x.clamp(max=0)
        self.in_shape = x.shape

    def sums(self) -> tuple[Tensor, Tensor]:
        """P = convT(x+, W+) + convT(x-, W-), N = -(convT(x+, W-) + convT(x-, W+))."""
        g, n = self.spec.groups, self.xp.shape[0]
        pos_in = _stack_halves(self.xp, self.xn, g)      # pairs with [W+, W-]
        neg_in = _stack_halves(self.xn, self.xp, g)      # [x-, x+] with [W+, W-]
        out = self.spec.forward(torch.cat((pos_in, neg_in)), self.w_pn)
        return out[:n], -out[n:]

    def redistribute(self, coef_pos: Tensor, coef_neg: Tensor) -> Tensor:
        """``sum_j |z_ji| * c_j`` over positive contributions (coefficients ``coef_pos``) plus
        over negative ones (``coef_neg``)."""
        g, n = self.spec.groups, coef_pos.shape[0]
        back = self.spec.adjoint(torch.cat((coef_pos, coef_neg)), self.w_pn, self.in_shape)
        pp_w, pn_w = _split_halves(back[:n], g)          # conv(c_pos, W+), conv(c_pos, W-)
        np_w, nn_w = _split_halves(back[n:], g)          # conv(c_neg, W+), conv(c_neg, W-)
        return self.xp * pp_w + self.xn * pn_w - self.xp * nn_w - self.xn * np_w


def _bias_view(spec: ConvTransposeSpec, like: Tensor) -> Tensor:
    if spec.bias is None:
        return torch.zeros((), dtype=like.dtype, device=like.device)
    return spec.bias.to(like.dtype).reshape(1, -1, *([1] * spec.dims))


@register("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
class ConvTransposeRule(Rule):
    """The linear/conv proportional rule applied to a transposed convolution."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        spec = ConvTransposeSpec.from_node(node)
        x = inputs[0]
        split = _SignSplit(spec, x)
        pos, neg = split.sums()
        total = pos + neg
        denom = total + _bias_view(spec, x).abs()
        lower, upper = saturation_bounds(node)
        keep_pos = torch.ones_like(total, dtype=torch.bool) if not lower else total > lower
        keep_neg = torch.ones_like(total, dtype=torch.bool) if not upper else total < upper
        coef = safe_div(relevance.to(x.dtype), denom)
        rel = split.redistribute(coef * keep_pos, coef * keep_neg)
        return [rel] + [None] * (len(inputs) - 1)

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        spec = ConvTransposeSpec.from_node(node)
        x = inputs[0]
        split = _SignSplit(spec, x)
        pos, neg = split.sums()
        rp, rn = (r.to(x.dtype) for r in relevance)
        t = pos + _bias_view(spec, x) - neg
        up, down = t > 0, t < 0
        p_bigger, n_bigger = rp > rn, rp < rn
        # Which map each side's share lands in (the reference's four aggregate weights).
        pos_side_to_pos = (up & p_bigger) | (down & n_bigger)
        pos_side_to_neg = (up & n_bigger) | (down & p_bigger)
        safe_pos = torch.where(pos > 0, pos, torch.ones_like(pos))
        safe_neg = torch.where(neg > 0, neg, torch.ones_like(neg))
        # The negative side gets the complementary assignment.
        out_pos = split.redistribute(rp * pos_side_to_pos / safe_pos, rp * pos_side_to_neg / safe_neg)
        out_neg = split.redistribute(rn * pos_side_to_neg / safe_pos, rn * pos_side_to_pos / safe_neg)
        return [(out_pos, out_neg)] + [None] * (len(inputs) - 1)


def conv_transpose_node(name: str, module: nn.Module, act: Optional[str] = None) -> Node:
    """A node for ``module`` as the front end would build it (handy for tests and tools)."""
    dims = {nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 2, nn.ConvTranspose3d: 3}[type(module)]
    meta = {} if act is None else {"activation": act}
    return Node(name=name, kind=f"conv_transpose{dims}d", inputs=("x",), params={"module": module}, meta=meta)

