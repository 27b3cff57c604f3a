"""Each rule against a naive float64 loop implementation of the rule as documented."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backtrace import Backtrace

DT = torch.float64
BOUNDS = {None: (None, None), "relu": (None, None), "tanh": (-2.0, 2.0), "sigmoid": (-4.0, 4.0),
          "softmax": (-1.0, 2.0)}

Contribs = list[tuple[tuple, float]]


def unit_default(contribs: Contribs, b: float, r: float, act: Optional[str], conv: bool) -> dict:
    """One output unit, default mode: share r over |z| / D, saturation as the reference."""
    low, up = BOUNDS[act]
    p = sum(z for _, z in contribs if z > 0)
    n = sum(-z for _, z in contribs if z < 0)
    bp, bn = max(b, 0.0), max(-b, 0.0)
    keep_p = keep_n = True
    if conv:
        if low is not None:
            keep_p = p + n > low
        if up is not None:
            keep_n = p + n < up
        den = p + n + bp + bn
    else:
        t = p + bp - n - bn
        if low is not None and t < low:
            keep_p = False
        if up is not None and t > up:
            keep_n = False
        den = p * keep_p + n * keep_n + bp + bn
    out: dict = defaultdict(float)
    if den == 0:
        return out
    for i, z in contribs:
        if (z > 0 and keep_p) or (z < 0 and keep_n):
            out[i] += abs(z) / den * r
    return out


def unit_contrast(contribs: Contribs, b: float, rp: float, rn: float, one_sided: bool) -> tuple[dict, dict]:
    """One output unit, contrastive mode, written as the rule reads in words."""
    p = sum(z for _, z in contribs if z > 0)
    n = sum(-z for _, z in contribs if z < 0)
    pos: dict = defaultdict(float)
    neg: dict = defaultdict(float)
    if one_sided and n == 0 and p > 0:
        for i, z in contribs:
            if z > 0:
                pos[i] += z / p * rp
                neg[i] += z / p * rn
        return pos, neg
    if one_sided and p == 0 and n > 0:
        for i, z in contribs:
            if z < 0:
                pos[i] += -z / n * rp
                neg[i] += -z / n * rn
        return pos, neg
    t = p + b - n
    if t == 0:
        return pos, neg
    dominant_positive = t > 0
    if rp == rn:
        if not one_sided:
            return pos, neg
        # dense/add tie: positive contributions feed R-, negative ones R+ (the reference's else branch)
        big_from_pos = not dominant_positive
    else:
        big_from_pos = rp > rn
    big, small = max(rp, rn), min(rp, rn)
    big_map, small_map = (pos, neg) if big_from_pos else (neg, pos)
    for i, z in contribs:
        if z > 0 and p > 0:
            share = z / p
            (big_map if dominant_positive else small_map)[i] += share * (big if dominant_positive else small)
        elif z < 0 and n > 0:
            share = -z / n
            (small_map if dominant_positive else big_map)[i] += share * (small if dominant_positive else big)
    return pos, neg


def gather(units: Iterable[tuple[Contribs, float, tuple]], rel: torch.Tensor, shape: tuple, act, conv,
           mode: str, rel_neg: Optional[torch.Tensor] = None):
    out = torch.zeros(shape, dtype=DT)
    out_n = torch.zeros(shape, dtype=DT)
    for contribs, b, j in units:
        if mode == "default":
            for i, v in unit_default(contribs, b, rel[j].item(), act, conv).items():
                out[i] += v
        else:
            pos, neg = unit_contrast(contribs, b, rel[j].item(), rel_neg[j].item(), one_sided=not conv)
            for i, v in pos.items():
                out[i] += v
            for i, v in neg.items():
                out_n[i] += v
    return out if mode == "default" else (out, out_n)


def dense_units(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    for j in range(w.shape[0]):
        yield [((i,), (w[j, i] * x[i]).item()) for i in range(w.shape[1])], b[j].item(), (j,)


def conv2d_units(x, w, b, stride, pad, dil, groups):
    cin, h, wd = x.shape
    cout, cpg, kh, kw = w.shape
    oh = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    opg = cout // groups
    for co in range(cout):
        g = co // opg
        for a in range(oh):
            for c in range(ow):
                contribs = []
                for ci in range(cpg):
                    for u in range(kh):
                        for v in range(kw):
                            ih, iw = a * stride - pad + u * dil, c * stride - pad + v * dil
                            if 0 <= ih < h and 0 <= iw < wd:
                                cc = g * cpg + ci
                                contribs.append(((cc, ih, iw), (w[co, ci, u, v] * x[cc, ih, iw]).item()))
                yield contribs, b[co].item(), (co, a, c)


def _explain_layer(layer: nn.Module, act: Optional[str], x: torch.Tensor, rel: torch.Tensor, mode: str,
                   rel_neg=None):
    """Relevance at the input of ``act(layer(x))`` given the relevance of its output."""
    from backtrace.rules import RULES
    acts = {"tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "relu": nn.ReLU(), "softmax": nn.Softmax(-1)}
    model = nn.Sequential(layer, acts[act]) if act else nn.Sequential(layer)
    bt = Backtrace(model, dtype=DT)
    node = bt.graph.nodes[1]
    outs = bt.predict(x)
    rule = RULES[node.kind]
    if mode == "default":
        return rule.default(node, [outs[bt.graph.inputs[0]]], outs[node.name], rel, None)[0]
    return rule.contrastive(node, [outs[bt.graph.inputs[0]]], outs[node.name], (rel, rel_neg), None)[0]


@pytest.mark.parametrize("act", [None, "tanh", "sigmoid", "softmax"])
def test_linear_default_matches_loop(act: Optional[str]) -> None:
    layer = nn.Linear(6, 5).double()
    with torch.no_grad():
        layer.weight.mul_(3)
    x = torch.randn(2, 6, dtype=DT)
    rel = torch.randn(2, 5, dtype=DT)
    ours = _explain_layer(layer, act, x, rel, "default")
    for s in range(2):
        naive = gather(dense_units(x[s], layer.weight.detach(), layer.bias.detach()), rel[s], (6,), act, False,
                       "default")
        torch.testing.assert_close(ours[s], naive, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stride,pad,dil,groups", [(1, 1, 1, 1), (2, 1, 1, 2), (1, 2, 2, 1), (2, 0, 1, 4)])
@pytest.mark.parametrize("act", [None, "sigmoid"])
def test_conv2d_default_matches_loop(stride, pad, dil, groups, act) -> None:
    layer = nn.Conv2d(4, 4, 3, stride=stride, padding=pad, dilation=dil, groups=groups).double()
    x = torch.randn(2, 4, 7, 6, dtype=DT)
    out_shape = layer(x).shape
    rel = torch.randn(out_shape, dtype=DT)
    ours = _explain_layer(layer, act, x, rel, "default")
    w, b = layer.weight.detach(), layer.bias.detach()
    for s in range(2):
        naive = gather(conv2d_units(x[s], w, b, stride, pad, dil, groups), rel[s], (4, 7, 6), act, True, "default")
        torch.testing.assert_close(ours[s], naive, rtol=1e-9, atol=1e-11)


def test_linear_contrastive_matches_loop() -> None:
    layer = nn.Linear(5, 6).double()
    x = torch.randn(3, 5, dtype=DT)
    x[0, :3] = 0.0                                   # makes one-sided units likely
    with torch.no_grad():
        layer.weight[0] = layer.weight[0].abs()      # unit 0: positive contributions only (x[1] > 0)
    x[1] = x[1].abs()
    rp, rn = torch.rand(3, 6, dtype=DT), torch.rand(3, 6, dtype=DT)
    rn[2, :2] = rp[2, :2]                            # ties
    ours = _explain_layer(layer, None, x, rp, "contrastive", rn)
    for s in range(3):
        naive = gather(dense_units(x[s], layer.weight.detach(), layer.bias.detach()), rp[s], (5,), None, False,
                       "contrastive", rn[s])
        torch.testing.assert_close(ours[0][s], naive[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ours[1][s], naive[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stride,pad,dil,groups", [(1, 1, 1, 1), (2, 1, 2, 2)])
def test_conv2d_contrastive_matches_loop(stride, pad, dil, groups) -> None:
    layer = nn.Conv2d(2, 4, 3, stride=stride, padding=pad, dilation=dil, groups=groups).double()
    x = torch.randn(2, 2, 6, 7, dtype=DT)
    shape = layer(x).shape
    rp, rn = torch.rand(shape, dtype=DT), torch.rand(shape, dtype=DT)
    rn[0, 0] = rp[0, 0]
    ours = _explain_layer(layer, None, x, rp, "contrastive", rn)
    w, b = layer.weight.detach(), layer.bias.detach()
    for s in range(2):
        naive = gather(conv2d_units(x[s], w, b, stride, pad, dil, groups), rp[s], (2, 6, 7), None, True,
                       "contrastive", rn[s])
        torch.testing.assert_close(ours[0][s], naive[0], rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(ours[1][s], naive[1], rtol=1e-9, atol=1e-11)


def test_conv1d_depthwise_default_matches_conv2d_loop() -> None:
    layer = nn.Conv1d(3, 6, 3, stride=2, padding=1, groups=3).double()
    x = torch.randn(2, 3, 9, dtype=DT)
    rel = torch.randn(layer(x).shape, dtype=DT)
    ours = _explain_layer(layer, None, x, rel, "default")
    for s in range(2):
        naive = torch.zeros(3, 9, dtype=DT)
        for co in range(6):
            g = co // 2
            for o in range(rel.shape[-1]):
                contribs = []
                for u in range(3):
                    i = o * 2 - 1 + u
                    if 0 <= i < 9:
                        contribs.append(((g, i), (layer.weight[co, 0, u] * x[s, g, i]).item()))
                for i, v in unit_default(contribs, layer.bias[co].item(), rel[s, co, o].item(), None, True).items():
                    naive[i] += v
        torch.testing.assert_close(ours[s], naive, rtol=1e-9, atol=1e-11)


def _pool_relevance(pool: nn.Module, x: torch.Tensor, rel: torch.Tensor, mode: str = "default", rel_neg=None):
    bt = Backtrace(nn.Sequential(pool), dtype=DT)
    outs = bt.predict(x)
    if mode == "default":
        return _rule(bt, outs, rel)
    return _rule(bt, outs, rel, rel_neg)


def _rule(bt, outs, rel, rel_neg=None):
    from backtrace.rules import RULES
    node = bt.graph.nodes[1]
    if rel_neg is None:
        return RULES[node.kind].default(node, [outs[bt.graph.inputs[0]]], outs[node.name], rel, None)[0]
    return RULES[node.kind].contrastive(node, [outs[bt.graph.inputs[0]]], outs[node.name], (rel, rel_neg), None)[0]


def test_maxpool_overlapping_windows_split_ties() -> None:
    x = torch.randn(1, 2, 5, 6, dtype=DT)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = 5.0             # a tie inside several windows
    pool = nn.MaxPool2d(3, stride=1, padding=1)
    rel = torch.rand(pool(x).shape, dtype=DT)
    ours = _pool_relevance(pool, x, rel)
    naive = torch.zeros_like(x)
    for c in range(2):
        for a in range(rel.shape[2]):
            for b in range(rel.shape[3]):
                cells = [(i, j) for i in range(a - 1, a + 2) for j in range(b - 1, b + 2) if 0 <= i < 5 and 0 <= j < 6]
                m = max(x[0, c, i, j].item() for i, j in cells)
                hits = [(i, j) for i, j in cells if x[0, c, i, j].item() == m]
                for i, j in hits:
                    naive[0, c, i, j] += rel[0, c, a, b] / len(hits)
    torch.testing.assert_close(ours, naive)


def _naive_max_pool_2d(x: torch.Tensor, rel: torch.Tensor, k: tuple, s: tuple, p: tuple, d: tuple) -> torch.Tensor:
    """Each output's relevance to the maxima of its window (ties split equally), one window at a time."""
    naive = torch.zeros_like(x)
    H, W = x.shape[-2:]
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for a in range(rel.shape[2]):
                for b in range(rel.shape[3]):
                    cells = [(a * s[0] - p[0] + u * d[0], b * s[1] - p[1] + v * d[1])
                             for u in range(k[0]) for v in range(k[1])]
                    cells = [(i, j) for i, j in cells if 0 <= i < H and 0 <= j < W]
                    m = max(x[n, c, i, j].item() for i, j in cells)
                    hits = [(i, j) for i, j in cells if x[n, c, i, j].item() == m]
                    for i, j in hits:
                        naive[n, c, i, j] += rel[n, c, a, b] / len(hits)
    return naive


