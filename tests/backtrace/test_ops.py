"""The catalogue of op kinds against the rules and the front ends' tables."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backtrace import Backtrace, ops
from backtrace.frontends import torch_export, torch_fx
from backtrace.frontends.lowering import emitted_kinds
from backtrace.rules import RULES, Rule, register


def test_every_kind_of_the_catalogue_has_a_rule_and_every_rule_a_kind() -> None:
    assert sorted(RULES) == sorted(ops.CATALOGUE)
    assert not set(ops.STRUCTURAL) & set(RULES)


@pytest.mark.parametrize("table", [torch_fx.TABLE, torch_export.TABLE], ids=["fx", "export"])
def test_the_front_ends_emit_only_kinds_of_the_catalogue(table: dict) -> None:
    emitted = emitted_kinds(table)
    assert emitted <= set(ops.CATALOGUE), emitted - set(ops.CATALOGUE)
    assert {"linear", "relu", "softmax", "add", "getitem", "embedding"} <= emitted


def test_every_keras_activation_maps_to_a_module_the_fx_table_knows() -> None:
    pytest.importorskip("keras", reason="keras is not installed (make test installs the 'tf' extra)")
    from backtrace.frontends.keras_layers import ACTIVATIONS

    for name, make in ACTIVATIONS.items():
        h = torch_fx.TABLE.get(type(make()))
        assert h is not None and h.all("activation"), name


def test_the_groups_are_read_from_the_traits() -> None:
    assert ops.kinds("activation")[:3] == ("relu", "relu6", "leaky_relu") and "softmax" in ops.kinds("activation")
    assert "softmax" not in ops.kinds("elementwise") and "pointwise" in ops.kinds("elementwise")
    assert set(ops.kinds("foldable")) == {"linear", "conv1d", "conv2d"}
    assert set(ops.kinds("lookup")) <= set(ops.kinds("index_like"))
    assert "dropout" in ops.kinds("moves") and "dropout" not in ops.kinds("index_like")
    with pytest.raises(ValueError, match=r"^unknown trait 'heavy'; choose one of: activation, elementwise, "):
        ops.kinds("heavy")


def test_a_rule_for_a_kind_outside_the_catalogue_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^op kind 'toy' is not in the catalogue \(backtrace.ops\); register "
                                         r"it as an OpKind to add it$"):
        register("toy")(type("ToyRule", (Rule,), {}))
    with pytest.raises(ValueError, match=r"^rule for op kind 'relu' registered twice$"):
        register(ops.OpKind("relu", activation=True))(type("ReluRule", (Rule,), {}))
    assert "toy" not in RULES and "toy" not in ops.CATALOGUE


class Mixed(nn.Module):
    """Token ids and a float input through layers both front ends map."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.conv = nn.Conv1d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 + 4, 3)

    def forward(self, ids: Tensor, x: Tensor) -> Tensor:
        h = self.norm(self.emb(ids)).transpose(1, 2)
        h = F.max_pool1d(torch.relu(self.conv(h)), 2)
        feats = torch.cat([h.mean(2), x], dim=1)
        return torch.softmax(self.fc(feats), dim=1)


def test_node_params_do_not_depend_on_the_front_end() -> None:
    torch.manual_seed(0)
    model = Mixed().eval()
    ids, x = torch.randint(0, 20, (2, 6)), torch.randn(2, 4)
    graphs = {}
    for frontend in ("fx", "export"):
        bt = Backtrace(model, frontend=frontend)
        bt.predict(ids, x)
        graphs[frontend] = {n.kind: n for n in bt.graph.nodes if n.kind not in ("input", "constant", "aux")}
    fx_nodes, ex_nodes = graphs["fx"], graphs["export"]
    shared = set(fx_nodes) & set(ex_nodes)
    assert {"embedding", "layer_norm", "conv1d", "relu", "max_pool1d", "mean", "cat", "linear", "softmax"} <= shared
    for kind in shared:
        a, b = fx_nodes[kind].params, ex_nodes[kind].params
        assert set(a) == set(b), kind
        assert set(a) <= set(ops.CATALOGUE[kind].params), kind
        for key in a:
            if isinstance(a[key], Tensor):
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
            elif not callable(a[key]):
                assert a[key] == b[key], (kind, key)
