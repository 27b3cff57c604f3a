"""DLBacktrace as a method: what the wrapper hands the engine (the softmax of the logits, the
harness's target, the config's options), and the contrastive maps it keeps."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import backtrace
from baselines import METHODS, ExplainContext

N_CLASSES = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, N_CLASSES)).eval()


def cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 16, N_CLASSES)).eval()


def context(modality: str) -> ExplainContext:
    return ExplainContext(modality=modality, model_kind="mlp" if modality == "tabular" else "conv",
                          n_classes=N_CLASSES)


X = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
T = torch.tensor([2, 0, 1, 2])


def test_wrapper_explains_the_softmax_of_the_model_for_the_given_targets(monkeypatch):
    calls = []

    def fake_explain(model, x, mode="default", target=None, return_conservation=False, **options):
        calls.append((model, x, mode, target, options))
        assert return_conservation
        return torch.zeros_like(x), torch.ones(len(x))

    monkeypatch.setattr(backtrace, "explain", fake_explain)
    model = mlp()
    METHODS["backtrace"](model, context("tabular"), options={"multiplier": 1.0})(X, T)
    explained, x, mode, target, options = calls[0]
    assert isinstance(explained, nn.Sequential) and explained[0] is model
    assert isinstance(explained[1], nn.Softmax) and explained[1].dim == -1
    torch.testing.assert_close(explained(X), torch.softmax(model(X), -1))
    assert mode == "default" and torch.equal(target, T) and options == {"multiplier": 1.0}
    assert torch.equal(x, X)


@pytest.mark.parametrize("how", ["positive", "difference"])
def test_contrastive_reports_the_chosen_map_and_keeps_both(how):
    method = METHODS["backtrace_contrastive"](mlp(), context("tabular"), contrastive_output=how)
    result = method(X, T)
    positive, negative = backtrace.explain(method.explained, X, mode="contrastive", target=T)
    torch.testing.assert_close(result.extras["positive"], positive)
    torch.testing.assert_close(result.extras["negative"], negative)
    expected = positive if how == "positive" else positive - negative
    torch.testing.assert_close(result.values, expected)
    assert not torch.allclose(negative, torch.zeros_like(negative))


@pytest.mark.parametrize("name", ["backtrace", "backtrace_contrastive"])
def test_backtrace_on_a_cnn(name):
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    method = METHODS[name](cnn(), context("image"))
    a = method(x, torch.tensor([0, 1, 2])).values
    b = method(x, torch.tensor([1, 1, 1])).values
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert not torch.allclose(a[0], b[0])
    single = torch.cat([method(x[i : i + 1], torch.tensor([i])).values for i in range(3)])
    torch.testing.assert_close(a, single, rtol=1e-4, atol=1e-6)


def test_default_mode_matches_the_engine_on_the_softmax_model():
    model = mlp()
    values = METHODS["backtrace"](model, context("tabular"))(X, T).values
    expected = backtrace.explain(nn.Sequential(model, nn.Softmax(dim=-1)), X, target=T)
    torch.testing.assert_close(values, expected)


def test_each_sample_s_conservation_is_kept_for_the_record():
    """Default mode drops the bias shares, so a sample keeps at most what it started with;
    contrastive mode reports one ratio per map."""
    result = METHODS["backtrace"](mlp(), context("tabular"))(X, T)
    kept = result.extras["conservation"]
    assert kept.shape == (4,) and torch.all(kept > 0) and torch.all(kept <= 1 + 1e-5)
    _, expected = backtrace.explain(nn.Sequential(mlp(), nn.Softmax(dim=-1)), X, target=T, return_conservation=True)
    torch.testing.assert_close(kept, expected)
    both = METHODS["backtrace_contrastive"](mlp(), context("tabular"))(X, T).extras
    assert both["conservation_positive"].shape == (4,) and both["conservation_negative"].shape == (4,)