@pytest.mark.parametrize("pool", [
    nn.MaxPool2d(2), nn.MaxPool2d((2, 3)), nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(3, stride=2, padding=1),
    nn.MaxPool2d(2, stride=1, dilation=2), nn.MaxPool2d(3, stride=2, ceil_mode=True), nn.MaxPool1d(2),
    nn.MaxPool1d(3, stride=2, padding=1),
], ids=lambda m: repr(m))
def test_maxpool_matches_window_loop_with_ties(pool: nn.Module) -> None:
    # ReLU-like zeros make whole windows tie; odd sizes leave rows and columns no window covers
    x = torch.randn(2, 3, 7, 9, dtype=DT).clamp(min=0)
    if isinstance(pool, nn.MaxPool1d):
        x = x[:, :, 0]
    rel = torch.rand(pool(x).shape, dtype=DT)
    ours = _pool_relevance(pool, x, rel)
    if isinstance(pool, nn.MaxPool1d):
        args = [(1, v if isinstance(v, int) else v[0]) for v in (pool.kernel_size, pool.stride, pool.dilation)]
        pad = (0, pool.padding if isinstance(pool.padding, int) else pool.padding[0])
        naive = _naive_max_pool_2d(x[:, :, None], rel[:, :, None], args[0], args[1], pad, args[2])[:, :, 0]
    else:
        k, st, pd, dl = (v if isinstance(v, tuple) else (v, v)
                         for v in (pool.kernel_size, pool.stride, pool.padding, pool.dilation))
        naive = _naive_max_pool_2d(x, rel, k, st, pd, dl)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, naive, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.sum(), rel.sum())   # every window's maximum is an element of x


