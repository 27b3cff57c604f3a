"""ConvTranspose, Embedding/EmbeddingBag and LayerNorm rules against naive float64 loops (the LSTM
rule's are in test_rules_lstm.py).

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
from tests.backtrace.conftest import rel_err

DEFAULT = EvalOptions()
CONTRAST = EvalOptions(mode="contrastive")


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
