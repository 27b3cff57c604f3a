"""The LSTM rule against a naive float64 per-sample, per-unit loop over the rule as written in
backtrace-rules.md, and against itself across batch splits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from backtrace.ir import Node
from backtrace.rules.base import EvalOptions
from backtrace.rules.recurrent import LSTMRule, lstm_input_relevance
from tests.backtrace.conftest import rel_err

DEFAULT = EvalOptions()
CONTRAST = EvalOptions(mode="contrastive")


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


