"""nn.LSTM: re-run the cell from the weights, then walk relevance back over time.

Kind ``"lstm"``; ``node.params["module"]`` = the ``nn.LSTM`` (any ``num_layers``,
``batch_first`` either way, ``bidirectional`` allowed; ``proj_size > 0`` and packed sequences
are refused). Inputs ``(x,)`` or ``(x, (h0, c0))``; the output is the module's whole result
``(out, (h_n, c_n))`` and the incoming relevance the same structure (zeros, or ``None``,
where nothing arrived). The rule returns ``[R_x]``, plus ``(R_h0, R_c0)`` (shaped like
``(h0, c0)``) when the initial state is an input: it is what the walk back leaves on it.

Per step (gates in PyTorch order i, f, g, o; ``pre = (x W_ih^T + b_ih + b_hh) + h_prev W_hh^T``):

- ``h = o * tanh(c)``: multiply rule, ``R_a = |ab - a| / (|ab - a| + |ab - b|) * R``;
- the carried ``R_c`` is added to tanh(c)'s share;
- ``c = f * c_prev + i * g``: add rule (shares ``|a_k| / sum |a|``), each product by the
  multiply rule;
- each gate's relevance goes to its pre-activation unchanged, is split between the input part
  (with bias) and the recurrent part by the add rule, and each part goes back through the
  linear rule with no activation (``R_i = |x_i| sum_j |W_ji| R_j / D_j``, ``D_j`` the sum of
  ``|W_ji x_i|`` plus ``|b_j|`` for the input kernel, without bias for the recurrent one).

Per-step output relevance is added into ``R_h`` at its step; ``h_n``/``c_n`` relevance enters
at the last step of each layer and direction. Stacked layers hand their input relevance down
as the per-step output relevance of the layer below. A reverse direction is the same walk
on the time-reversed sequence.

Contrastive mode: every step above is linear in the relevance once the forward pass is fixed
(no saturation is involved), so the default rule is applied to ``R+`` and ``R-`` separately.

Vectorised over the batch and the units; Python loops run over layers, directions and steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from backtrace.ir import Node
from backtrace.rules.base import EvalOptions, Rule, register, safe_div


def multiply_rule(a: Tensor, b: Tensor, rel: Tensor) -> tuple[Tensor, Tensor]:
    """Split the relevance of ``a * b``: ``R_a = |ab - a| / (|ab - a| + |ab - b|) R`` (0/0 gives 0)."""
    prod = a * b
    da, db = (prod - a).abs(), (prod - b).abs()
    total = da + db
    return safe_div(da, total) * rel, safe_div(db, total) * rel


def add_rule(a: Tensor, b: Tensor, rel: Tensor) -> tuple[Tensor, Tensor]:
    """Split the relevance of ``a + b`` in proportion to ``|a|`` and ``|b|``."""
    aa, bb = a.abs(), b.abs()
    total = aa + bb
    return safe_div(aa, total) * rel, safe_div(bb, total) * rel


def linear_rule_no_activation(x: Tensor, weight: Tensor, bias: Optional[Tensor], rel: Tensor) -> Tensor:
    """Proportional rule for ``x W^T + b`` with no saturation: ``|x| * ((R / D) @ |W|)``."""
    abs_w = weight.abs()
    denom = x.abs() @ abs_w.T
    if bias is not None:
        denom = denom + bias.abs()
    return x.abs() * (safe_div(rel, denom) @ abs_w)


@dataclass
class _CellLog:
    """What the forward re-run keeps for one layer and direction, each ``(N, T, .)``."""

    x: Tensor          # layer input
    x_part: Tensor     # x W_ih^T + b        (4H)
    h_part: Tensor     # h_prev W_hh^T       (4H)
    h_prev: Tensor
    c_prev: Tensor
    gates: Tensor      # i, f, g, o after their activations (4H)
    c: Tensor
    h: Tensor


def _run_direction(x: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Optional[Tensor],
                   h0: Tensor, c0: Tensor) -> _CellLog:
    """One layer, one direction, over a batch-first sequence (already reversed if backward)."""
    x_part = x @ w_ih.T
    if bias is not None:
        x_part = x_part + bias
    h, c = h0, c0
    logs: dict[str, list[Tensor]] = {k: [] for k in ("h_part", "h_prev", "c_prev", "gates", "c", "h")}
    for t in range(x.shape[1]):
        h_part = h @ w_hh.T
        i, f, g, o = (x_part[:, t] + h_part).chunk(4, dim=1)
        gates = torch.cat((torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)), dim=1)
        gi, gf, gg, go = gates.chunk(4, dim=1)
        c_new = gf * c + gi * gg
        h_new = go * torch.tanh(c_new)
        for k, v in (("h_part", h_part), ("h_prev", h), ("c_prev", c), ("gates", gates), ("c", c_new),
                     ("h", h_new)):
            logs[k].append(v)
        h, c = h_new, c_new
    stacked = {k: torch.stack(v, dim=1) for k, v in logs.items()}
    return _CellLog(x=x, x_part=x_part, **stacked)


def _walk_back(log: _CellLog, w_ih: Tensor, w_hh: Tensor, bias: Optional[Tensor], rel_seq: Tensor,
               rel_h_last: Tensor, rel_c_last: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Relevance of the layer input ``(N, T, in)`` and of the initial ``h``, ``c``, from the
    per-step ``R_h`` and the final states' relevance."""
    steps = rel_seq.shape[1]
    rel_h, rel_c = rel_h_last, rel_c_last
    rel_x = torch.zeros_like(log.x)
    for t in range(steps - 1, -1, -1):
        rel_h = rel_h + rel_seq[:, t]
        gi, gf, gg, go = log.gates[:, t].chunk(4, dim=1)
        c, c_prev = log.c[:, t], log.c_prev[:, t]
        rel_o, rel_tanh_c = multiply_rule(go, torch.tanh(c), rel_h)
        rel_c = rel_tanh_c + rel_c
        rel_fc, rel_ig = add_rule(gf * c_prev, gi * gg, rel_c)
        rel_f, rel_c_prev = multiply_rule(gf, c_prev, rel_fc)
        rel_i, rel_g = multiply_rule(gi, gg, rel_ig)
        rel_gates = torch.cat((rel_i, rel_f, rel_g, rel_o), dim=1)
        rel_xpart, rel_hpart = add_rule(log.x_part[:, t], log.h_part[:, t], rel_gates)
        rel_x[:, t] = linear_rule_no_activation(log.x[:, t], w_ih, bias, rel_xpart)
        rel_h = linear_rule_no_activation(log.h_prev[:, t], w_hh, None, rel_hpart)
        rel_c = rel_c_prev
    return rel_x, rel_h, rel_c


