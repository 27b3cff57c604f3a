"""Keras models in the harness: the torch-facing wrapper, its gradients, training and the cache,
the methods on the Keras and torch versions of one network, and a run end to end."""
from __future__ import annotations

import copy
import os

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow", reason="tensorflow is not installed (make test installs the 'tf' extra)")
keras = pytest.importorskip("keras", reason="keras is not installed (make test installs the 'tf' extra)")

from baselines.backtrace_method import BacktraceContrastiveMethod, BacktraceMethod  # noqa: E402
from baselines.base import ExplainContext, IncompatibleMethodError  # noqa: E402
from baselines.captum_methods import IntegratedGradientsMethod, SaliencyMethod  # noqa: E402
from baselines.gradcam import GradCAMMethod  # noqa: E402
from baselines.shap_methods import ShapDeepMethod  # noqa: E402
from tests.helpers.dataset_helpers import toy_dataset  # noqa: E402
from experiments.run.config import compose  # noqa: E402
from experiments.run.runner import run  # noqa: E402
from experiments.zoo.keras_models import keras_cnn, keras_mlp  # noqa: E402
from experiments.zoo.models import MLP, SmallCNN  # noqa: E402
from experiments.zoo.training import load_or_train  # noqa: E402


def _t(v) -> torch.Tensor:
    return torch.from_numpy(np.array(keras.ops.convert_to_numpy(v), dtype=np.float32))


def _twins(seed: int = 0) -> tuple:
    """keras_cnn and the zoo's SmallCNN on 8x8 single-channel images, with the same weights."""
    torch.manual_seed(seed)
    km = keras_cnn(in_channels=1, num_classes=4, input_size=(8, 8), channels=(3, 5), hidden=6)
    tm = SmallCNN(in_channels=1, num_classes=4, input_size=(8, 8), channels=(3, 5), hidden=6).eval()
    c1, c2, d1, d2 = [layer for layer in km.keras_model.layers if layer.weights]
    with torch.no_grad():
        for conv, k in ((tm.features[0], c1), (tm.features[3], c2)):
            conv.weight.copy_(_t(k.kernel).permute(3, 2, 0, 1))
            conv.bias.copy_(_t(k.bias))
        rows = torch.arange(2 * 2 * 5).reshape(2, 2, 5).permute(2, 0, 1).reshape(-1)   # Keras flattens HWC
        tm.classifier[1].weight.copy_(_t(d1.kernel)[rows].T)
        tm.classifier[1].bias.copy_(_t(d1.bias))
        tm.classifier[3].weight.copy_(_t(d2.kernel).T)
        tm.classifier[3].bias.copy_(_t(d2.bias))
    return km, tm


def _ctx(modality: str = "image", kind: str = "conv", n_classes: int = 4) -> ExplainContext:
    return ExplainContext(modality=modality, model_kind=kind, n_classes=n_classes, seed=0)


X = torch.from_numpy(np.random.default_rng(0).normal(size=(5, 1, 8, 8)).astype("float32"))
T = torch.tensor([0, 1, 2, 3, 1])


def test_wrapper_computes_the_keras_logits_and_the_tape_gradient():
    km, tm = _twins()
    with torch.no_grad():
        torch.testing.assert_close(km(X), tm(X), rtol=1e-4, atol=1e-5)
    xk = tf.constant(X.permute(0, 2, 3, 1).numpy())
    with tf.GradientTape() as tape:
        tape.watch(xk)
        score = tf.reduce_sum(tf.gather(km.keras_model(xk), T.numpy()[:, None], batch_dims=1))
    expected = torch.from_numpy(tape.gradient(score, xk).numpy()).permute(0, 3, 1, 2)
    x = X.clone().requires_grad_(True)
    km(x).gather(1, T[:, None]).sum().backward()
    torch.testing.assert_close(x.grad, expected)
    assert x.grad.abs().max() > 0


