"""Adding an op kind is one rule and one table line per front end: a toy activation (softsign,
which no front end maps) added that way explains as a naive float64 computation says."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from backtrace import Backtrace, UnsupportedOperation, explain, ops
from backtrace.frontends import torch_fx
from backtrace.frontends.lowering import same
from backtrace.ir import Node
from backtrace.rules import RULES, register
from backtrace.rules.base import EvalOptions, LinearInRelevanceRule, Relevance

DT = torch.float64


@pytest.fixture
def softsign(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The new kind: its rule (an activation hands relevance on, as every activation does) and
    the torch.fx table line; undone afterwards."""
    rules, catalogue = dict(RULES), dict(ops.CATALOGUE)

    @register(ops.OpKind("softsign", activation=True, elementwise=True))
    class SoftsignRule(LinearInRelevanceRule):
        reads_inputs = reads_output = False

        def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                    opts: EvalOptions) -> list[Relevance]:
            return [relevance]

    monkeypatch.setitem(torch_fx.TABLE, nn.Softsign, same("softsign"))
    yield
    RULES.clear()
    RULES.update(rules)
    ops.CATALOGUE.clear()
    ops.CATALOGUE.update(catalogue)


def _model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 4), nn.Softsign(), nn.Linear(4, 3)).to(DT).eval()


def _naive_dense(x: np.ndarray, w: np.ndarray, b: np.ndarray, r_out: np.ndarray) -> np.ndarray:
    """The default dense rule with no saturation, one unit at a time: ``R_i = sum_j R_j |z_ji| / D_j``
    with ``D_j = P_j + N_j + |b_j|``."""
    r_in = np.zeros_like(x)
    for j in range(w.shape[0]):
        z = w[j] * x
        den = np.abs(z).sum() + abs(b[j])
        if den > 0:
            r_in += np.abs(z) / den * r_out[j]
    return r_in


def _naive(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    first, _, last = model
    w1, b1 = first.weight.detach().numpy(), first.bias.detach().numpy()
    w2, b2 = last.weight.detach().numpy(), last.bias.detach().numpy()
    out = []
    for xs in x.numpy():
        h = w1 @ xs + b1
        a = h / (1 + np.abs(h))
        y = w2 @ a + b2
        seed = np.zeros_like(y)
        seed[y.argmax()] = 100.0 * y.max()
        r_a = _naive_dense(a, w2, b2, seed)            # softsign: relevance handed on
        out.append(_naive_dense(xs, w1, b1, r_a))
    return np.stack(out)


def test_the_toy_activation_is_refused_without_its_rule_and_table_line() -> None:
    with pytest.raises(UnsupportedOperation, match=r"node '_1': module 1 \(Softsign\) \(no rule for this module type\)"):
        Backtrace(_model())


def test_one_rule_and_one_table_line_make_the_new_kind_explainable(softsign: None) -> None:
    model = _model()
    x = torch.randn(6, 5, dtype=DT)
    bt = Backtrace(model)
    assert bt.graph.node("1").kind == "softsign"
    assert bt.graph.node("0").meta["activation"] == "softsign"     # an activation by its trait
    np.testing.assert_allclose(explain(model, x).numpy(), _naive(model, x), rtol=1e-10, atol=1e-12)
    pos, neg = explain(model, x, mode="contrastive")               # linear in the relevance: both maps
    assert pos.shape == neg.shape == x.shape and pos.abs().sum() > 0


def test_the_new_kind_leaves_with_the_fixture() -> None:
    assert "softsign" not in RULES and "softsign" not in ops.CATALOGUE
    assert nn.Softsign not in torch_fx.TABLE


def test_a_keras_activation_is_one_line_of_its_table(softsign: None, monkeypatch: pytest.MonkeyPatch) -> None:
    keras = pytest.importorskip("keras", reason="keras is not installed (make test installs the 'tf' extra)")
    from backtrace.frontends import keras_layers

    torch_model = _model()
    km = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="softsign"), keras.layers.Dense(3)])
    for layer, torch_layer in zip(km.layers, (torch_model[0], torch_model[2])):
        layer.set_weights([torch_layer.weight.detach().numpy().T, torch_layer.bias.detach().numpy()])
    x = torch.randn(4, 5, dtype=DT)
    with pytest.raises(UnsupportedOperation, match=r"activation 'softsign' has no rule"):
        explain(km, x.float().numpy())
    monkeypatch.setitem(keras_layers.ACTIVATIONS, "softsign", nn.Softsign)
    np.testing.assert_allclose(explain(km, x.float().numpy()), _naive(torch_model, x.float().double()),
                               rtol=1e-4, atol=1e-5)
