"""The model cache: keyed by config, loaded not retrained, corrupt files detected and rebuilt."""
from __future__ import annotations

import torch
from omegaconf import OmegaConf

from tests.helpers.dataset_helpers import toy_dataset
from experiments.zoo.training import load_or_train, model_cache_key


MODEL = OmegaConf.create({
    "name": "mlp", "kind": "mlp", "modality": "tabular", "pretrained": False,
    "net": {"_target_": "experiments.zoo.models.MLP", "hidden": [8]},
    "train": {"epochs": 5, "batch_size": 32, "lr": 0.01, "weight_decay": 0.0},
})
DATA = OmegaConf.create({"_target_": "toy"})


def test_key_depends_on_model_data_training_and_seed():
    base = model_cache_key(MODEL, DATA, 0)
    assert base == model_cache_key(OmegaConf.create(OmegaConf.to_container(MODEL)), DATA, 0)
    assert base != model_cache_key(MODEL, DATA, 1)
    assert base != model_cache_key(OmegaConf.merge(MODEL, {"train": {"epochs": 6}}), DATA, 0)
    assert base != model_cache_key(MODEL, OmegaConf.create({"_target_": "other"}), 0)


def test_trained_once_then_loaded_and_deterministic(tmp_path):
    ds = toy_dataset()
    first = load_or_train(MODEL, DATA, ds, 0, tmp_path, torch.device("cpu"))
    assert not first.from_cache and first.accuracy > 0.8 and first.cache_path.is_file()
    second = load_or_train(MODEL, DATA, ds, 0, tmp_path, torch.device("cpu"))
    assert second.from_cache and second.accuracy == first.accuracy
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    # training is deterministic from the seed: a fresh cache gives the same weights
    third = load_or_train(MODEL, DATA, ds, 0, tmp_path / "other", torch.device("cpu"))
    assert not third.from_cache
    for a, b in zip(first.model.state_dict().values(), third.model.state_dict().values()):
        assert torch.equal(a, b)


def test_corrupt_cache_file_is_rebuilt(tmp_path, capsys):
    ds = toy_dataset()
    first = load_or_train(MODEL, DATA, ds, 0, tmp_path, torch.device("cpu"))
    raw = bytearray(first.cache_path.read_bytes())
    raw[-10] ^= 0xFF  # flip bits inside the weights
    first.cache_path.write_bytes(bytes(raw))
    again = load_or_train(MODEL, DATA, ds, 0, tmp_path, torch.device("cpu"))
    assert not again.from_cache and "corrupt" in capsys.readouterr().out
    first.cache_path.write_bytes(b"truncated")
    assert not load_or_train(MODEL, DATA, ds, 0, tmp_path, torch.device("cpu")).from_cache
    assert load_or_train(MODEL, DATA, ds, 0, tmp_path, torch.device("cpu")).from_cache
