"""The value a dense model is explained by (``baselines.dense_heads``): computed by hand, the same
value DLBacktrace's own tasks start from (and, on a network without biases, hand back whole),
and explained by every method through the same ``explain(inputs, targets)``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from backtrace import Backtrace, explain
from baselines import ExplainContext, IncompatibleMethodError
from baselines.dense_heads import BoxScore, SegmentationScore, dense_head, explained_targets
from experiments.zoo.dense_models import BoxCNN, UNet

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "method"
SMALL: dict[str, dict[str, Any]] = {"ig": {"n_steps": 8}, "smoothgrad": {"nt_samples": 4},
                                    "lime": {"num_samples": 40, "segmentation": "felzenszwalb",
                                             "segmentation_params": {"scale": 1.0, "min_size": 3}},
                                    "shap_partition": {"max_evals": 40}, "shap_gradient": {"nsamples": 8}}
DENSE_METHODS = ["backtrace", "backtrace_contrastive", "saliency", "gradxinput", "ig", "smoothgrad", "gradcam",
                 "lime", "shap_partition", "shap_gradient", "random", "sobel"]

pytestmark = pytest.mark.usefixtures("one_thread")


class FixedLogits(nn.Module):
    """Logits that are the input itself: p = sigmoid(x) per pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


def logit(p: float) -> float:
    return float(torch.logit(torch.tensor(p, dtype=torch.float64)))


