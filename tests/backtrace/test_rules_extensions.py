"""ConvTranspose, Embedding/EmbeddingBag, LSTM and LayerNorm rules against naive float64 loops.

Each oracle below is a deliberately plain per-sample, per-unit loop over the rule as written in
backtrace-rules.md; the vectorised rules must agree with it, and with themselves across batch
splits.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from backtrace.ir import Node
from backtrace.rules.base import EvalOptions
from backtrace.rules.base import SATURATION_BOUNDS
from backtrace.rules.conv_transpose import ConvTransposeRule, conv_transpose_node
from backtrace.rules.embedding import EmbeddingBagRule, EmbeddingRule
from backtrace.rules.norm_layer import LayerNormRule
from backtrace.rules.recurrent import LSTMRule, lstm_input_relevance

DEFAULT = EvalOptions()
CONTRAST = EvalOptions(mode="contrastive")


def rel_err(a: torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Max abs difference over max abs value (the project's agreement measure)."""
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    a = a.detach().to(torch.float64)
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


# ----------------------------------------------------------------------------- ConvTranspose

def naive_contributions(x, w, b, stride, pad, out_pad, dil, groups):
    """All (output index, input index, z) of a 2-D transposed convolution, by loops."""
    n_b, c_in, h_in, w_in = x.shape
    cout_g, kh, kw = w.shape[1:]
    cin_g = c_in // groups
    h_out = (h_in - 1) * stride[0] - 2 * pad[0] + dil[0] * (kh - 1) + out_pad[0] + 1
    w_out = (w_in - 1) * stride[1] - 2 * pad[1] + dil[1] * (kw - 1) + out_pad[1] + 1
    contribs: dict[tuple, list] = {}
    for n, ci, i, j in itertools.product(range(n_b), range(c_in), range(h_in), range(w_in)):
        g = ci // cin_g
        for col, a, bb in itertools.product(range(cout_g), range(kh), range(kw)):
            oi, oj = i * stride[0] - pad[0] + a * dil[0], j * stride[1] - pad[1] + bb * dil[1]
            if 0 <= oi < h_out and 0 <= oj < w_out:
                contribs.setdefault((n, g * cout_g + col, oi, oj), []).append(((n, ci, i, j), w[ci, col, a, bb] * x[n, ci, i, j]))
    out_shape = (n_b, cout_g * groups, h_out, w_out)
    return contribs, out_shape


def naive_conv_t_default(x, w, b, rel, stride, pad, out_pad, dil, groups, lower=None, upper=None):
    contribs, _ = naive_contributions(x, w, b, stride, pad, out_pad, dil, groups)
    out = np.zeros_like(x)
    for (n, co, oi, oj), lst in contribs.items():
        zs = np.array([z for _, z in lst])
        p, q = zs[zs > 0].sum(), -zs[zs < 0].sum()
        d = p + q + abs(b[co])
        keep_p = not lower or p + q > lower
        keep_n = not upper or p + q < upper
        if d == 0:
            continue
        r = rel[n, co, oi, oj]
        for idx, z in lst:
            if (z > 0 and keep_p) or (z < 0 and keep_n):
                out[idx] += r * abs(z) / d
    return out


def naive_conv_t_contrast(x, w, b, rp, rn, stride, pad, out_pad, dil, groups):
    contribs, _ = naive_contributions(x, w, b, stride, pad, out_pad, dil, groups)
    out_p, out_n = np.zeros_like(x), np.zeros_like(x)
    for (n, co, oi, oj), lst in contribs.items():
        zs = np.array([z for _, z in lst])
        p, q = zs[zs > 0].sum(), -zs[zs < 0].sum()
        t = p + b[co] - q
        wp, wn = rp[n, co, oi, oj], rn[n, co, oi, oj]
        if t == 0 or wp == wn:
            continue
        big_is_pos = wp > wn
        dominant_pos_side = t > 0
        # dominant side gets max(R+, R-) in its own map, the other side the min in the other map
        for idx, z in lst:
            if z == 0:
                continue
            on_dominant = (z > 0) == dominant_pos_side
            side_sum = p if z > 0 else q
            share = abs(z) / side_sum
            if on_dominant:
                (out_p if big_is_pos else out_n)[idx] += share * (wp if big_is_pos else wn)
            else:
                (out_n if big_is_pos else out_p)[idx] += share * (wn if big_is_pos else wp)
    return out_p, out_n


