"""The torch.fx front end: functional and module spellings agree; unsupported ops are named."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backtrace import Backtrace, UnsupportedOperation, explain
from backtrace.rules import RULES


class ModuleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.act1 = nn.Tanh()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8, 3)
        self.out = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.act1(self.conv1(x)))
        r = self.act2(self.conv2(h))
        s = h + r
        feats = torch.cat([self.flat(self.gap(s)), self.flat(self.gap(r))], dim=1)
        return self.out(self.fc(feats))


class FunctionalNet(ModuleNet):
    """The same model written with functional calls and tensor methods."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.conv2d(x, self.conv1.weight, self.conv1.bias, padding=1)
        h = F.max_pool2d(torch.tanh(h), 2)
        r = self.conv2(h).relu()
        s = torch.add(h, r)
        feats = torch.cat((s.mean((2, 3)), F.adaptive_avg_pool2d(r, 1).view(x.size(0), -1)), 1)
        return F.softmax(F.linear(feats, self.fc.weight, self.fc.bias), dim=-1)


@pytest.mark.parametrize("mode", ["default", "contrastive"])
def test_functional_and_module_versions_give_identical_relevance(mode: str) -> None:
    mod = ModuleNet().eval()
    fun = FunctionalNet().eval()
    fun.load_state_dict(mod.state_dict())
    x = torch.randn(3, 2, 8, 6)
    a, b = explain(mod, x, mode=mode), explain(fun, x, mode=mode)
    for u, v in (zip(a, b) if mode == "contrastive" else [(a, b)]):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
        assert u.abs().sum() > 0
    bt = Backtrace(fun)
    assert bt.graph.node("conv1").meta["activation"] == "tanh"     # named by the weight's module
    assert bt.graph.node("fc").meta["activation"] == "softmax"


class WithPReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class WithExp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.fc(x))


def test_unsupported_module_is_named_at_construction() -> None:
    with pytest.raises(UnsupportedOperation) as info:
        Backtrace(WithPReLU())
    kinds = ", ".join(sorted(RULES))
    assert str(info.value) == (f"unsupported operation at node 'act': module act (PReLU) "
                               f"(no rule for this module type); supported kinds: {kinds}")


def test_unsupported_function_is_named_at_construction() -> None:
    with pytest.raises(UnsupportedOperation) as info:
        Backtrace(WithExp())
    assert str(info.value).startswith("unsupported operation at node 'exp': function torch.exp")
    assert info.value.node == "exp" and "linear" in info.value.supported


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.chunk(self.fc(x), 2, dim=1)
        return a * torch.sigmoid(b)


def test_tuple_valued_nodes_get_a_mirroring_relevance_structure() -> None:
    x = torch.randn(2, 4)
    bt = Backtrace(TupleOut())
    outs = bt.predict(x)
    rel = bt.eval(outs, task="bbox-regression", scaler=1.0)
    split = next(n.name for n in bt.graph.nodes if n.kind == "split")
    r_split = rel[split]
    assert isinstance(r_split, tuple) and len(r_split) == 2
    assert all(r.shape == (2, 3) for r in r_split)
    torch.testing.assert_close(rel["fc"], torch.cat(r_split, dim=1))


def test_same_padding_with_even_kernel_conserves_without_bias() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 4, padding="same", bias=False), nn.Flatten(),
                          nn.Linear(3 * 5 * 6, 2, bias=False)).eval()
    bt = Backtrace(model)
    outs = bt.predict(torch.randn(2, 2, 5, 6))
    R = bt.eval(outs)[bt.graph.inputs[0]]
    torch.testing.assert_close(R.sum((1, 2, 3)), outs[bt.graph.output].max(1).values * 100, rtol=1e-5, atol=1e-4)


class TimeFirst(nn.Module):
    """A sequence model that works time-first in the middle: the batch dimension moves away
    from dimension 0 (``transpose(0, 1)`` / ``permute(1, 0, 2)``) and back."""

    def __init__(self, spelling: str) -> None:
        super().__init__()
        self.spelling = spelling
        self.proj = nn.Linear(4, 5)
        self.head = nn.Linear(6 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # x: (batch, time, features)
        t = x.transpose(0, 1) if self.spelling == "transpose" else x.permute(1, 0, 2)
        h = torch.relu(self.proj(t))                             # (time, batch, 5)
        h = h.transpose(0, 1) if self.spelling == "transpose" else h.permute(1, 0, 2)
        return torch.softmax(self.head(h.flatten(1)), dim=1)


class BatchFirst(TimeFirst):
    """The same model with the batch kept first throughout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.proj(x))
        return torch.softmax(self.head(h.flatten(1)), dim=1)


@pytest.mark.parametrize("spelling", ["transpose", "permute"])
@pytest.mark.parametrize("mode", ["default", "contrastive"])
def test_ops_that_move_the_batch_dimension_pull_back_exactly(spelling: str, mode: str) -> None:
    moved = TimeFirst(spelling).eval()
    plain = BatchFirst(spelling).eval()
    plain.load_state_dict(moved.state_dict())
    x = torch.randn(7, 6, 4)                         # batch 7 != time 6: a wrong pull-back cannot fit
    a, b = explain(moved, x, mode=mode), explain(plain, x, mode=mode)
    for u, v in (zip(a, b) if mode == "contrastive" else [(a, b)]):
        assert u.shape == x.shape
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
        assert u.abs().sum() > 0
    single = explain(moved, x[2:3], mode=mode)       # batch invariance through the moved batch
    for u, v in (zip(a, single) if mode == "contrastive" else [(a, single)]):
        torch.testing.assert_close(u[2:3], v, rtol=1e-5, atol=1e-6)