def images(n: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 1, size // 4, size // 4, generator=g)
    return nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


def unet_head(x: torch.Tensor) -> SegmentationScore:
    """A small untrained U-Net with the threshold at its median probability on ``x``, so that
    about half of the pixels are predicted foreground."""
    torch.manual_seed(0)
    net = UNet(1, tuple(x.shape[-2:]), widths=(4, 8)).eval()
    with torch.no_grad():
        t = float(torch.sigmoid(net(x)).median())
    return dense_head(net, "binary-segmentation", t)


def method(name: str, model: nn.Module, **over: Any):
    """The method as the harness builds it, from its yaml, explaining the head as it is."""
    root = OmegaConf.create({"output": "identity", "method": OmegaConf.load(CONFIG_DIR / f"{name}.yaml")})
    cfg = OmegaConf.merge(OmegaConf.to_container(root, resolve=True)["method"], SMALL.get(name, {}), over)
    ctx = ExplainContext(modality="image", model_kind="conv", n_classes=model.n_outputs, x_train=images(12, seed=5))
    try:
        return instantiate(cfg, model=model, context=ctx)
    except InstantiationException as exc:   # hydra wraps what the constructor raised: test that
        raise exc.__cause__ from None


# ---------------------------------------------------------------------------------------------
# the value, by hand

def test_segmentation_value_sums_the_probabilities_above_the_threshold() -> None:
    head = SegmentationScore(FixedLogits(), thresholding=0.5)
    x = torch.tensor([[[[logit(0.2), logit(0.6)], [logit(0.9), logit(0.5)]]]])
    # 0.5 is not above 0.5: the reference keeps output > thresholding
    assert float(head(x)) == pytest.approx(0.6 + 0.9, abs=1e-6)
    assert float(SegmentationScore(FixedLogits(), 0.7)(x)) == pytest.approx(0.9, abs=1e-6)
    assert float(SegmentationScore(FixedLogits(), 0.0)(x)) == pytest.approx(0.2 + 0.6 + 0.9 + 0.5, abs=1e-6)


def test_a_pixel_crossing_the_threshold_moves_the_value_by_about_the_threshold() -> None:
    head = SegmentationScore(FixedLogits(), thresholding=0.5)
    below = torch.tensor([[[[logit(0.9), logit(0.4999)]]]])
    above = torch.tensor([[[[logit(0.9), logit(0.5001)]]]])
    assert float(head(above) - head(below)) == pytest.approx(0.5001, abs=1e-5)


def test_the_gradient_counts_only_the_pixels_kept() -> None:
    head = SegmentationScore(FixedLogits(), thresholding=0.5)
    x = torch.tensor([[[[logit(0.2), logit(0.6)], [logit(0.9), logit(0.5)]]]], requires_grad=True)
    head(x).sum().backward()
    p = torch.sigmoid(x.detach())
    expected = torch.where(p > 0.5, p * (1 - p), torch.zeros_like(p))
    torch.testing.assert_close(x.grad, expected)


def test_box_outputs_are_the_coordinates_or_their_sum() -> None:
    torch.manual_seed(0)
    net = BoxCNN(1, (16, 16), channels=(4, 8)).eval()
    x = images(4)
    boxes = net(x)
    torch.testing.assert_close(BoxScore(net, "coordinate")(x), boxes)
    torch.testing.assert_close(BoxScore(net, "sum")(x), boxes.sum(1, keepdim=True))
    assert explained_targets(BoxScore(net, "coordinate"), 3, coordinate=2).tolist() == [2, 2, 2]
    assert explained_targets(BoxScore(net, "sum"), 2).tolist() == [0, 0]
    with pytest.raises(ValueError, match="unknown box_output 'mean'; valid choices: coordinate, sum"):
        BoxScore(net, "mean")


# ---------------------------------------------------------------------------------------------
# DLBacktrace starts from the same value

@pytest.mark.parametrize("mode", ["default", "contrastive"])
def test_backtrace_starts_from_the_heads_value_and_gives_pixels_below_the_threshold_nothing(mode: str) -> None:
    x = images()
    head = unet_head(x)
    model, options = head.backtrace_view()
    bt = Backtrace(model)
    start = bt.eval(bt.predict(x), mode=mode, **options)[bt.graph.output]
    positive = start[0] if mode == "contrastive" else start
    p = torch.sigmoid(head.net(x)).detach()
    kept = p > head.thresholding
    assert 0.2 < float(kept.float().mean()) < 0.8
    torch.testing.assert_close(positive, 100.0 * p * kept)                      # multiplier 100
    torch.testing.assert_close(positive.flatten(1).sum(1), 100.0 * head(x).detach().flatten())
    assert bool((positive[~kept] == 0).all())
    if mode == "contrastive":   # the reference's R-: 1 - p on the kept pixels, p on the others
        torch.testing.assert_close(start[1], 100.0 * torch.where(kept, 1 - p, p))


def conservative_net() -> nn.Module:
    """Convolutions without biases, positive first-layer weights (so no ReLU output and no
    receptive field is all zero) and second-layer weights small enough that the sigmoid's
    saturation bound never drops a side: DLBacktrace hands back all of the starting relevance."""
    torch.manual_seed(3)
    c1, c2 = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.Conv2d(4, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        c1.weight.uniform_(0.05, 0.3)
        c2.weight.uniform_(-0.1, 0.1)
    return nn.Sequential(c1, nn.ReLU(), nn.MaxPool2d(2), nn.ConvTranspose2d(4, 4, 2, stride=2, bias=False), c2).eval()


def test_without_biases_the_input_relevance_totals_the_explained_value() -> None:
    net = conservative_net()
    with torch.no_grad():
        net[3].weight.uniform_(0.05, 0.3)
    x = images() + 0.1
    with torch.no_grad():
        t = float(torch.sigmoid(net(x)).median())
    head = dense_head(net, "binary-segmentation", t)
    model, options = head.backtrace_view()
    relevance, kept = explain(model, x, return_conservation=True, **options)
    torch.testing.assert_close(kept, torch.ones(len(x)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(relevance.flatten(1).sum(1), 100.0 * head(x).detach().flatten(), rtol=1e-5, atol=1e-4)


def test_scaler_would_start_every_sample_from_the_same_constant_and_is_refused() -> None:
    x = images()
    head = unet_head(x)
    model, options = head.backtrace_view()
    bt = Backtrace(model)
    start = bt.eval(bt.predict(x), scaler=1.0, **options)[bt.graph.output]
    torch.testing.assert_close(start.flatten(1).sum(1), torch.full((len(x),), 100.0))   # whatever the image
    with pytest.raises(ValueError, match="backtrace option scaler=1.0 starts a binary-segmentation explanation "
                                         "from a constant"):
        method("backtrace", head, options={"scaler": 1.0})
    with pytest.raises(ValueError, match=r"contradict the model's head \(task='binary-segmentation'\)"):
        method("backtrace", head, options={"task": "multi-class classification"})


def test_backtrace_on_boxes_starts_from_the_coordinate_and_the_sum_is_the_sum_of_coordinates() -> None:
    torch.manual_seed(0)
    net = BoxCNN(1, (16, 16), channels=(4, 8)).eval()
    x = images(4)
    boxes = net(x).detach()
    model, options = BoxScore(net, "coordinate").backtrace_view()
    bt = Backtrace(model)
    for k in range(4):
        start = bt.eval(bt.predict(x), target=k, **options)[bt.graph.output]
        expected = torch.zeros_like(boxes)
        expected[:, k] = 100.0 * boxes[:, k]
        torch.testing.assert_close(start, expected)
    # the sum head: the engine splits the sum over the coordinates in proportion to their values
    # (all positive: a sigmoid's), which is each coordinate's own start; default-mode relevance is
    # linear in its start, so the sum's explanation is the sum of the four
    total_model, total_options = BoxScore(net, "sum").backtrace_view()
    summed = explain(total_model, x, target=0, **total_options)
    parts = sum(explain(net, x, target=k, **options) for k in range(4))
    torch.testing.assert_close(summed, parts, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# every method explains the head

@pytest.mark.parametrize("name", DENSE_METHODS)
def test_every_method_explains_the_segmentation_value(name: str) -> None:
    x = images(2)
    head = unet_head(x)
    explainer = method(name, head)
    targets = explained_targets(head, len(x))
    att = explainer(x, targets)
    assert att.values.shape[0] == 2 and att.values.shape[-2:] == (16, 16)
    assert bool(torch.isfinite(att.values).all())
    if name in ("backtrace", "backtrace_contrastive"):
        assert "conservation" in att.extras or "conservation_positive" in att.extras


@pytest.mark.parametrize("name", ["saliency", "gradxinput", "backtrace", "ig", "random"])
@pytest.mark.parametrize("box_output", ["coordinate", "sum"])
def test_every_method_explains_a_box_value(name: str, box_output: str) -> None:
    torch.manual_seed(0)
    head = dense_head(BoxCNN(1, (16, 16), channels=(4, 8)).eval(), "bbox-regression", box_output=box_output)
    x = images(2)
    att = method(name, head)(x, explained_targets(head, 2, coordinate=3))
    assert att.values.shape == x.shape and bool(torch.isfinite(att.values).all())


def test_gradient_methods_explain_exactly_the_heads_value() -> None:
    x = images(2)
    head = unet_head(x)
    xg = x.clone().requires_grad_(True)
    head(xg).sum().backward()
    targets = explained_targets(head, 2)
    torch.testing.assert_close(method("saliency", head)(x, targets).values, xg.grad.abs())
    torch.testing.assert_close(method("gradxinput", head)(x, targets).values, xg.grad * x)


def test_seg_grad_cam_weighs_the_last_decoder_block_by_the_values_gradient() -> None:
    x = images(2)
    head = unet_head(x)
    layer = dict(head.named_modules())[head.cam_layer]
    assert head.cam_layer == "net.decoder.0"
    store: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    try:
        value = head(x.clone().requires_grad_(True))
        grads = torch.autograd.grad(value.sum(), store["a"])[0]
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    expected = (weights * store["a"]).sum(1, keepdim=True).clamp(min=0).detach()   # full resolution already
    torch.testing.assert_close(method("gradcam", head)(x, explained_targets(head, 2)).values, expected)


def test_methods_and_outputs_that_cannot_explain_a_head_are_refused() -> None:
    x = images(2)
    head = unet_head(x)
    with pytest.raises(IncompatibleMethodError, match="method 'shap_deep' does not support the dense task "
                                                      "'binary-segmentation'"):
        method("shap_deep", head)
    ctx = ExplainContext(modality="image", model_kind="conv", n_classes=1)
    from baselines import METHODS

    with pytest.raises(IncompatibleMethodError, match="a binary-segmentation head is explained as it is; output "
                                                      "must be 'identity', not 'softmax'"):
        METHODS["saliency"](head, ctx, output="softmax")
    with pytest.raises(IncompatibleMethodError, match="output 'identity' is for dense-task heads"):
        METHODS["saliency"](head.net, ctx, output="identity")
