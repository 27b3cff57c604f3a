"""The harness's text path: text models train (only their trainable parameters), a text run
records token ids, attributions and rationales per token, and what cannot read token ids is
refused in one line before any work."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from experiments.data import datasets
from experiments.data.tokenizer import tokenizer_spec
from experiments.errors import ConfigError
from experiments.run.config import ROOT, compose
from experiments.run.records import record_problem
from experiments.run.runner import forward_backward_seconds, run
from experiments.zoo.text_models import BertClassifier, LSTMClassifier
from experiments.zoo.training import check_train_config, train

KW = {k: tokenizer_spec()[k] for k in ("vocab_size", "pad_token_id", "mask_token_id", "special_token_ids")}
TINY_DATA = ["dataset.n_train=64", "dataset.n_test=16", "model.train.epochs=1"]
TINY_TEXT = ["method=random", "metrics=none", "n_samples=6", "batch_size=4", *TINY_DATA]


@pytest.fixture(scope="module")
def tiny_corpus():
    return datasets.sentiment_rationales(n_train=64, n_test=16, seed=0)


def test_training_updates_only_the_trainable_parameters(tiny_corpus, one_thread):
    torch.manual_seed(0)
    model = BertClassifier(2, **KW, train_layers=1)   # embeddings and the lower layer frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("encoder.embeddings") for n in frozen) and "head.weight" not in frozen
    cfg = OmegaConf.create({"optimizer": "adamw", "epochs": 1, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.01,
                            "label_smoothing": 0.1})
    train(model, tiny_corpus, cfg, seed=0, device=torch.device("cpu"))
    after = model.state_dict()
    for name in frozen:
        assert torch.equal(before[name], after[name]), name
    changed = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(before[n], after[n])}
    assert "head.weight" in changed and any(n.startswith("encoder.encoder.layer.1") for n in changed)


def test_an_unknown_optimizer_is_one_line():
    cfg = OmegaConf.create({"train": {"optimizer": "sgd", "epochs": 1, "batch_size": 4, "lr": 0.1, "weight_decay": 0}})
    with pytest.raises(ConfigError, match=r"^model.train.optimizer='sgd' is invalid; choose one of: adam, adamw$"):
        check_train_config(cfg)


@pytest.mark.parametrize("cls", [BertClassifier, LSTMClassifier])
def test_the_runtime_unit_of_a_text_model_is_a_pass_to_its_embeddings(cls, tiny_corpus):
    model = cls(2, **KW).eval()
    for p in model.parameters():
        p.requires_grad_(False)                      # as prepare() leaves a trained model
    seconds = forward_backward_seconds(model, tiny_corpus.x_test[:4], torch.tensor([0, 1, 0, 1]), 2,
                                       torch.device("cpu"))
    assert seconds > 0
    assert not model.embedding_layer()._forward_hooks   # its hook is gone again


def test_metrics_that_read_numbers_are_refused_for_text_before_any_work(run_dirs):
    cfg = compose(["model=bert_tiny", "metrics=quick", *TINY_TEXT[:1], *run_dirs])
    with pytest.raises(ConfigError, match=r"^metric 'faithfulness_correlation' does not support text data; it supports: "
                                          r"image, tabular \(for text choose metrics=text or metrics=none\)$"):
        run(cfg)
    cfg = compose(["model=lstm", "+metric@metrics.comp=comprehensiveness", "metrics=none", *run_dirs])
    with pytest.raises(ConfigError, match=r"^metric 'comp' does not support text data; it supports: tabular"):
        run(cfg)


def test_text_models_choose_the_text_metric_set_and_the_corpus():
    for model in ("bert", "bert_tiny", "lstm"):
        cfg = compose([f"model={model}"])
        assert cfg.model.modality == "text" and cfg.dataset._target_.endswith("sentiment_rationales")
        assert cfg.model.kind == ("recurrent" if model == "lstm" else "transformer")
        assert set(cfg.metrics) == set(compose(["metrics=text"]).metrics)
    assert list(compose(["model=bert_tiny", "metrics=quick"]).metrics) == ["faithfulness_correlation", "sparseness"]
    assert list(compose(["model=cnn"]).metrics) == ["faithfulness_correlation", "sparseness"]   # unchanged


@pytest.mark.parametrize("args, message", [
    (["model=cnn", "dataset=sentiment_rationales"],
     "model 'cnn' takes image data but dataset 'sentiment_rationales' is text; choose an image dataset"),
    (["model=bert_tiny", "dataset=digits"], "model 'bert_tiny' takes text data but dataset 'digits' is image; "
                                             "choose a text dataset"),
])
def test_a_model_on_data_of_another_modality_is_refused(args, message, run_dirs):
    cfg = compose([*args, "method=random", "metrics=none", "dataset.n_train=20", "dataset.n_test=10", *run_dirs])
    with pytest.raises(ConfigError, match=f"^{message}$"):
        run(cfg)


@pytest.mark.parametrize("model", ["bert_tiny", "lstm"])
def test_a_text_run_records_ids_attributions_and_rationales_per_token(model, run_dirs, one_thread):
    cfg = compose([f"model={model}", *TINY_TEXT, *run_dirs])
    result = run(cfg)
    assert record_problem(result.path) is None
    rec = json.loads((result.path / "record.json").read_text())
    assert rec["dataset"]["modality"] == "text" and rec["model"]["kind"] == cfg.model.kind
    assert 0.0 <= rec["model"]["test_accuracy"] <= 1.0 and rec["metrics"] == {}
    ds = datasets.sentiment_rationales(n_train=64, n_test=16, seed=0)
    arrays = np.load(result.path / "arrays.npz")
    assert set(arrays.files) == {"attributions", "targets", "sample", "inputs", "ground_truth"}
    assert arrays["attributions"].shape == (6, ds.x_test.shape[1]) and np.isfinite(arrays["attributions"]).all()
    assert arrays["inputs"].dtype == np.int64 and np.array_equal(arrays["inputs"], ds.x_test[:6].numpy())
    assert np.array_equal(arrays["ground_truth"], ds.ground_truth[:6].numpy())
    scores = pd.read_csv(result.path / "scores.csv")
    assert scores["label"].tolist() == ds.y_test[:6].tolist() and (scores["target"] == scores["label"]).all()


def test_a_tabular_run_records_what_it_recorded_before(run_dirs):
    result = run(compose(["model=mlp", "model.train.epochs=1", "method=saliency", "metrics=none", "n_samples=4",
                          *run_dirs]))
    assert set(np.load(result.path / "arrays.npz").files) == {"attributions", "targets", "sample"}


@pytest.mark.slow
def test_run_py_on_bert_tiny_end_to_end(tmp_path):
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1"}
    args = ["model=bert_tiny", "dataset=sentiment_rationales", *TINY_TEXT, "threads=1",
            f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "model bert_tiny: trained in" in proc.stdout
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if (p / "record.json").exists()]
    arrays = np.load(folder / "arrays.npz")
    assert arrays["attributions"].shape == arrays["inputs"].shape == arrays["ground_truth"].shape
    assert arrays["attributions"].shape[0] == 6