def test_methods_give_the_same_attributions_on_the_keras_and_torch_twins():
    km, tm = _twins()
    for cls, tol in ((BacktraceMethod, 1e-5), (SaliencyMethod, 1e-4), (IntegratedGradientsMethod, 1e-4),
                     (GradCAMMethod, 1e-4)):
        a = cls(km, _ctx())(X, T).values
        b = cls(tm, _ctx())(X, T).values
        assert a.shape == b.shape and b.abs().max() > 0
        assert (a - b).abs().max() <= tol * b.abs().max(), cls.name
    ea, eb = BacktraceContrastiveMethod(km, _ctx()), BacktraceContrastiveMethod(tm, _ctx())
    ea(X, T), eb(X, T)
    for key in ("positive", "negative"):
        torch.testing.assert_close(ea.last_extras[key], eb.last_extras[key], rtol=1e-5, atol=1e-5)


def test_deep_shap_is_refused_for_keras_in_one_line():
    km, _ = _twins()
    with pytest.raises(IncompatibleMethodError, match="'shap_deep' does not support keras models; it supports: torch"):
        ShapDeepMethod(km, _ctx())
    with pytest.raises(ValueError, match="'nope' is not a layer of the Keras model"):
        GradCAMMethod(km, _ctx(), layer="nope")


def test_layer_reset_is_seeded_and_copies_are_independent():
    km, _ = _twins()
    twin = copy.deepcopy(km)
    with torch.no_grad():
        torch.testing.assert_close(twin(X), km(X))
    before = [w.numpy().copy() for w in km.keras_model.weights]
    torch.manual_seed(5)
    twin.layers[-1].reset_parameters()
    first = twin.keras_model.layers[-1].kernel.numpy().copy()
    torch.manual_seed(5)
    twin.layers[-1].reset_parameters()
    np.testing.assert_array_equal(twin.keras_model.layers[-1].kernel.numpy(), first)
    assert not np.allclose(first, before[-2])
    for w, b in zip(km.keras_model.weights, before):            # the original is untouched
        np.testing.assert_array_equal(w.numpy(), b)


MODEL = OmegaConf.create({
    "name": "keras_mlp", "kind": "mlp", "modality": "tabular", "framework": "keras", "pretrained": False,
    "net": {"_target_": "experiments.zoo.keras_models.keras_mlp", "hidden": [8]},
    "train": {"epochs": 3, "batch_size": 32, "lr": 0.01, "weight_decay": 0.0},
})
DATA = OmegaConf.create({"_target_": "toy"})


def test_keras_training_is_deterministic_cached_and_reloaded(tmp_path):
    ds = toy_dataset()
    first = load_or_train(MODEL, DATA, ds, 0, tmp_path / "a", torch.device("cpu"))
    assert not first.from_cache and first.accuracy > 0.8 and first.cache_path.is_file()
    again = load_or_train(MODEL, DATA, ds, 0, tmp_path / "b", torch.device("cpu"))      # trained afresh
    for w1, w2 in zip(first.model.keras_model.weights, again.model.keras_model.weights):
        np.testing.assert_array_equal(w1.numpy(), w2.numpy())
    loaded = load_or_train(MODEL, DATA, ds, 0, tmp_path / "a", torch.device("cpu"))
    assert loaded.from_cache and loaded.accuracy == first.accuracy
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ds.x_test), first.model(ds.x_test))
    other = load_or_train(MODEL, DATA, ds, 1, tmp_path / "a", torch.device("cpu"))
    assert not np.allclose(other.model.keras_model.weights[0].numpy(), first.model.keras_model.weights[0].numpy())


