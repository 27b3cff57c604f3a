"""Every method behind the common interface, on a tiny MLP (6 features, 3 classes) and a tiny CNN
(1x8x8 images, 3 classes): shapes, finiteness, signs, targets, seeds, batch invariance,
refusals, and that each ``configs/method`` file builds its class."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from torch import nn

from baselines import METHODS, ExplainContext, Explainer, IncompatibleMethodError, reduce_channels
from baselines.vocabulary import CHANNEL_REDUCTIONS
from experiments.errors import ConfigError
from experiments.run.config import method_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "method"
N_CLASSES = 3

# Small budgets: the tests check behaviour, not attribution quality.
SMALL: dict[str, dict[str, Any]] = {
    "ig": {"n_steps": 8},
    "smoothgrad": {"nt_samples": 4},
    "shap_kernel": {"nsamples": 40, "background_size": 4},
    "shap_partition": {"max_evals": 40, "background_size": 8},
    "shap_gradient": {"nsamples": 16, "background_size": 8},
    "shap_deep": {"background_size": 6},
    "lime": {"num_samples": 60},
}
# 8x8 images are too small for lime's default quickshift; felzenszwalb at a fine scale gives
# a dozen or so superpixels.
LIME_IMAGE = {"segmentation": "felzenszwalb", "segmentation_params": {"scale": 1.0, "min_size": 3}}
TARGET_FREE = {"random", "sobel"}  # controls: ignore the target by design


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, N_CLASSES)).eval()


def tiny_cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, N_CLASSES),
    ).eval()


def data(modality: str, n: int = 30) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    if modality == "tabular":
        return torch.randn(n, 6, generator=g)
    # smooth blobs rather than white noise, so that segmenters find real superpixels
    x = torch.rand(n, 1, 4, 4, generator=g)
    return nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)


SETUPS = {
    "tabular": ("mlp", tiny_mlp),
    "image": ("conv", tiny_cnn),
}


def context(modality: str, seed: int = 0) -> ExplainContext:
    kind, _ = SETUPS[modality]
    return ExplainContext(modality=modality, model_kind=kind, n_classes=N_CLASSES,
                          x_train=data(modality), seed=seed)


def build(name: str, modality: str, seed: int = 0, model: nn.Module | None = None, **over: Any) -> Explainer:
    """The method as the harness builds it: from its yaml, through hydra.utils.instantiate."""
    params = {**SMALL.get(name, {}), **(LIME_IMAGE if (name == "lime" and modality == "image") else {}), **over}
    output = params.pop("output", None)  # any value, even one the config would refuse: the method must
    cfg = method_config(name, "logits" if name == "shap_deep" else "softmax", **params)
    if output is not None:
        cfg = OmegaConf.merge(cfg, {"output": output})
    model = model if model is not None else SETUPS[modality][1]()
    return instantiate(cfg, model=model, context=context(modality, seed))


def pairs() -> list[tuple[str, str]]:
    out = []
    for name, cls in METHODS.items():
        for modality, (kind, _) in SETUPS.items():
            if modality in cls.modalities and kind in cls.model_kinds:
                out.append((name, modality))
    return out


def params(selected: list[tuple[str, str]]) -> list:
    """shap's partition explainer compiles its numba kernels on first use (~20 s here)."""
    return [pytest.param(*p, marks=pytest.mark.slow) if p[0] == "shap_partition" else p for p in selected]


PAIRS = pairs()
TARGETS = torch.tensor([0, 1, 2])