CONV_T_CASES = [
    # in, out, k, stride, padding, output_padding, dilation, groups, act
    (3, 4, 3, 1, 0, 0, 1, 1, None),
    (4, 6, 3, 2, 1, 1, 1, 2, "relu"),
    (2, 3, (2, 3), (2, 1), (0, 1), (1, 0), (1, 2), 1, "tanh"),
    (4, 4, 3, 2, 2, 1, 2, 4, "sigmoid"),       # depthwise, padding cropping whole taps
    (2, 2, 3, 3, 1, 0, 1, 1, "softmax"),
]


def _module_2d(case, seed):
    cin, cout, k, s, p, op, d, g, _ = case
    torch.manual_seed(seed)
    m = nn.ConvTranspose2d(cin, cout, k, stride=s, padding=p, output_padding=op, dilation=d, groups=g).double()
    with torch.no_grad():
        m.bias.mul_(3.0)   # make the bias share visible
    return m


@pytest.mark.parametrize("case", CONV_T_CASES)
def test_conv_transpose2d_default_matches_naive_loop(case):
    m = _module_2d(case, seed=1)
    act = case[-1]
    x = torch.randn(2, case[0], 4, 3, dtype=torch.float64)
    y = m(x)
    rel = torch.randn_like(y)
    lower, upper = SATURATION_BOUNDS.get(act, (None, None)) if act else (None, None)
    got = ConvTransposeRule().default(conv_transpose_node("ct", m, act), [x], y, rel, DEFAULT)[0]
    want = naive_conv_t_default(x.numpy(), m.weight.detach().numpy(), m.bias.detach().numpy(), rel.numpy(),
                                m.stride, m.padding, m.output_padding, m.dilation, m.groups, lower, upper)
    assert got.shape == x.shape
    assert rel_err(got, want) < 1e-10


def test_conv_transpose_naive_contributions_reproduce_the_module():
    """The oracle's enumeration of taps is the layer itself (sum of z plus bias = output)."""
    m = _module_2d(CONV_T_CASES[3], seed=2)
    x = torch.randn(1, 4, 4, 3, dtype=torch.float64)
    contribs, shape = naive_contributions(x.numpy(), m.weight.detach().numpy(), None, m.stride, m.padding,
                                          m.output_padding, m.dilation, m.groups)
    y = m(x).detach().numpy()
    assert shape == y.shape
    for (n, co, i, j), lst in contribs.items():
        assert math.isclose(sum(z for _, z in lst) + m.bias[co].item(), y[n, co, i, j], abs_tol=1e-12)


@pytest.mark.parametrize("case", CONV_T_CASES[:4])
def test_conv_transpose2d_contrastive_matches_naive_loop(case):
    m = _module_2d(case, seed=3)
    x = torch.randn(2, case[0], 3, 4, dtype=torch.float64)
    y = m(x)
    rp, rn = torch.rand_like(y), torch.rand_like(y)
    got_p, got_n = ConvTransposeRule().contrastive(conv_transpose_node("ct", m), [x], y, (rp, rn), CONTRAST)[0]
    want_p, want_n = naive_conv_t_contrast(x.numpy(), m.weight.detach().numpy(), m.bias.detach().numpy(),
                                           rp.numpy(), rn.numpy(), m.stride, m.padding, m.output_padding,
                                           m.dilation, m.groups)
    assert rel_err(got_p, want_p) < 1e-10 and rel_err(got_n, want_n) < 1e-10