@pytest.mark.parametrize("pool", [nn.AvgPool2d(3, stride=2, padding=1), nn.AdaptiveAvgPool2d((2, 3)),
                                  nn.AvgPool1d(2)])
def test_average_pools_share_in_proportion_to_abs_x(pool: nn.Module) -> None:
    is_1d = isinstance(pool, nn.AvgPool1d)
    x = torch.randn((2, 3, 8) if is_1d else (2, 3, 5, 7), dtype=DT)
    rel = torch.randn(pool(x).shape, dtype=DT)
    ours = _pool_relevance(pool, x, rel)
    # naive: find each output's window by probing the pool with one-hot inputs
    naive = torch.zeros_like(x)
    flat_in = x[0].numel()
    members = defaultdict(list)
    for k in range(flat_in):
        e = torch.zeros(flat_in, dtype=DT)
        e[k] = 1.0
        y = pool(e.reshape(1, *x.shape[1:]))[0].reshape(-1)
        for o in torch.nonzero(y).flatten().tolist():
            members[o].append(k)
    for s in range(2):
        xs, rs, ns = x[s].reshape(-1), rel[s].reshape(-1), naive[s].reshape(-1)
        for o, ks in members.items():
            tot = sum(abs(xs[k].item()) for k in ks)
            for k in ks:
                ns[k] += abs(xs[k].item()) / tot * rs[o].item()
    torch.testing.assert_close(ours, naive)


