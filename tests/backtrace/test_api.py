"""Public API: tasks, options, modes, dtypes, conservation, error messages."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from backtrace import Backtrace, explain


def mlp(bias: bool = True, head: nn.Module | None = None) -> nn.Module:
    layers = [nn.Linear(6, 10, bias=bias), nn.ReLU(), nn.Linear(10, 8, bias=bias), nn.ReLU(),
              nn.Linear(8, 4, bias=bias)]
    return nn.Sequential(*layers, *([head] if head is not None else [])).eval()


def _total(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


def test_default_seed_is_target_output_times_multiplier() -> None:
    model, x = mlp(head=nn.Softmax(-1)), torch.randn(5, 6)
    bt = Backtrace(model)
    outs = bt.predict(x)
    p = outs[bt.graph.output]
    rel = bt.eval(outs, target=[0, 1, 2, 3, 0])
    expected = torch.zeros_like(p)
    expected[torch.arange(5), [0, 1, 2, 3, 0]] = p[torch.arange(5), [0, 1, 2, 3, 0]] * 100
    torch.testing.assert_close(rel[bt.graph.output], expected)
    argmax = bt.eval(outs)[bt.graph.output]
    assert (argmax.argmax(1) == p.argmax(1)).all()
    torch.testing.assert_close(bt.eval(outs, multiplier=10.0)["input"], bt.eval(outs)["input"] / 10)
    scaled = bt.eval(outs, scaler=2.0)[bt.graph.output]
    torch.testing.assert_close(scaled.sum(1), torch.full((5,), 200.0))


def test_default_mode_conserves_without_bias_or_saturation() -> None:
    model, x = mlp(bias=False), torch.randn(4, 6)
    bt = Backtrace(model)
    outs = bt.predict(x)
    logits = outs[bt.graph.output]
    R = bt.eval(outs)["input"]
    torch.testing.assert_close(_total(R), logits.max(1).values * 100, rtol=1e-5, atol=1e-4)


def test_contrastive_conserves_both_maps_through_dense_layers() -> None:
    model, x = mlp(head=nn.Softmax(-1)), torch.randn(4, 6)
    bt = Backtrace(model)
    outs = bt.predict(x)
    p = outs[bt.graph.output].max(1).values
    rp, rn = bt.eval(outs, mode="contrastive")["input"]
    torch.testing.assert_close(_total(rp), p * 100, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(_total(rn), (1 - p) * 100, rtol=1e-5, atol=1e-4)
    alias = explain(model, x, mode="contrast")
    torch.testing.assert_close(alias[0], rp)
    torch.testing.assert_close(alias[1], rn)


def test_binary_classification_with_one_sigmoid_output() -> None:
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 1), nn.Sigmoid()).eval()
    bt = Backtrace(model)
    outs = bt.predict(torch.randn(3, 6))
    p = outs[bt.graph.output]
    seed_p, seed_n = bt.eval(outs, mode="contrastive", task="binary-classification")[bt.graph.output]
    torch.testing.assert_close(seed_p, p * 100)
    torch.testing.assert_close(seed_n, (1 - p) * 100)


def test_bbox_regression_with_scaler_spreads_evenly() -> None:
    model = mlp()
    bt = Backtrace(model)
    outs = bt.predict(torch.randn(2, 6))
    seed = bt.eval(outs, task="bbox-regression", scaler=1.0)[bt.graph.output]
    torch.testing.assert_close(seed, torch.full((2, 4), 100.0 / 4))


def test_binary_segmentation_seeds_the_thresholded_mask() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1),
                          nn.Sigmoid()).eval()
    x = torch.randn(2, 1, 6, 5)
    bt = Backtrace(model)
    outs = bt.predict(x)
    out = outs[bt.graph.output]
    mask = out > 0.45
    rel = bt.eval(outs, task="binary-segmentation", thresholding=0.45)
    torch.testing.assert_close(rel[bt.graph.output], out * mask * 100)
    seed_p, seed_n = bt.eval(outs, mode="contrastive", task="binary-segmentation", thresholding=0.45)[
        bt.graph.output]
    torch.testing.assert_close(seed_n, torch.where(mask, 1 - out, out) * 100)
    scaled = bt.eval(outs, task="binary-segmentation", thresholding=0.45, scaler=1.0)[bt.graph.output]
    torch.testing.assert_close(scaled.flatten(1).sum(1), torch.full((2,), 100.0))
    assert rel[bt.graph.inputs[0]].shape == x.shape


def test_float64_on_request_and_model_untouched() -> None:
    model, x = mlp(head=nn.Softmax(-1)), torch.randn(3, 6)
    r64 = explain(model, x, dtype=torch.float64)
    r32 = explain(model, x)
    assert r64.dtype == torch.float64 and r32.dtype == torch.float32
    assert next(model.parameters()).dtype == torch.float32
    torch.testing.assert_close(r64.float(), r32, rtol=1e-4, atol=1e-5)


def test_explain_follows_weight_updates() -> None:
    model, x = mlp(head=nn.Softmax(-1)), torch.randn(3, 6)
    before = explain(model, x)
    with torch.no_grad():
        model[0].weight.mul_(2)
    after = explain(model, x)
    torch.testing.assert_close(after, Backtrace(model).eval(Backtrace(model).predict(x))["input"])
    assert not torch.allclose(before, after)


def test_bad_options_name_the_value_and_the_choices() -> None:
    bt = Backtrace(mlp())
    outs = bt.predict(torch.randn(1, 6))
    with pytest.raises(ValueError, match=r"^unknown mode 'contrastiv'; choose one of: default, contrastive "
                                         r"\(or 'contrast'\)$"):
        bt.eval(outs, mode="contrastiv")
    with pytest.raises(ValueError, match=r"^unknown task 'regression'; choose one of: binary-classification, "
                                         r"multi-class classification, bbox-regression, binary-segmentation$"):
        bt.eval(outs, task="regression")
    with pytest.raises(ValueError, match=r"^unknown node name\(s\) in keep: 'inptu'; choose from: input, "):
        bt.eval(outs, keep=["inptu"])
    with pytest.raises(TypeError, match=r"^unknown option\(s\) 'multiplyer'; choose from: task, multiplier, "):
        explain(mlp(), torch.randn(1, 6), multiplyer=3.0)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 3 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.conv(x)))
        return torch.softmax(self.fc(h.view(h.size(0), -1)), dim=1)   # a view that needs contiguous memory


@pytest.mark.parametrize("mode", ["default", "contrastive"])
def test_keep_returns_the_same_relevance_for_fewer_nodes(mode: str) -> None:
    model, x = SmallCNN().eval(), torch.randn(3, 3, 6, 9)
    bt = Backtrace(model)
    outs = bt.predict(x)
    torch.testing.assert_close(outs[bt.graph.output], model(x), rtol=1e-5, atol=1e-6)
    full = bt.eval(outs, mode=mode)
    first = bt.graph.inputs[0]
    some = bt.eval(outs, mode=mode, keep=[first, "conv"])
    assert list(some) == [first, "conv"]
    for name in some:
        for a, b in (zip(some[name], full[name]) if mode == "contrastive" else [(some[name], full[name])]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
            assert a.is_contiguous()                    # whatever layout the rules worked in
    one = explain(model, x, mode=mode)
    for a, b in (zip(one, full[first]) if mode == "contrastive" else [(one, full[first])]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
