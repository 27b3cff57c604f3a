"""Dense models in the harness: output ``identity`` always and only for them, their head settings
and their data's task checked before any work, methods that cannot explain them refused first,
the cache key holding the loss, and end to end (slow) the records of ``run.py model=unet
method=backtrace`` and ``run.py model=bbox_cnn method=ig``: targets, per-sample IoU and explained
value, predicted and true masks or boxes, against the same numbers computed by hand."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from baselines.dense_heads import dense_head
from experiments.errors import ConfigError
from experiments.run.config import ROOT, check_pairing, compose, load_config
from experiments.run.dense_cells import dense_samples
from experiments.run.runner import check_method
from experiments.zoo import dense_training
from experiments.zoo.training import model_cache_key, stable_hash, train_threads, weight_versions

SMALL_DATA = ["dataset.n_train=64", "dataset.n_test=16", "model.train.epochs=1"]


@pytest.mark.parametrize("overrides,message", [
    (["model=unet", "output=softmax"], "model 'unet' is a binary-segmentation model: every method explains its "
                                       "head's value, output=identity; got output='softmax'"),
    (["model=bbox_cnn", "output=logits"], "model 'bbox_cnn' is a bbox-regression model: every method explains its "
                                          "head's value, output=identity; got output='logits'"),
    (["model=cnn", "output=identity"], "output='identity' is the value of a dense model's head (binary-segmentation, "
                                       "bbox-regression); model 'cnn' is a classifier: choose one of: softmax, logits"),
    (["model=unet", "model.head.thresholding=1.5"], "model 'unet' head: thresholding=1.5 is invalid; choose a "
                                                    "probability in [0, 1)"),
    (["model=bbox_cnn", "model.head.coordinate=4"], "model 'bbox_cnn' head: box coordinate 4 is invalid; choose 0..3 "
                                                    "(x0, y0, x1, y1)"),
    (["model=bbox_cnn", "model.head.box_output=mean"], "model 'bbox_cnn' head: unknown box_output 'mean'; valid "
                                                       "choices: coordinate, sum"),
    (["model=unet", "+model.head.box_output=sum"], "model 'unet' head: unknown head setting(s) ['box_output'] for a "
                                                   "binary-segmentation model; valid: thresholding"),
], ids=["unet-softmax", "bbox-logits", "cnn-identity", "threshold", "coordinate", "box-output", "unknown"])
def test_outputs_and_head_settings_are_checked_before_any_work(overrides, message, run_dirs):
    with pytest.raises(ConfigError) as err:
        load_config(overrides + run_dirs)
    assert str(err.value) == message


def test_a_dense_model_explains_identity_by_default_and_a_classifier_softmax():
    assert compose(["model=unet"]).output == "identity" and compose(["model=keras_bbox"]).output == "identity"
    assert compose(["model=cnn"]).output == "softmax"
    cfg = compose(["+experiment=paper_bbox"])
    assert cfg.output == "identity" and cfg.model.head.box_output == "coordinate"


@pytest.mark.parametrize("model,dataset,task,message", [
    ("unet", "fashion_mnist", "classification", "model 'unet' is a binary-segmentation model but dataset "
     "'fashion_mnist' is labelled for classification; choose a dataset labelled for binary-segmentation"),
    ("bbox_cnn", "synthetic_segmentation", "binary-segmentation", "model 'bbox_cnn' is a bbox-regression model but "
     "dataset 'synthetic_segmentation' is labelled for binary-segmentation; choose a dataset labelled for "
     "bbox-regression"),
    ("cnn", "synthetic_boxes", "bbox-regression", "model 'cnn' is a classification model but dataset "
     "'synthetic_boxes' is labelled for bbox-regression; choose a dataset labelled for classification"),
])
def test_a_model_of_one_task_on_data_of_another_is_refused(model, dataset, task, message):
    with pytest.raises(ConfigError) as err:
        check_pairing(compose([f"model={model}"]).model, dataset, "image", task)
    assert str(err.value) == message


def test_a_method_that_cannot_explain_a_dense_head_is_refused_before_any_data_is_loaded():
    with pytest.raises(ConfigError, match=r"^method 'shap_deep' does not support the dense task "
                                          r"'binary-segmentation' \(model 'unet'\)$"):
        check_method(compose(["model=unet", "method=shap_deep"]))
    assert check_method(compose(["model=unet", "method=gradcam"])).name == "gradcam"


def test_the_loss_is_part_of_a_dense_models_cache_key(monkeypatch):
    def key(*overrides: str) -> str:
        cfg = compose(["model=unet", *overrides])
        return model_cache_key(cfg.model, cfg.dataset, 0)
    assert len({key(), key("model.train.loss=bce"), key("model.train.loss=dice")}) == 3
    # with no loss named, the key holds the task's default: a changed default is another model
    unnamed = key("~model.train.loss")
    monkeypatch.setitem(dense_training.LOSSES, "binary-segmentation", ("dice", "bce_dice", "bce"))
    assert key("~model.train.loss") != unnamed
    # a classifier's key is what it was before dense models had one: no task or loss in it
    cnn = compose(["model=cnn"])
    train = OmegaConf.to_container(cnn.model.train, resolve=True)
    train["threads"] = train_threads(cnn.model.train)
    assert model_cache_key(cnn.model, cnn.dataset, 0) == stable_hash({
        "net": OmegaConf.to_container(cnn.model.net, resolve=True), "train": train,
        "dataset": OmegaConf.to_container(cnn.dataset, resolve=True), "seed": 0, "device": "cpu",
        "versions": weight_versions(cnn.model)})


class Square(nn.Module):
    """Logits +4 inside the top-left 4x4 square, -4 elsewhere: p = sigmoid(4) there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((len(x), 1, 8, 8), -4.0)
        out[:, :, :4, :4] = 4.0
        return out + 0 * x[:, :1]