def test_conv_transpose1d_default_and_contrastive_match_naive_loop():
    torch.manual_seed(4)
    m = nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, dilation=1, groups=2).double()
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    y = m(x)
    rel, rn = torch.randn_like(y), torch.rand_like(y)
    w4 = m.weight.detach().numpy()[:, :, None, :]
    geo = ((1, 2), (0, 1), (0, 1), (1, 1), 2)
    got = ConvTransposeRule().default(conv_transpose_node("ct", m, "tanh"), [x], y, rel, DEFAULT)[0]
    want = naive_conv_t_default(x.numpy()[:, :, None, :], w4, m.bias.detach().numpy(), rel.numpy()[:, :, None, :],
                                *geo, -2.0, 2.0)[:, :, 0, :]
    assert rel_err(got, want) < 1e-10
    rp = rel.abs()
    got_p, got_n = ConvTransposeRule().contrastive(conv_transpose_node("ct", m), [x], y, (rp, rn), CONTRAST)[0]
    want_p, want_n = naive_conv_t_contrast(x.numpy()[:, :, None, :], w4, m.bias.detach().numpy(),
                                           rp.numpy()[:, :, None, :], rn.numpy()[:, :, None, :], *geo)
    assert rel_err(got_p, want_p[:, :, 0, :]) < 1e-10 and rel_err(got_n, want_n[:, :, 0, :]) < 1e-10


def test_conv_transpose_without_bias_conserves_and_guards_zero_input():
    """No bias and no saturation: every output's relevance lands on its inputs (conservation);
    an all-zero input gives zeros, not NaN."""
    torch.manual_seed(5)
    m = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, bias=False)
    x = torch.randn(2, 3, 4, 4)
    y = m(x)
    rel = torch.rand_like(y)
    got = ConvTransposeRule().default(conv_transpose_node("ct", m), [x], y, rel, DEFAULT)[0]
    torch.testing.assert_close(got.sum(dim=(1, 2, 3)), rel.sum(dim=(1, 2, 3)), rtol=1e-5, atol=1e-5)
    zeros = torch.zeros_like(x)
    got0 = ConvTransposeRule().default(conv_transpose_node("ct", m), [zeros], m(zeros), rel, DEFAULT)[0]
    assert torch.equal(got0, torch.zeros_like(x))


