"""Training gives the same weights, bit for bit, whatever the run's thread count: training runs on
the fixed ``model.train.threads`` with deterministic algorithms, and the cache key holds everything
that decides the weights."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from experiments.errors import ConfigError
from experiments.run.config import ROOT
from experiments.zoo.training import (TRAIN_THREADS, _load, check_train_config, deterministic_torch, load_or_train,
                                  model_cache_key, state_blob, train_threads)
from tests.helpers.dataset_helpers import toy_dataset

MODEL = OmegaConf.create({
    "name": "mlp", "kind": "mlp", "modality": "tabular", "pretrained": False,
    "net": {"_target_": "experiments.zoo.models.MLP", "hidden": [8]},
    "train": {"epochs": 3, "batch_size": 32, "lr": 0.01, "weight_decay": 0.0},
})
DATA = OmegaConf.create({"_target_": "toy"})


def _train_in_a_new_process(model: str, threads: int, tmp_path: Path) -> Path:
    """``run.py model=MODEL threads=THREADS`` in its own process, in the environment a launcher
    gives a worker of that many cores (OpenMP's and TensorFlow's thread counts: TensorFlow
    otherwise takes the machine's core count, whatever ``threads`` says); the cache file it trained."""
    cache = tmp_path / f"cache-{model}-{threads}"
    env = {**os.environ, "CI": "true", "BACKTRACE_BENCH_NO_PROGRESS": "1", "OMP_NUM_THREADS": str(threads),
           "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), f"model={model}", "method=random", "metrics=none", "n_samples=2",
         f"threads={threads}", f"cache_dir={cache}", f"results_dir={tmp_path / f'runs-{model}-{threads}'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"model {model}: trained in" in proc.stdout
    (path,) = (cache / "models").glob(f"{model}-*.pt")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "cnn", "lstm", "keras_cnn"])
def test_weights_do_not_depend_on_the_runs_threads(model, tmp_path):
    if model.startswith("keras"):
        pytest.importorskip("tensorflow", reason="tensorflow is not installed (make test installs the 'tf' extra)")
    one, two = (_train_in_a_new_process(model, threads, tmp_path) for threads in (1, 2))
    assert one.name == two.name                          # one cache key: threads is not part of it
    (meta1, state1), (meta2, state2) = _load(one), _load(two)
    assert list(state1) == list(state2)
    for name in state1:
        assert torch.equal(state1[name], state2[name]), name
    assert meta1["sha256"] == meta2["sha256"] and meta1["accuracy"] == meta2["accuracy"]


def test_training_restores_the_callers_threads_and_settings(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with deterministic_torch(1, torch.device("cpu")):
            assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
        trained = load_or_train(MODEL, DATA, toy_dataset(), 0, tmp_path, torch.device("cpu"))
        assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before)
    assert not trained.from_cache


def test_weights_hash_is_the_cache_files_and_survives_reloading(tmp_path):
    first = load_or_train(MODEL, DATA, toy_dataset(), 0, tmp_path, torch.device("cpu"))
    raw = first.cache_path.read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert first.weights_sha256 == hashlib.sha256(raw[8 + header:]).hexdigest()
    again = load_or_train(MODEL, DATA, toy_dataset(), 0, tmp_path, torch.device("cpu"))
    assert again.from_cache and again.weights_sha256 == first.weights_sha256
    other = load_or_train(MODEL, DATA, toy_dataset(), 1, tmp_path, torch.device("cpu"))
    assert other.weights_sha256 != first.weights_sha256


def test_a_pretrained_model_has_its_weights_hash(tmp_path):
    pretrained = OmegaConf.merge(MODEL, {"pretrained": True, "train": None})
    first = load_or_train(pretrained, DATA, toy_dataset(), 0, tmp_path, torch.device("cpu"))
    again = load_or_train(pretrained, DATA, toy_dataset(), 0, tmp_path, torch.device("cpu"))
    assert first.cache_path is None and first.weights_sha256 == again.weights_sha256
    assert first.weights_sha256 == hashlib.sha256(state_blob(first.model.state_dict())).hexdigest()


def test_cache_key_holds_training_threads_device_and_versions(monkeypatch):
    base = model_cache_key(MODEL, DATA, 0)
    # the default thread count and the same count written out are one model
    assert train_threads(MODEL.train) == TRAIN_THREADS
    assert base == model_cache_key(OmegaConf.merge(MODEL, {"train": {"threads": TRAIN_THREADS}}), DATA, 0)
    assert base != model_cache_key(OmegaConf.merge(MODEL, {"train": {"threads": TRAIN_THREADS + 1}}), DATA, 0)
    assert base != model_cache_key(MODEL, DATA, 0, torch.device("cuda"))
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert base != model_cache_key(MODEL, DATA, 0)


@pytest.mark.parametrize("value", [0, -1, 1.5, "two", True])
def test_bad_training_threads_are_one_line(value):
    bad = OmegaConf.merge(MODEL, {"train": {"threads": value}})
    with pytest.raises(ConfigError, match=r"^model\.train\.threads=.* is invalid; choose a positive integer$"):
        check_train_config(bad)
    with pytest.raises(ConfigError, match=r"model\.train\.threads"):
        model_cache_key(bad, DATA, 0)


def test_keras_training_refuses_a_tensorflow_started_on_other_threads():
    tf = pytest.importorskip("tensorflow", reason="tensorflow is not installed (make test installs the 'tf' extra)")
    from experiments.zoo.keras_models import tensorflow_threads

    tf.constant(1.0) + 1.0                      # TensorFlow has started (on 1 thread: tests/conftest.py)
    assert tf.config.threading.get_intra_op_parallelism_threads() in (0, 1)
    tensorflow_threads(1, required=True)        # the count it runs on: fine
    tensorflow_threads(2, required=False)       # building or loading a model needs no particular count
    with pytest.raises(ConfigError, match=r"^TensorFlow already runs on 1 thread in this process and a Keras "
                                          r"model trains with model\.train\.threads=2, .*TF_NUM_INTRAOP_THREADS=2"):
        tensorflow_threads(2, required=True)