def test_global_average_pool_contrastive_matches_add_rule_loop() -> None:
    pool = nn.AdaptiveAvgPool2d(1)
    x = torch.randn(2, 3, 4, 4, dtype=DT)
    x[0, 1] = x[0, 1].abs()                          # one channel with positive values only
    rp, rn = torch.rand(2, 3, 1, 1, dtype=DT), torch.rand(2, 3, 1, 1, dtype=DT)
    ours = _pool_relevance(pool, x, rp, "contrastive", rn)
    for s in range(2):
        for c in range(3):
            contribs = [((i,), x[s, c].reshape(-1)[i].item()) for i in range(16)]
            pos, neg = unit_contrast(contribs, 0.0, rp[s, c, 0, 0].item(), rn[s, c, 0, 0].item(), one_sided=True)
            for i in range(16):
                assert abs(ours[0][s, c].reshape(-1)[i].item() - pos[(i,)]) < 1e-12
                assert abs(ours[1][s, c].reshape(-1)[i].item() - neg[(i,)]) < 1e-12


class _Merge(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a + b, a * torch.sigmoid(b)], dim=1)


def test_add_mul_cat_match_loop() -> None:
    a, b = torch.randn(2, 4, dtype=DT), torch.randn(2, 4, dtype=DT)
    bt = Backtrace(_Merge(), dtype=DT)
    outs = bt.predict(a, b)
    rel = bt.eval(outs, mode="default")
    r_out = rel[bt.graph.output]
    s = torch.sigmoid(b)
    exp_a = torch.zeros_like(a)
    exp_s = torch.zeros_like(a)
    for n in range(2):
        for k in range(4):
            r_add, r_mul = r_out[n, k].item(), r_out[n, 4 + k].item()
            tot = abs(a[n, k].item()) + abs(b[n, k].item())
            exp_a[n, k] += abs(a[n, k].item()) / tot * r_add
            prod = a[n, k].item() * s[n, k].item()
            da, ds = abs(prod - a[n, k].item()), abs(prod - s[n, k].item())
            exp_a[n, k] += da / (da + ds) * r_mul
            exp_s[n, k] += ds / (da + ds) * r_mul
    torch.testing.assert_close(rel["a"], exp_a)
    exp_b = exp_s + torch.stack([abs(b[n]) / (abs(a[n]) + abs(b[n])) * r_out[n, :4] for n in range(2)])
    torch.testing.assert_close(rel["b"], exp_b)