@pytest.mark.slow
@pytest.mark.parametrize("model,method", [("keras_cnn", "backtrace"), ("keras_mlp", "backtrace_contrastive")])
def test_run_on_a_keras_model_end_to_end(model, method, run_dirs):
    cfg = compose([f"model={model}", "model.train.epochs=1", f"method={method}", "metrics=quick", "n_samples=4",
                   "batch_size=4"] + run_dirs)
    record = run(cfg).record
    assert record["model"]["name"] == model and record["model"]["test_accuracy"] > 0.5
    assert all(np.isfinite(m["mean"]) for m in record["metrics"].values())


def test_keras_builders_follow_the_seed():
    torch.manual_seed(3)
    a = keras_mlp(in_features=4, num_classes=2, hidden=[5])
    torch.manual_seed(3)
    b = keras_mlp(in_features=4, num_classes=2, hidden=[5])
    for w1, w2 in zip(a.keras_model.weights, b.keras_model.weights):
        np.testing.assert_array_equal(w1.numpy(), w2.numpy())


def test_the_torch_harness_does_not_import_tensorflow():
    """quantus would import TensorFlow whenever it is installed (metrics.quantus_metrics hides it)."""
    import subprocess
    import sys

    from experiments.run.config import ROOT

    code = ("import sys, metrics.quantus_metrics, experiments.run.runner, baselines; "
            "from metrics.quantus_metrics import FaithfulnessCorrelation; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("model,method", [("keras_cnn", "backtrace"), ("keras_mlp", "backtrace_contrastive")])
def test_backtrace_scores_the_keras_model_and_its_torch_version_alike(model, method, run_dirs):
    """`model=<keras>_torch` is the same trained network in torch (the zoo's SmallCNN/MLP with the
    Keras weights, loaded from the Keras model's cache entry): same accuracy, same relevance and
    the same per-sample metric scores through the harness."""
    common = ["model.train.epochs=1", f"method={method}", "metrics=quick", "n_samples=6", "batch_size=6"]
    keras_run = run(compose([f"model={model}", *common] + run_dirs))
    torch_run = run(compose([f"model={model}_torch", *common] + run_dirs))
    kr, tr = keras_run.record, torch_run.record
    assert tr["model"]["name"] == f"{model}_torch" and kr["model"]["name"] == model
    assert tr["model"]["test_accuracy"] == kr["model"]["test_accuracy"] > 0.3
    ka, ta = np.load(keras_run.path / "arrays.npz"), np.load(torch_run.path / "arrays.npz")
    np.testing.assert_array_equal(ka["sample"], ta["sample"])
    assert np.abs(ta["attributions"]).max() > 0
    np.testing.assert_allclose(ka["attributions"], ta["attributions"], rtol=1e-5,
                               atol=1e-5 * np.abs(ta["attributions"]).max())
    ks, ts = pd.read_csv(keras_run.path / "scores.csv"), pd.read_csv(torch_run.path / "scores.csv")
    for metric in kr["metrics"]:
        assert np.isfinite(ts[metric]).all()
        # scores lie in [-1, 1]; float32 forward passes of the two frameworks differ by ~1e-6
        np.testing.assert_allclose(ks[metric], ts[metric], rtol=1e-5, atol=1e-5, err_msg=metric)


def test_the_torch_version_loads_the_cached_keras_model_and_does_not_retrain(tmp_path):
    ds = toy_dataset()
    keras_side = load_or_train(MODEL, DATA, ds, 0, tmp_path, torch.device("cpu"))
    copy_cfg = OmegaConf.merge(MODEL, {"name": "keras_mlp_torch", "torch_copy_of": "keras_mlp", "framework": "torch"})
    torch_side = load_or_train(copy_cfg, DATA, ds, 0, tmp_path, torch.device("cpu"))
    assert torch_side.from_cache and torch_side.cache_path == keras_side.cache_path
    assert isinstance(torch_side.model, MLP) and torch_side.accuracy == keras_side.accuracy
    with torch.no_grad():
        torch.testing.assert_close(torch_side.model(ds.x_test), keras_side.model(ds.x_test), rtol=1e-5, atol=1e-6)