def explain(method: Explainer, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return method(x, targets).values


# -- configs -------------------------------------------------------------------------------


def test_every_method_has_a_config_and_back():
    configs = {p.stem: OmegaConf.load(p) for p in CONFIG_DIR.glob("*.yaml")}
    assert set(METHODS) <= set(configs)
    # a config beyond the methods' own is a variant of one (shap_partition_tokens: shap_partition's settings)
    for name in set(configs) - set(METHODS):
        assert get_class(configs[name]._target_) in METHODS.values(), name


@pytest.mark.parametrize("name", sorted(n for n, c in METHODS.items() if {"tabular", "image"} & set(c.modalities)))
def test_config_instantiates_its_class(name):  # text-only methods: tests/baselines/test_text_methods.py
    cfg = method_config(name, "logits" if name == "shap_deep" else "softmax")
    cls = get_class(cfg._target_)
    assert cls is METHODS[name] and cls.name == name
    modality = "image" if "image" in cls.modalities else "tabular"
    method = instantiate(cfg, model=SETUPS[modality][1](), context=context(modality))
    assert type(method) is cls


# -- shape, finiteness, signs ----------------------------------------------------------------


@pytest.mark.parametrize("name,modality", params(PAIRS))
def test_shape_finite_and_sign(name, modality):
    method = build(name, modality)
    x = data(modality, 3)
    result = method(x, TARGETS)
    expected = (3, 1, 8, 8) if (method.pixel_map and modality == "image") else tuple(x.shape)
    assert tuple(result.values.shape) == expected
    assert torch.isfinite(result.values).all()
    assert result.values.abs().sum() > 0
    assert result.seconds > 0
    if not method.signed:  # one sign per sample (non-negative here: the softmax is positive)
        assert (result.values >= 0).all()


def test_signs_are_declared_honestly():
    unsigned = {name for name, cls in METHODS.items() if not cls.signed}
    assert unsigned == {"saliency", "gradcam", "sobel", "backtrace", "backtrace_contrastive",
                        "attention_rollout", "attention_last", "rarity"}
    assert build("backtrace_contrastive", "image", contrastive_output="difference").signed


@pytest.mark.parametrize("modality", ["tabular", "image"])
def test_default_backtrace_on_logits_has_one_sign_per_sample_and_is_scored_as_magnitude(modality):
    """On logits a sample's default-mode map takes the sign of its starting logit at every
    feature: per sample one sign, not a signed explanation, so metrics receive |map|."""
    from baselines.base import for_scoring, sign_profile

    method = build("backtrace", modality, output="logits")
    x = data(modality, 6)
    values = method(x, torch.tensor([0, 1, 2, 0, 1, 2])).values
    profile = sign_profile(values)
    assert profile["mixed_sign_samples"] == 0.0
    logits = method.model(x).gather(1, torch.tensor([0, 1, 2, 0, 1, 2])[:, None]).flatten()
    flat = values.reshape(6, -1)
    for i in range(6):  # the map's sign is the starting logit's sign
        assert torch.all(flat[i] * torch.sign(logits[i]) >= 0)
    assert torch.equal(for_scoring(values, method.signed, "sum"), reduce_channels(values, "sum").abs())


def test_sign_profile_counts_samples_by_sign():
    from baselines.base import sign_profile

    a = torch.tensor([[1.0, -1.0], [2.0, 0.0], [-1.0, -3.0], [0.0, 0.0]])
    assert sign_profile(a) == {"mixed_sign_samples": 0.25, "non_negative_samples": 0.5,
                               "non_positive_samples": 0.5, "negative_entries": 0.375}


def test_logit_only_and_softmax_only_methods_refuse_the_other_output():
    with pytest.raises(IncompatibleMethodError, match="'backtrace_contrastive' cannot explain output 'logits'"):
        METHODS["backtrace_contrastive"].check_compatible("tabular", "mlp", "logits")
    with pytest.raises(IncompatibleMethodError, match="'shap_deep' cannot explain output 'softmax'.*valid choices: logits"):
        METHODS["shap_deep"].check_compatible("image", "conv", "softmax")
    with pytest.raises(InstantiationException) as info:
        build("backtrace_contrastive", "tabular", output="logits")
    assert isinstance(info.value.__cause__, IncompatibleMethodError)


@pytest.mark.parametrize("how", CHANNEL_REDUCTIONS)
def test_channel_reduction_leaves_pixel_maps_unchanged(how):
    values = build("gradcam", "image")(data("image", 3), TARGETS).values
    assert values.shape == (3, 1, 8, 8)
    assert torch.equal(reduce_channels(values, how), values)


# -- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name,modality", params([p for p in PAIRS if p[0] not in TARGET_FREE]))
def test_target_changes_the_attribution(name, modality):
    x = data(modality, 3)
    a = explain(build(name, modality, seed=5), x, torch.tensor([0, 0, 0]))
    b = explain(build(name, modality, seed=5), x, torch.tensor([1, 1, 1]))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name,modality", [p for p in PAIRS if p[0] in TARGET_FREE])
def test_controls_ignore_the_target(name, modality):
    x = data(modality, 3)
    a = explain(build(name, modality, seed=5), x, torch.tensor([0, 0, 0]))
    b = explain(build(name, modality, seed=5), x, torch.tensor([1, 2, 1]))
    assert torch.equal(a, b)


def test_bad_targets_are_refused():
    method = build("saliency", "tabular")
    x = data("tabular", 3)
    with pytest.raises(ValueError, match=r"^target class 3 out of range; valid classes are 0\.\.2$"):
        method(x, torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match=r"^targets must have shape \(3,\), one class per sample; got \(2,\)$"):
        method(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="targets must be integer class indices"):
        method(x, torch.tensor([0.0, 1.0, 1.0]))


# -- seeds and determinism ---------------------------------------------------------------------


@pytest.mark.parametrize("name,modality", params(PAIRS))
def test_same_config_same_attributions(name, modality):
    x = data(modality, 3)
    first, second = build(name, modality, seed=3), build(name, modality, seed=3)
    for _ in range(2):  # and the same sequence of batches
        assert torch.equal(explain(first, x, TARGETS), explain(second, x, TARGETS))


@pytest.mark.parametrize("name,modality", [p for p in PAIRS if not METHODS[p[0]].deterministic])
def test_seed_changes_stochastic_attributions(name, modality):
    x = data(modality, 3)
    a = explain(build(name, modality, seed=3), x, TARGETS)
    b = explain(build(name, modality, seed=4), x, TARGETS)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("modality", ["tabular", "image"])
def test_lime_explains_a_sample_the_same_whatever_came_before_it(modality):
    """lime draws from one generator; it is reseeded per sample from the run seed and the sample,
    so a sample's map is the same alone, in a batch, after other samples, or in another order
    (a table's first samples then score as in the full table)."""
    method = build("lime", modality, seed=3)
    x = data(modality, 3)
    together = explain(method, x, TARGETS)
    explain(method, data(modality, 5)[3:], torch.tensor([2, 0]))             # other samples first
    alone = explain(method, x[1:2], TARGETS[1:2])
    reordered = explain(method, x[[2, 0, 1]], TARGETS[[2, 0, 1]])
    assert torch.equal(alone[0], together[1])
    assert torch.equal(reordered, together[[2, 0, 1]])


@pytest.mark.parametrize("name", ["smoothgrad", "shap_kernel", "shap_gradient", "lime", "random"])
def test_stochastic_methods_leave_global_generators_alone(name):
    modality = "tabular"
    method = build(name, modality, seed=3)
    np.random.seed(123)
    torch.manual_seed(123)
    expected_np, expected_torch = np.random.rand(), torch.rand(1)
    np.random.seed(123)
    torch.manual_seed(123)
    method(data(modality, 2), torch.tensor([0, 1]))
    assert np.random.rand() == expected_np
    assert torch.equal(torch.rand(1), expected_torch)


@pytest.mark.parametrize("name,modality", params([p for p in PAIRS if METHODS[p[0]].deterministic]))
def test_batch_equals_single_samples(name, modality):
    method = build(name, modality)
    x = data(modality, 3)
    batch = explain(method, x, TARGETS)
    single = torch.cat([explain(method, x[i : i + 1], TARGETS[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-6)


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name,modality,kind,message", [
    ("gradcam", "image", "mlp", "method 'gradcam' does not support 'mlp' models; it supports: conv"),
    ("gradcam", "tabular", "mlp", "method 'gradcam' does not support 'tabular' data; it supports: image"),
    ("sobel", "tabular", "mlp", "method 'sobel' does not support 'tabular' data; it supports: image"),
    ("shap_kernel", "image", "conv", "method 'shap_kernel' does not support 'image' data; it supports: tabular"),
    ("shap_deep", "text", "transformer",
     "method 'shap_deep' does not support 'text' data; it supports: tabular, image"),
    ("gradcam", "text", "transformer", "method 'gradcam' does not support 'text' data; it supports: image"),
    ("attention_rollout", "image", "conv",
     "method 'attention_rollout' does not support 'image' data; it supports: text"),
])
def test_unsupported_pairs_are_refused_before_running(name, modality, kind, message):
    cls = METHODS[name]
    with pytest.raises(IncompatibleMethodError) as err:
        cls.check_compatible(modality, kind)
    assert str(err.value) == message
    ctx = ExplainContext(modality=modality, model_kind=kind, n_classes=N_CLASSES)
    with pytest.raises(IncompatibleMethodError):
        cls(tiny_mlp(), ctx)


@pytest.mark.parametrize("name,over,message", [
    ("ig", {"baseline": "noise"}, "unknown ig baseline 'noise'; valid choices: zero, mean"),
    ("lime", {"segmentation": "watershed"},
     "unknown lime segmentation 'watershed'; valid choices: quickshift, slic, felzenszwalb"),
    ("shap_kernel", {"background": "median"}, "unknown shap_kernel background 'median'; valid choices: kmeans, sample, full"),
    ("shap_deep", {"output": "softmax"},
     "method 'shap_deep' cannot explain output 'softmax' (shap's DeepExplainer has no correct softmax rule); "
     "valid choices: logits"),
    ("backtrace_contrastive", {"contrastive_output": "negative"},
     "unknown contrastive_output 'negative'; valid choices: positive, difference"),
    ("gradcam", {"layer": "head"}, "gradcam layer 'head' is not a module of the model; conv layers: 0, 3"),
])
def test_bad_parameters_are_one_clear_line(name, over, message):
    modality = "image" if name == "gradcam" else "tabular"
    with pytest.raises(InstantiationException) as err:  # hydra wraps what the constructor raised
        build(name, modality, **over)
    assert isinstance(err.value.__cause__, ValueError)
    assert str(err.value.__cause__) == message


def test_an_unknown_output_is_refused_by_the_config_and_by_the_method():
    with pytest.raises(ConfigError, match=r"^unknown output 'probs'; valid choices: softmax, logits, identity$"):
        method_config("saliency", "probs")
    with pytest.raises(IncompatibleMethodError) as err:
        METHODS["saliency"](tiny_mlp(), context("tabular"), output="probs")
    assert str(err.value) == "method 'saliency' cannot explain output 'probs'; valid choices: softmax, logits"


def test_background_methods_need_training_inputs():
    ctx = ExplainContext(modality="tabular", model_kind="mlp", n_classes=N_CLASSES, x_train=None)
    with pytest.raises(ValueError, match=r"^method 'shap_kernel' needs training inputs for its background"):
        METHODS["shap_kernel"](tiny_mlp(), ctx)


@pytest.mark.parametrize("hide_color", [0.0, 0.25, None])
def test_lime_hide_value_reaches_the_perturbed_images(hide_color):
    """Every image lime sends to the model has its hidden superpixels at ``hide_color`` (the
    configured absent value); ``null`` is lime's default, each superpixel's own mean colour."""
    method = build("lime", "image", num_samples=40, hide_color=hide_color)
    assert method.declared()["absent"] == {"hide_color": "superpixel mean" if hide_color is None else hide_color}
    x = 0.5 + 0.5 * torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # no pixel below 0.5
    seen: list[np.ndarray] = []
    predict = method.predict_images
    method.predict_images = lambda images: (seen.append(np.asarray(images)), predict(images))[1]
    method(x, torch.tensor([1]))
    images = np.concatenate(seen)[..., 0]                       # lime's (n, H, W, 3) grey copies
    changed = images != x[0, 0].numpy()[None].astype(images.dtype)
    assert changed.any()
    if hide_color is None:
        assert images.min() >= 0.5                             # means of pixels in [0.5, 1]
    else:
        np.testing.assert_allclose(images[changed], hide_color)