def test_add_contrastive_matches_loop() -> None:
    class Add(nn.Module):
        def forward(self, a, b, c):
            return a + b - c
    xs = [torch.randn(2, 5, dtype=DT) for _ in range(3)]
    xs[0][0, 0], xs[1][0, 0], xs[2][0, 0] = 1.0, 2.0, -0.5        # all positive terms
    bt = Backtrace(Add(), dtype=DT)
    outs = bt.predict(*xs)
    rp, rn = torch.rand(2, 5, dtype=DT), torch.rand(2, 5, dtype=DT)
    from backtrace.rules import RULES
    add_nodes = [n for n in bt.graph.nodes if n.kind == "add"]
    # compose the two binary adds by hand: check the last one (t = (a + b) - c)
    node = add_nodes[-1]
    ins = [outs[i] for i in node.inputs]
    res = RULES["add"].contrastive(node, ins, outs[node.name], (rp, rn), None)
    for s in range(2):
        for k in range(5):
            contribs = [((0,), ins[0][s, k].item()), ((1,), -ins[1][s, k].item())]
            pos, neg = unit_contrast(contribs, 0.0, rp[s, k].item(), rn[s, k].item(), one_sided=True)
            for m in range(2):
                assert abs(res[m][0][s, k].item() - pos[(m,)]) < 1e-12
                assert abs(res[m][1][s, k].item() - neg[(m,)]) < 1e-12


class _Shapes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 2, 1)[:, 1:, :].transpose(1, 2)
        y = F.pad(y, (1, 2)).unsqueeze(1).flatten(1)
        return y.reshape(x.shape[0], -1)


def test_index_maps_send_relevance_back_to_the_copied_elements() -> None:
    x = torch.randn(2, 3, 4, dtype=DT)
    bt = Backtrace(_Shapes(), dtype=DT)
    outs = bt.predict(x)
    out = outs[bt.graph.output]
    rel = bt.eval(outs, mode="default", target=[0, 5])
    # the output copies elements of x: the relevance lands exactly on the element copied
    expected = torch.zeros_like(x)
    for s, t in enumerate([0, 5]):
        value = out[s, t].item()
        hits = (x[s] == value).nonzero()
        if value != 0.0:
            expected[s][tuple(hits[0].tolist())] = value * 100
    torch.testing.assert_close(rel["x"], expected)