def test_conv_transpose_batch_invariance():
    m = _module_2d(CONV_T_CASES[1], seed=6).float()
    x = torch.randn(5, 4, 4, 4)
    y = m(x)
    rel = torch.rand_like(y)
    node = conv_transpose_node("ct", m, "relu")
    whole = ConvTransposeRule().default(node, [x], y, rel, DEFAULT)[0]
    parts = torch.cat([ConvTransposeRule().default(node, [x[i:i + 1]], y[i:i + 1], rel[i:i + 1], DEFAULT)[0]
                       for i in range(5)])
    torch.testing.assert_close(whole, parts, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Embedding

def _embedding_node(module, kind="embedding"):
    return Node(name="emb", kind=kind, inputs=("x",), params={"module": module})


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_embedding_token_relevance_matches_loop(reduction):
    torch.manual_seed(7)
    emb = nn.Embedding(11, 5)
    idx = torch.randint(0, 11, (3, 4))
    out = emb(idx)
    rel = torch.randn_like(out)
    opts = EvalOptions(embedding_reduction=reduction)
    got = EmbeddingRule().default(_embedding_node(emb), [idx], out, rel, opts)[0]
    want = np.zeros((3, 4))
    for n, t in itertools.product(range(3), range(4)):
        vals = [float(rel[n, t, e]) for e in range(5)]
        want[n, t] = sum(vals) / (5 if reduction == "mean" else 1)
    assert got.shape == idx.shape and rel_err(got, want) < 1e-6
    gp, gn = EmbeddingRule().contrastive(_embedding_node(emb), [idx], out, (rel, 2 * rel), opts)[0]
    assert torch.equal(gp, got) and torch.allclose(gn, 2 * got)


def test_embedding_unknown_reduction_is_a_named_error():
    emb = nn.Embedding(3, 2)
    idx = torch.tensor([[0, 1]])
    with pytest.raises(ValueError, match=r"unknown embedding_reduction 'max'; choose one of: mean, sum"):
        EmbeddingRule().default(_embedding_node(emb), [idx], emb(idx), emb(idx), EvalOptions(embedding_reduction="max"))


def naive_bag(weight, bags, rel, mode, psw_bags=None, reduction="mean"):
    """bags: list of lists of (flat position, index); returns {flat position: relevance}."""
    out = {}
    n_units = weight.shape[1]
    for b, tokens in enumerate(bags):
        for pos, _ in tokens:
            out[pos] = 0.0
        for e in range(n_units):
            if mode == "max":
                vals = [weight[i, e] for _, i in tokens]
                if not vals:
                    continue
                top = max(vals)
                winners = [pos for pos, i in tokens if weight[i, e] == top]
                for pos in winners:
                    out[pos] += rel[b, e] / len(winners)
            else:
                contrib = [(pos, abs(weight[i, e] * (psw_bags[b][k] if psw_bags else 1.0)))
                           for k, (pos, i) in enumerate(tokens)]
                total = sum(c for _, c in contrib)
                for pos, c in contrib:
                    if total > 0:
                        out[pos] += rel[b, e] * c / total
    scale = n_units if reduction == "mean" else 1
    return {k: v / scale for k, v in out.items()}


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_2d_matches_loop(mode):
    torch.manual_seed(8)
    bag = nn.EmbeddingBag(9, 4, mode=mode).double()
    idx = torch.randint(0, 9, (3, 5))
    out = bag(idx)
    rel = torch.randn_like(out)
    got = EmbeddingBagRule().default(_embedding_node(bag, "embedding_bag"), [idx], out, rel, DEFAULT)[0]
    bags = [[(b * 5 + t, int(idx[b, t])) for t in range(5)] for b in range(3)]
    want = naive_bag(bag.weight.detach().numpy(), bags, rel.numpy(), mode)
    assert got.shape == idx.shape
    assert rel_err(got.reshape(-1), [want[k] for k in range(15)]) < 1e-10


def test_embedding_bag_offsets_weights_and_padding_match_loop():
    torch.manual_seed(9)
    bag = nn.EmbeddingBag(9, 4, mode="sum", padding_idx=0, include_last_offset=True).double()
    idx = torch.tensor([3, 0, 5, 5, 2, 8, 1])
    offsets = torch.tensor([0, 3, 3, 7])          # bags [0:3], [] (empty), [3:7]
    psw = torch.rand(7, dtype=torch.float64)
    out = bag(idx, offsets, per_sample_weights=psw)
    rel = torch.randn_like(out)
    got = EmbeddingBagRule().default(_embedding_node(bag, "embedding_bag"), [idx, offsets, psw], out, rel,
                                     EvalOptions(embedding_reduction="sum"))
    assert got[1] is None and got[2] is None
    w = bag.weight.detach().numpy()
    bags = [[(p, int(idx[p])) for p in range(0, 3) if idx[p] != 0], [], [(p, int(idx[p])) for p in range(3, 7)]]
    weights = [[float(psw[p]) for p, _ in bg] for bg in bags]
    want = naive_bag(w, bags, rel.numpy(), "sum", weights, reduction="sum")
    want_vec = [want.get(p, 0.0) for p in range(7)]
    assert got[0][1] == 0.0                      # the padding token
    assert rel_err(got[0], want_vec) < 1e-10
    # sum reduction with no padding loss: each bag's relevance is conserved
    assert math.isclose(float(got[0][3:].sum()), float(rel[2].sum()), rel_tol=1e-9)


def test_embedding_bag_batch_invariance_and_contrastive():
    torch.manual_seed(10)
    bag = nn.EmbeddingBag(9, 4, mode="mean")
    idx = torch.randint(0, 9, (4, 3))
    out = bag(idx)
    rel = torch.randn_like(out)
    node = _embedding_node(bag, "embedding_bag")
    whole = EmbeddingBagRule().default(node, [idx], out, rel, DEFAULT)[0]
    parts = torch.cat([EmbeddingBagRule().default(node, [idx[i:i + 1]], out[i:i + 1], rel[i:i + 1], DEFAULT)[0]
                       for i in range(4)])
    torch.testing.assert_close(whole, parts)
    gp, gn = EmbeddingBagRule().contrastive(node, [idx], out, (rel, rel.abs()), CONTRAST)[0]
    torch.testing.assert_close(gp, whole)
    torch.testing.assert_close(gn, EmbeddingBagRule().default(node, [idx], out, rel.abs(), DEFAULT)[0])


# ----------------------------------------------------------------------------- LayerNorm

def test_layer_norm_passes_relevance_through():
    ln = nn.LayerNorm(6)
    x = torch.randn(2, 3, 6)
    rel = torch.randn(2, 3, 6)
    node = Node(name="ln", kind="layer_norm", inputs=("x",), params={"module": ln})
    assert LayerNormRule().default(node, [x], ln(x), rel, DEFAULT)[0] is rel
    rp, rn = LayerNormRule().contrastive(node, [x], ln(x), (rel, -rel), CONTRAST)[0]
    assert rp is rel and torch.equal(rn, -rel)


# ----------------------------------------------------------------------------- LSTM

def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def _mul(a, b, r):
    da, db = abs(a * b - a), abs(a * b - b)
    return (0.0, 0.0) if da + db == 0 else (da / (da + db) * r, db / (da + db) * r)


def _add(a, b, r):
    return (0.0, 0.0) if abs(a) + abs(b) == 0 else (abs(a) / (abs(a) + abs(b)) * r, abs(b) / (abs(a) + abs(b)) * r)


def naive_direction(xs, w_ih, w_hh, b, rel_seq, rel_h_last, rel_c_last):
    """One sample, one direction: scalar loops over units for the forward and the walk back."""
    steps, n_in = len(xs), len(xs[0])
    hid = w_hh.shape[1]
    h, c = [0.0] * hid, [0.0] * hid
    log = []
    for t in range(steps):
        xp = [sum(w_ih[j, i] * xs[t][i] for i in range(n_in)) + b[j] for j in range(4 * hid)]
        hp = [sum(w_hh[j, k] * h[k] for k in range(hid)) for j in range(4 * hid)]
        pre = [xp[j] + hp[j] for j in range(4 * hid)]
        gi = [_sig(pre[u]) for u in range(hid)]
        gf = [_sig(pre[hid + u]) for u in range(hid)]
        gg = [math.tanh(pre[2 * hid + u]) for u in range(hid)]
        go = [_sig(pre[3 * hid + u]) for u in range(hid)]
        c_new = [gf[u] * c[u] + gi[u] * gg[u] for u in range(hid)]
        h_new = [go[u] * math.tanh(c_new[u]) for u in range(hid)]
        log.append(dict(x=xs[t], xp=xp, hp=hp, gi=gi, gf=gf, gg=gg, go=go, c=c_new, c_prev=c, h_prev=h))
        h, c = h_new, c_new
    outs = [0] * steps
    rh, rc = list(rel_h_last), list(rel_c_last)
    for t in range(steps - 1, -1, -1):
        L = log[t]
        rh = [rh[u] + rel_seq[t][u] for u in range(hid)]
        r_gate = [0.0] * (4 * hid)
        r_cprev = [0.0] * hid
        for u in range(hid):
            r_o, r_tc = _mul(L["go"][u], math.tanh(L["c"][u]), rh[u])
            r_c = r_tc + rc[u]
            r_fc, r_ig = _add(L["gf"][u] * L["c_prev"][u], L["gi"][u] * L["gg"][u], r_c)
            r_f, r_cprev[u] = _mul(L["gf"][u], L["c_prev"][u], r_fc)
            r_i, r_g = _mul(L["gi"][u], L["gg"][u], r_ig)
            r_gate[u], r_gate[hid + u], r_gate[2 * hid + u], r_gate[3 * hid + u] = r_i, r_f, r_g, r_o
        rx, rh_prev = [0.0] * n_in, [0.0] * hid
        for j in range(4 * hid):
            r_xp, r_hp = _add(L["xp"][j], L["hp"][j], r_gate[j])
            d_x = sum(abs(w_ih[j, i] * L["x"][i]) for i in range(n_in)) + abs(b[j])
            for i in range(n_in):
                if d_x:
                    rx[i] += r_xp * abs(w_ih[j, i] * L["x"][i]) / d_x
            d_h = sum(abs(w_hh[j, k] * L["h_prev"][k]) for k in range(hid))
            for k in range(hid):
                if d_h:
                    rh_prev[k] += r_hp * abs(w_hh[j, k] * L["h_prev"][k]) / d_h
        outs[t] = rx
        rh, rc = rh_prev, r_cprev
    # the outputs, for the layer above
    hs = [None] * steps
    for t in range(steps):
        hs[t] = [log[t]["go"][u] * math.tanh(log[t]["c"][u]) for u in range(hid)]
    return outs, hs


def naive_lstm(module, x_sample, rel_out, rel_hn, rel_cn):
    """One sample, batch-first view: layers and directions by hand."""
    dirs = 2 if module.bidirectional else 1
    hid = module.hidden_size
    layer_in = [list(map(float, row)) for row in x_sample]
    layer_logs = []
    for layer in range(module.num_layers):
        outs_dir = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih = getattr(module, "weight_ih" + sfx).detach().numpy()
            w_hh = getattr(module, "weight_hh" + sfx).detach().numpy()
            b = (getattr(module, "bias_ih" + sfx) + getattr(module, "bias_hh" + sfx)).detach().numpy()
            outs_dir.append((w_ih, w_hh, b))
        layer_logs.append((layer_in, outs_dir))
        # forward outputs for the next layer (using the naive forward with zero relevance)
        nxt = []
        for d, (w_ih, w_hh, b) in enumerate(outs_dir):
            seq = layer_in[::-1] if d else layer_in
            zeros = [[0.0] * hid for _ in seq]
            _, hs = naive_direction(seq, w_ih, w_hh, b, zeros, [0.0] * hid, [0.0] * hid)
            nxt.append(hs[::-1] if d else hs)
        layer_in = [sum((nxt[d][t] for d in range(dirs)), []) for t in range(len(layer_in))]
    rel_above = [list(map(float, row)) for row in rel_out]
    for layer in range(module.num_layers - 1, -1, -1):
        inp, weights = layer_logs[layer]
        below = [[0.0] * len(inp[0]) for _ in inp]
        for d, (w_ih, w_hh, b) in enumerate(weights):
            seq = inp[::-1] if d else inp
            rs = [row[d * hid:(d + 1) * hid] for row in rel_above]
            rs = rs[::-1] if d else rs
            k = layer * dirs + d
            rx, _ = naive_direction(seq, w_ih, w_hh, b, rs, list(map(float, rel_hn[k])), list(map(float, rel_cn[k])))
            rx = rx[::-1] if d else rx
            below = [[below[t][i] + rx[t][i] for i in range(len(inp[0]))] for t in range(len(inp))]
        rel_above = below
    return np.array(rel_above)


def _lstm_case(batch_first, bidirectional, layers, seed):
    torch.manual_seed(seed)
    m = nn.LSTM(3, 4, num_layers=layers, batch_first=batch_first, bidirectional=bidirectional).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    if not batch_first:
        x = x.transpose(0, 1).contiguous()
    out, (hn, cn) = m(x)
    rel = (torch.randn_like(out), (torch.randn_like(hn), torch.randn_like(cn)))
    return m, x, (out, (hn, cn)), rel


@pytest.mark.parametrize("batch_first,bidirectional,layers", [(True, False, 1), (False, False, 2), (True, True, 2)])
def test_lstm_matches_naive_per_sample_per_unit_loop(batch_first, bidirectional, layers):
    m, x, output, rel = _lstm_case(batch_first, bidirectional, layers, seed=11)
    node = Node(name="lstm", kind="lstm", inputs=("x",), params={"module": m})
    got = LSTMRule().default(node, [x], output, rel, DEFAULT)[0]
    assert got.shape == x.shape
    xb = x if batch_first else x.transpose(0, 1)
    gb = got if batch_first else got.transpose(0, 1)
    rout = rel[0] if batch_first else rel[0].transpose(0, 1)
    for n in range(x.shape[0 if batch_first else 1]):
        want = naive_lstm(m, xb[n].numpy(), rout[n].numpy(), rel[1][0][:, n].numpy(), rel[1][1][:, n].numpy())
        assert rel_err(gb[n], want) < 1e-10


def test_lstm_rerun_reproduces_the_module_and_relevance_is_finite_float32():
    """The rule's own forward re-run must equal nn.LSTM's output (else the gates are wrong)."""
    from backtrace.rules.recurrent import _layer_weights, _run_direction

    torch.manual_seed(12)
    m = nn.LSTM(3, 4, batch_first=True)
    x = torch.randn(2, 6, 3)
    out, _ = m(x)
    w_ih, w_hh, b = _layer_weights(m, 0, 0, torch.float32)
    log = _run_direction(x, w_ih, w_hh, b, torch.zeros(2, 4), torch.zeros(2, 4))
    torch.testing.assert_close(log.h, out, rtol=1e-5, atol=1e-6)
    r = lstm_input_relevance(m, x, None, (torch.zeros_like(out), (torch.ones(1, 2, 4), torch.zeros(1, 2, 4))))
    assert torch.isfinite(r).all() and r.abs().sum() > 0


def test_lstm_batch_invariance_and_contrastive_is_default_per_map():
    m, x, output, rel = _lstm_case(True, False, 2, seed=13)
    node = Node(name="lstm", kind="lstm", inputs=("x",), params={"module": m})
    whole = LSTMRule().default(node, [x], output, rel, DEFAULT)[0]
    for n in range(2):
        part_rel = (rel[0][n:n + 1], (rel[1][0][:, n:n + 1], rel[1][1][:, n:n + 1]))
        part = LSTMRule().default(node, [x[n:n + 1]], None, part_rel, DEFAULT)[0]
        torch.testing.assert_close(part[0], whole[n])
    neg = (rel[0].abs(), (rel[1][0].abs(), rel[1][1].abs()))
    gp, gn = LSTMRule().contrastive(node, [x], output, (rel, neg), CONTRAST)[0]
    torch.testing.assert_close(gp, whole)
    torch.testing.assert_close(gn, LSTMRule().default(node, [x], output, neg, DEFAULT)[0])


def test_lstm_with_projection_is_a_named_error():
    m = nn.LSTM(3, 4, proj_size=2)
    node = Node(name="lstm", kind="lstm", inputs=("x",), params={"module": m})
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"proj_size=2 is not supported; valid: 0"):
        LSTMRule().default(node, [x], m(x), torch.zeros(5, 2, 2), DEFAULT)


