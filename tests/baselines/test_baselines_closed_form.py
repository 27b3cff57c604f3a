"""The libraries are called, not reimplemented: on models whose attributions are known in closed
form (a linear model; a one-conv GradCAM), each method returns those values. Also the narrow
wraps around shap's DeepExplainer and the automatic GradCAM layer on a real ResNet."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines import METHODS, ExplainContext
from baselines.gradcam import find_last_conv_map
from baselines.shap_methods import sample_background
from experiments.zoo.models import ResNet

F, C = 6, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def linear_model() -> nn.Linear:
    torch.manual_seed(0)
    model = nn.Linear(F, C)
    with torch.no_grad():
        model.weight.copy_(torch.randn(C, F))
        model.bias.copy_(torch.randn(C))
    return model.eval()


def tabular(seed: int = 0, n: int = 24) -> torch.Tensor:
    return torch.randn(n, F, generator=torch.Generator().manual_seed(seed)) * torch.linspace(0.5, 2.0, F) + 1.0


def ctx(x_train: torch.Tensor, seed: int = 0) -> ExplainContext:
    return ExplainContext(modality="tabular", model_kind="mlp", n_classes=C, x_train=x_train, seed=seed)


X_TRAIN = tabular(0)
X = tabular(1, 4)
T = torch.tensor([0, 1, 2, 1])


def weights(model: nn.Linear) -> torch.Tensor:
    return model.weight.detach()[T]  # (N, F): the target's weights per sample


def run(name: str, **params) -> tuple[torch.Tensor, torch.Tensor]:
    model = linear_model()
    method = METHODS[name](model, ctx(X_TRAIN), **params)
    return method(X, T).values.double(), weights(model).double()


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b.to(a.dtype), rtol=tol, atol=tol)


def test_ig_zero_baseline_is_input_times_weight():
    values, w = run("ig", n_steps=50)
    close(values, X.double() * w)


def test_ig_mean_baseline_is_centred_input_times_weight():
    values, w = run("ig", n_steps=50, baseline="mean")
    close(values, (X - X_TRAIN.mean(0)).double() * w)


def test_gradient_methods_on_a_linear_model():
    values, w = run("gradxinput")
    close(values, X.double() * w)
    values, w = run("saliency")
    close(values, w.abs())
    values, w = run("smoothgrad", nt_samples=5)  # a constant gradient, whatever the noise
    close(values, w)


def test_saliency_of_the_softmax_is_its_input_gradient():
    model = linear_model()
    values = METHODS["saliency"](model, ctx(X_TRAIN), output="softmax")(X, T).values
    x = X.clone().requires_grad_(True)
    probs = torch.softmax(model(x), -1)
    probs[torch.arange(len(T)), T].sum().backward()
    close(values, x.grad.abs())


def test_exact_kernel_shap_is_weight_times_centred_input():
    # 2^6 - 2 coalitions: KernelExplainer enumerates them all and is exact.
    values, w = run("shap_kernel", nsamples=64, background="full", output="logits")
    close(values, w * (X - X_TRAIN.mean(0)).double())


@pytest.mark.slow  # shap's partition explainer compiles its numba kernels on first use
def test_partition_shap_on_an_additive_model_is_weight_times_centred_input():
    values, w = run("shap_partition", max_evals=200, background_size=len(X_TRAIN), output="logits")
    close(values, w * (X - X_TRAIN.mean(0)).double())


def test_deep_shap_on_a_linear_model_is_weight_times_centred_input():
    values, w = run("shap_deep", background_size=len(X_TRAIN))
    close(values, w * (X - X_TRAIN.mean(0)).double())


def test_gradient_shap_with_one_reference_is_weight_times_difference():
    values, w = run("shap_gradient", nsamples=8, background_size=1)
    reference = sample_background(ctx(X_TRAIN), 1, "shap_gradient")[0]
    close(values, w * (X - reference).double())


def test_lime_on_a_linear_model_recovers_the_weights_in_standardised_units():
    # Without discretisation lime fits its surrogate on (x - mean) / std of the training set,
    # so an exactly linear model gets coefficients w * std (up to the ridge's slight shrinkage).
    values, w = run("lime", num_samples=2000, discretize=False, output="logits")
    close(values, w * X_TRAIN.double().std(0, unbiased=False), tol=1e-2)


def test_lime_image_gives_each_superpixel_one_weight():
    from skimage.segmentation import felzenszwalb

    torch.manual_seed(0)
    # Tanh, not ReLU: with this seed both ReLU channels are dead on [0, 1] inputs, the model's
    # output is constant and LIME rightly returns an all-zero map.
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 64, C)).eval()
    x = nn.functional.interpolate(torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3)), size=(8, 8),
                                  mode="bilinear", align_corners=False)
    assert model(x * 0.5).sub(model(x)).abs().max() > 1e-3  # the toy responds to its input
    context = ExplainContext(modality="image", model_kind="conv", n_classes=C, seed=0)
    method = METHODS["lime"](model, context, num_samples=200, segmentation="felzenszwalb",
                             segmentation_params={"scale": 1.0, "min_size": 3})
    values = method(x, torch.tensor([0, 2])).values
    for i in range(2):
        image = x[i, 0].double().numpy()
        rescaled = (image - image.min()) / (image.max() - image.min())
        segments = felzenszwalb(np.repeat(rescaled[..., None], 3, axis=2), scale=1.0, sigma=0.5, min_size=3)
        assert segments.max() >= 3
        for s in np.unique(segments):
            assert len(np.unique(values[i, 0].numpy()[segments == s])) == 1
        assert len(np.unique(values[i, 0].numpy())) > 1


@pytest.mark.parametrize("relu", [True, False])
def test_gradcam_matches_its_definition(relu):
    # conv -> ReLU -> global average pool -> linear: the class score's gradient w.r.t. feature map
    # k is W[t, k] / (H W) everywhere, so GradCAM = ReLU(sum_k W[t, k] / (H W) * A_k).
    torch.manual_seed(0)
    conv, fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, C)
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()
    x = torch.rand(3, 1, 8, 8)
    targets = torch.tensor([0, 1, 2])
    context = ExplainContext(modality="image", model_kind="conv", n_classes=C)
    method = METHODS["gradcam"](model, context, relu_attributions=relu)
    values = method(x, targets).values
    assert method.layer_name == "1"  # the ReLU after the last conv: the last spatial map
    maps = torch.relu(conv(x)).detach()
    alpha = fc.weight.detach()[targets] / 64
    expected = (alpha[:, :, None, None] * maps).sum(1, keepdim=True)
    close(values, torch.relu(expected) if relu else expected, tol=1e-6)
    assert method.signed is not relu
    if not relu:
        assert (values < 0).any()


def test_gradcam_finds_the_last_residual_block_of_a_resnet():
    model = ResNet(in_channels=1, num_classes=C, depth=8, width=4).eval()
    # the shortcut 1x1 conv runs last, but the map to explain is the block's output
    assert find_last_conv_map(model, torch.rand(1, 1, 8, 8)) == "stages.2.0.relu2"
    values = METHODS["gradcam"](model, ExplainContext(modality="image", model_kind="conv", n_classes=C))(
        torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).values
    assert values.shape == (2, 1, 8, 8) and (values >= 0).all()


def test_gradcam_on_a_named_layer():
    model = ResNet(in_channels=1, num_classes=C, depth=8, width=4).eval()
    context = ExplainContext(modality="image", model_kind="conv", n_classes=C)
    method = METHODS["gradcam"](model, context, layer="stages.1.0.relu2")
    assert method(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).values.shape == (2, 1, 8, 8)
    assert method.layer_name == "stages.1.0.relu2"


def test_deep_shap_on_a_resnet_is_additive_and_leaves_the_model_clean():
    model = ResNet(in_channels=1, num_classes=C, depth=8, width=4).eval()
    x_train = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    context = ExplainContext(modality="image", model_kind="conv", n_classes=C, x_train=x_train)
    names = [n for n, _ in model.named_parameters()]
    x, targets = torch.rand(2, 1, 8, 8), torch.tensor([0, 2])
    values = METHODS["shap_deep"](model, context, background_size=8)(x, targets).values
    with torch.no_grad():
        gap = model(x)[torch.arange(2), targets] - model(x_train).mean(0)[targets]
    close(values.sum((1, 2, 3)), gap, tol=1e-4)
    assert [n for n, _ in model.named_parameters()] == names


class TwiceReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.act = nn.Linear(F, F), nn.Linear(F, C), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.b(self.act(self.a(x))))


def test_deep_shap_refuses_what_it_would_get_wrong():
    with pytest.raises(ValueError, match=r"^shap_deep cannot explain a model that calls a module twice: act$"):
        METHODS["shap_deep"](TwiceReLU(), ctx(X_TRAIN))(X, T)
    relu6 = nn.Sequential(nn.Linear(F, 4), nn.ReLU6(), nn.Linear(4, C))
    with pytest.raises(ValueError, match=r"^shap_deep has no DeepLIFT rule for ReLU6; use shap_gradient instead$"):
        METHODS["shap_deep"](relu6, ctx(X_TRAIN))
