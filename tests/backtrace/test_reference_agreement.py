"""Agreement with the reference package dl-backtrace 0.0.25 (default and contrastive mode).

The reference explains one sample at a time and needs its own model layout (see
:class:`Chain`); we explain the whole batch at once and compare sample by sample, the input
relevance and every layer's relevance, to 1e-4 relative.
"""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from backtrace import Backtrace
from tests.backtrace.conftest import Chain, rel_err

ref_module = pytest.importorskip("dl_backtrace.pytorch_backtrace")

ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softmax": lambda: nn.Softmax(dim=-1)}
TOL = 1e-4


def mlp(hidden_act: str, head: str, n_out: int, n_in: int = 7) -> Chain:
    return Chain(OrderedDict([
        ("identity", nn.Identity()),
        ("fc1", nn.Linear(n_in, 12)), (f"{hidden_act}1", ACT[hidden_act]()),
        ("fc2", nn.Linear(12, 9)), (f"{hidden_act}2", ACT[hidden_act]()),
        ("fc3", nn.Linear(9, n_out)), (head, ACT[head]()),
    ]))


def cnn(act: str, pool: str) -> Chain:
    """Conv with stride and padding, a pooling layer, flatten, dense head; input 2x11x9."""
    pool_mod = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
    return Chain(OrderedDict([
        ("identity", nn.Identity()),
        ("conv1", nn.Conv2d(2, 4, 3, stride=1, padding=1)), (f"{act}1", ACT[act]()),
        ("conv2", nn.Conv2d(4, 5, 3, stride=2, padding=1)), (f"{act}2", ACT[act]()),
        ("pool", pool_mod),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(5 * 3 * 2, 4)), ("softmax", nn.Softmax(dim=-1)),
    ]))


def _our_name(ref_key: str) -> str:
    return ref_key.split("/")[-1]


def compare(model: Chain, x: torch.Tensor, mode: str) -> None:
    model.eval()
    bt = Backtrace(model)
    ours = bt.eval(bt.predict(x), mode=mode)
    ref_bt = ref_module.Backtrace(model=model)
    for i in range(x.shape[0]):
        ref = ref_bt.eval(ref_bt.predict(x[i:i + 1]), mode="contrast" if mode == "contrastive" else "default")
        assert set(_our_name(k) for k in ref) <= set(ours)
        for key, ref_val in ref.items():
            mine = ours[_our_name(key)]
            if mode == "default":
                assert rel_err(mine[i], ref_val) < TOL, (key, i)
            else:
                assert rel_err(mine[0][i], ref_val["Positive"]) < TOL, (key, i, "R+")
                assert rel_err(mine[1][i], ref_val["Negative"]) < TOL, (key, i, "R-")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("hidden_act,head,n_out", [
    ("relu", "softmax", 4), ("tanh", "softmax", 3), ("sigmoid", "softmax", 5),
    ("relu", "sigmoid", 1), ("tanh", "sigmoid", 1), ("relu", "sigmoid", 3),
])
@pytest.mark.parametrize("mode", ["default", "contrastive"])
def test_mlp_matches_reference(seed: int, hidden_act: str, head: str, n_out: int, mode: str) -> None:
    torch.manual_seed(seed)
    model = mlp(hidden_act, head, n_out)
    compare(model, torch.randn(3, 7) * 2, mode)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("act,pool", [("relu", "max"), ("relu", "avg"), ("tanh", "max"), ("sigmoid", "avg")])
def test_cnn_matches_reference_default(seed: int, act: str, pool: str) -> None:
    torch.manual_seed(seed)
    compare(cnn(act, pool), torch.randn(2, 2, 11, 9), "default")


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_cnn_matches_reference_contrastive(seed: int, act: str) -> None:
    # The reference's contrastive average pooling is broken (it pools over the channel axis);
    # max pooling is compared here, average pooling against a naive rule in test_rules_naive.
    torch.manual_seed(seed)
    compare(cnn(act, "max"), torch.randn(2, 2, 11, 9), "contrastive")