def _check_module(node: Node) -> nn.LSTM:
    module = node.params.get("module")
    if not isinstance(module, nn.LSTM):
        raise ValueError(f"node {node.name!r}: lstm needs params['module'] = the nn.LSTM, got {type(module).__name__}")
    if module.proj_size:
        raise ValueError(f"node {node.name!r}: nn.LSTM with proj_size={module.proj_size} is not supported; valid: 0")
    return module


def _layer_weights(module: nn.LSTM, layer: int, direction: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    sfx = f"_l{layer}" + ("_reverse" if direction else "")
    w_ih = getattr(module, "weight_ih" + sfx).to(dtype)
    w_hh = getattr(module, "weight_hh" + sfx).to(dtype)
    bias = None
    if module.bias:
        bias = (getattr(module, "bias_ih" + sfx) + getattr(module, "bias_hh" + sfx)).to(dtype)
    return w_ih, w_hh, bias


def _as_tensor(r: Any, like_shape: torch.Size, ref: Tensor) -> Tensor:
    if r is None:
        return torch.zeros(like_shape, dtype=ref.dtype, device=ref.device)
    return r.to(ref.dtype)


def _split_relevance(relevance: Any, out_shape: torch.Size, state_shape: torch.Size, ref: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(R_out, (R_hn, R_cn))``, a bare ``R_out``, or ``None`` parts -> three tensors."""
    if isinstance(relevance, Tensor):
        r_out, r_h, r_c = relevance, None, None
    else:
        r_out, states = relevance
        r_h, r_c = (None, None) if states is None else states
    return (_as_tensor(r_out, out_shape, ref), _as_tensor(r_h, state_shape, ref), _as_tensor(r_c, state_shape, ref))


def lstm_relevance(module: nn.LSTM, x: Tensor, hx: Optional[tuple[Tensor, Tensor]],
                   relevance: Any) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The LSTM rule for one relevance structure: relevance of ``x`` (shape of ``x``) and of the
    initial state ``(h0, c0)`` (each ``(layers * directions, N, H)``)."""
    if x.dim() != 3:
        raise ValueError(f"nn.LSTM input must be batched 3-D; got shape {tuple(x.shape)}")
    dtype = x.dtype
    xb = x if module.batch_first else x.transpose(0, 1)            # (N, T, in)
    n, steps = xb.shape[:2]
    dirs = 2 if module.bidirectional else 1
    hid = module.hidden_size
    state_shape = torch.Size((module.num_layers * dirs, n, hid))
    out_shape = torch.Size((n, steps, dirs * hid) if module.batch_first else (steps, n, dirs * hid))
    r_out, r_hn, r_cn = _split_relevance(relevance, out_shape, state_shape, x)
    if not module.batch_first:
        r_out = r_out.transpose(0, 1)
    if hx is None:
        h0 = c0 = torch.zeros(state_shape, dtype=dtype, device=x.device)
    else:
        h0, c0 = (s.to(dtype) for s in hx)

    with torch.no_grad():
        logs: list[list[_CellLog]] = []
        layer_in = xb.to(dtype)
        for layer in range(module.num_layers):
            per_dir = []
            for d in range(dirs):
                w_ih, w_hh, bias = _layer_weights(module, layer, d, dtype)
                seq = layer_in.flip(1) if d else layer_in
                k = layer * dirs + d
                per_dir.append(_run_direction(seq, w_ih, w_hh, bias, h0[k], c0[k]))
            logs.append(per_dir)
            layer_in = torch.cat([lg.h.flip(1) if d else lg.h for d, lg in enumerate(per_dir)], dim=2)

        rel_above = r_out
        rel_h0, rel_c0 = torch.zeros_like(h0), torch.zeros_like(c0)
        for layer in range(module.num_layers - 1, -1, -1):
            rel_below = torch.zeros_like(logs[layer][0].x)
            for d in range(dirs):
                w_ih, w_hh, bias = _layer_weights(module, layer, d, dtype)
                k = layer * dirs + d
                rel_seq = rel_above[..., d * hid:(d + 1) * hid]
                rel_seq = rel_seq.flip(1) if d else rel_seq
                rel_x, rel_h0[k], rel_c0[k] = _walk_back(logs[layer][d], w_ih, w_hh, bias, rel_seq, r_hn[k], r_cn[k])
                rel_below = rel_below + (rel_x.flip(1) if d else rel_x)
            rel_above = rel_below
    rel_x = rel_above if module.batch_first else rel_above.transpose(0, 1)
    return rel_x, (rel_h0, rel_c0)


def lstm_input_relevance(module: nn.LSTM, x: Tensor, hx: Optional[tuple[Tensor, Tensor]], relevance: Any) -> Tensor:
    """Relevance of ``x`` alone (see :func:`lstm_relevance`)."""
    return lstm_relevance(module, x, hx, relevance)[0]


@register("lstm")
class LSTMRule(Rule):
    """Relevance through an nn.LSTM by re-running its cells (see the module docstring)."""

    @staticmethod
    def _hx(inputs: Sequence[Any]) -> Optional[tuple[Tensor, Tensor]]:
        if len(inputs) > 1 and inputs[1] is not None:
            h0, c0 = inputs[1]
            return h0, c0
        return None

    def default(self, node: Node, inputs: Sequence[Any], output: Any, relevance: Any,
                opts: EvalOptions) -> list[Any]:
        module = _check_module(node)
        hx = self._hx(inputs)
        rel_x, rel_state = lstm_relevance(module, inputs[0], hx, relevance)
        return [rel_x] + ([rel_state if hx is not None else None] if len(inputs) > 1 else [])

    def contrastive(self, node: Node, inputs: Sequence[Any], output: Any, relevance: Any,
                    opts: EvalOptions) -> list[Any]:
        """``relevance`` is ``(structure for R+, structure for R-)``; the default rule runs on
        each (the walk is linear in the relevance)."""
        module = _check_module(node)
        hx = self._hx(inputs)
        x_pos, state_pos = lstm_relevance(module, inputs[0], hx, relevance[0])
        x_neg, state_neg = lstm_relevance(module, inputs[0], hx, relevance[1])
        rest = [(state_pos, state_neg) if hx is not None else None] if len(inputs) > 1 else []
        return [(x_pos, x_neg)] + rest