def test_lstm_initial_state_input_gets_mirroring_relevance():
    """Zero initial states take exactly nothing (no contribution); given states take their share."""
    m, x, output, rel = _lstm_case(True, True, 2, seed=14)
    node = Node(name="lstm", kind="lstm", inputs=("x", "hx"), params={"module": m})
    zeros = (torch.zeros(4, 2, 4, dtype=torch.float64), torch.zeros(4, 2, 4, dtype=torch.float64))
    rx0, (rh0, rc0) = LSTMRule().default(node, [x, zeros], output, rel, DEFAULT)
    torch.testing.assert_close(rx0, LSTMRule().default(node, [x], output, rel, DEFAULT)[0])
    assert torch.equal(rh0, zeros[0]) and torch.equal(rc0, zeros[1])
    hx = (torch.randn(4, 2, 4, dtype=torch.float64), torch.randn(4, 2, 4, dtype=torch.float64))
    out_hx = m(x, hx)
    rx, (rh, rc) = LSTMRule().default(node, [x, hx], out_hx, rel, DEFAULT)
    assert rh.shape == hx[0].shape and rc.shape == hx[1].shape
    assert torch.isfinite(rx).all() and rh.abs().sum() > 0 and rc.abs().sum() > 0


# ----------------------------------------------------------------------------- end to end

class EmbeddingMeanLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(x).mean(dim=1))


class EmbeddingLSTMLast(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.emb = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 6, num_layers=2, batch_first=batch_first)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.emb(x)
        if not self.batch_first:
            e = e.transpose(0, 1)
        out, _ = self.lstm(e)
        return self.fc(out[:, -1] if self.batch_first else out[-1])


class ConvTransposeDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up1 = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)
        self.act1 = nn.ReLU()
        self.up2 = nn.ConvTranspose2d(6, 2, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.act2 = nn.Tanh()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.act2(self.up2(self.act1(self.up1(x))))), 1))


def _explain_both_modes(model, x):
    from backtrace import explain

    rel = explain(model, x)
    rp, rn = explain(model, x, mode="contrastive")
    for r in (rel, rp, rn):
        assert r.shape == x.shape and torch.isfinite(r).all()
    assert rel.abs().sum() > 0 and rp.abs().sum() > 0
    return rel


def test_end_to_end_embedding_mean_linear_and_reduction_option():
    from backtrace import explain

    torch.manual_seed(20)
    model = EmbeddingMeanLinear().eval()
    x = torch.randint(0, 20, (4, 6))
    rel = _explain_both_modes(model, x)
    # the per-token reduction is the last step: "sum" is exactly E (= 8) times "mean"
    torch.testing.assert_close(explain(model, x, embedding_reduction="sum"), 8 * rel)
    parts = torch.cat([explain(model, x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(rel, parts, rtol=1e-5, atol=1e-6)


def test_end_to_end_embedding_lstm_batch_first_and_not_agree():
    torch.manual_seed(21)
    model_bf = EmbeddingLSTMLast(batch_first=True).eval()
    model_tf = EmbeddingLSTMLast(batch_first=False).eval()
    model_tf.load_state_dict(model_bf.state_dict())
    x = torch.randint(0, 20, (3, 7))
    torch.testing.assert_close(model_bf(x), model_tf(x))
    rel_bf = _explain_both_modes(model_bf, x)
    rel_tf = _explain_both_modes(model_tf, x)
    assert rel_bf.shape == (3, 7)
    torch.testing.assert_close(rel_bf, rel_tf, rtol=1e-5, atol=1e-6)
    from backtrace import explain

    parts = torch.cat([explain(model_bf, x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(rel_bf, parts, rtol=1e-5, atol=1e-6)


def test_end_to_end_conv_transpose_decoder():
    from backtrace import explain

    torch.manual_seed(22)
    model = ConvTransposeDecoder().eval()
    x = torch.randn(3, 4, 3, 3)
    rel = _explain_both_modes(model, x)
    parts = torch.cat([explain(model, x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(rel, parts, rtol=1e-5, atol=1e-6)
