"""Training shows the run's progress bar (experiments.run.progress) on a terminal only: nothing in
logs, in CI or in captured output, for torch and Keras training alike (never Keras's own
``Epoch 1/8`` lines)."""
from __future__ import annotations

import io
import sys

import pytest
import torch
from omegaconf import OmegaConf

from experiments.run.progress import bar
from experiments.zoo.training import load_or_train
from tests.helpers.dataset_helpers import toy_dataset

MODEL = OmegaConf.create({
    "name": "mlp", "kind": "mlp", "modality": "tabular", "pretrained": False,
    "net": {"_target_": "experiments.zoo.models.MLP", "hidden": [8]},
    "train": {"epochs": 3, "batch_size": 32, "lr": 0.01, "weight_decay": 0.0},
})
KERAS = OmegaConf.merge(MODEL, {"name": "keras_mlp", "framework": "keras",
                                "net": {"_target_": "experiments.zoo.keras_models.keras_mlp"}})
DATA = OmegaConf.create({"_target_": "toy"})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def progress_allowed(monkeypatch):
    """Nothing in the environment turns progress off: only where stderr goes decides."""
    monkeypatch.delenv("BACKTRACE_BENCH_NO_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)


def _model(framework: str):
    if framework == "keras":
        pytest.importorskip("tensorflow", reason="tensorflow is not installed (make test installs the 'tf' extra)")
        return KERAS
    return MODEL


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_no_training_output_in_a_log(framework, progress_allowed, tmp_path, capfd):
    model = _model(framework)
    load_or_train(model, DATA, toy_dataset(), 0, tmp_path, torch.device("cpu"), progress=bar)
    out, err = capfd.readouterr()
    assert f"model {model.name}: trained in" in out
    assert "Epoch" not in out + err and "training" not in err and "step" not in err


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_training_bar_on_a_terminal(framework, progress_allowed, tmp_path, monkeypatch, capfd):
    model = _model(framework)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    load_or_train(model, DATA, toy_dataset(), 0, tmp_path, torch.device("cpu"), progress=bar)
    shown = terminal.getvalue()
    steps = 3 * -(-len(toy_dataset().x_train) // 32)
    assert "training" in shown and f"0/{steps}" in shown
    assert "Epoch" not in shown + capfd.readouterr().out