def test_dense_samples_are_the_iou_and_the_value_by_hand():
    from experiments.data.base import Dataset

    x = torch.rand(2, 1, 8, 8)
    truth = torch.zeros(2, 1, 8, 8)
    truth[0, 0, :4, :4] = 1          # the same square: IoU 1
    truth[1, 0, :4, :2] = 1          # half of it: IoU 8 / 16
    ds = Dataset("toy", "image", x, torch.zeros(2, dtype=torch.long), x, torch.zeros(2, dtype=torch.long), 1,
                 task="binary-segmentation", targets_train=truth, targets_test=truth)
    head = dense_head(Square(), "binary-segmentation", 0.5)
    out = dense_samples(head, ds, torch.tensor([0, 1]), x, {"thresholding": 0.5}, 8, torch.device("cpu"))
    np.testing.assert_allclose(out.columns["iou"], [1.0, 0.5])
    p = float(torch.sigmoid(torch.tensor(4.0)))
    np.testing.assert_allclose(out.columns["explained_value"], [16 * p, 16 * p], rtol=1e-6)
    assert out.targets.tolist() == [0, 0]
    np.testing.assert_array_equal(out.arrays["true"], truth.numpy())
    assert out.arrays["predicted"][:, 0, :4, :4].all() and out.arrays["predicted"].sum() == 32
    assert out.record["head"] == {"thresholding": 0.5} and "p > 0.5" in out.record["explains"]


# ---------------------------------------------------------------------------------------------
# end to end

def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "BACKTRACE_BENCH_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=1800)


def _one_record(runs: Path) -> tuple[dict, pd.DataFrame, dict]:
    (folder,) = [p for p in runs.iterdir() if (p / "record.json").exists()]
    with np.load(folder / "arrays.npz") as a:
        arrays = {k: a[k] for k in a}
    return json.loads((folder / "record.json").read_text()), pd.read_csv(folder / "scores.csv"), arrays


def _test_data(record: dict):
    """The record's test data, rebuilt from its own dataset config."""
    return instantiate(OmegaConf.create(record["config"]["dataset"]))


@pytest.mark.slow
def test_run_unet_backtrace_records_the_iou_and_the_value_it_explained(tmp_path):
    proc = _run_cli("model=unet", "method=backtrace", "n_samples=6", "metrics=quick", *SMALL_DATA,
                    f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record, scores, arrays = _one_record(tmp_path / "runs")
    assert record["output"] == "identity" and record["model"]["test_score_name"] == "test IoU"
    assert record["dense"]["head"] == {"thresholding": 0.5} and record["saturated_samples"] is None
    ds = _test_data(record)
    np.testing.assert_array_equal(arrays["true"], ds.targets_test[scores["sample"].to_numpy()].numpy())
    pred, true = arrays["predicted"].reshape(6, -1) > 0, arrays["true"].reshape(6, -1) > 0
    union = (pred | true).sum(1)
    hand = np.where(union > 0, (pred & true).sum(1) / np.maximum(union, 1), 1.0)
    np.testing.assert_allclose(scores["iou"], hand)
    # S sums p over the predicted pixels, each above 0.5: between half their count and their count
    count = pred.sum(1)
    assert (scores["explained_value"] <= count + 1e-4).all() and (scores["explained_value"] >= 0.5 * count).all()
    assert (scores["target"] == 0).all() and "prediction" not in scores
    assert arrays["attributions"].shape == (6, 1, 32, 32) and "conservation" in scores


@pytest.mark.slow
def test_run_bbox_cnn_ig_explains_the_x0_coordinate(tmp_path):
    proc = _run_cli("model=bbox_cnn", "method=ig", "method.n_steps=8", "n_samples=6", "metrics=quick", *SMALL_DATA,
                    f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record, scores, arrays = _one_record(tmp_path / "runs")
    assert record["model"]["test_score_name"] == "test mean box IoU" and record["model"]["test_accuracy"] is None
    assert record["dense"]["head"] == {"box_output": "coordinate", "coordinate": 0}
    ds = _test_data(record)
    np.testing.assert_array_equal(arrays["true"], ds.targets_test[scores["sample"].to_numpy()].numpy())
    # the explained value is the predicted x0, the target coordinate 0
    np.testing.assert_allclose(scores["explained_value"], arrays["predicted"][:, 0], rtol=1e-6)
    assert (scores["target"] == 0).all()
    p, t = arrays["predicted"].astype(np.float64), arrays["true"].astype(np.float64)
    inter = (np.clip(np.minimum(p[:, 2], t[:, 2]) - np.maximum(p[:, 0], t[:, 0]), 0, None)
             * np.clip(np.minimum(p[:, 3], t[:, 3]) - np.maximum(p[:, 1], t[:, 1]), 0, None))
    def area(b: np.ndarray) -> np.ndarray:
        return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    np.testing.assert_allclose(scores["iou"], inter / (area(p) + area(t) - inter), rtol=1e-6, atol=1e-12)
    assert arrays["attributions"].shape == (6, 1, 32, 32)
