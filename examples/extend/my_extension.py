"""A method, a metric, a model and a dataset of your own, kept outside the project.

Each is one class or function here plus one YAML file under ``conf/``; with this folder on
``PYTHONPATH`` and ``--config-dir examples/extend/conf`` (or ``hydra.searchpath=[file://...]``),
``run.py`` takes them like the project's own: ``model=tiny method=my_method metrics=mine``.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from baselines.base import Explainer, with_output
from experiments.data.datasets import Dataset
from metrics.base import Metric, MetricInfo


class GradientTimesDelta(Explainer):
    """Gradient x (input - reference): gradient x input against a constant reference value."""

    name = "my_method"
    signed = True
    modalities = ("tabular", "image")
    absent_params = ("reference",)

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        x = inputs.detach().clone().requires_grad_(True)
        out = self.forward_fn(self.params["output"])(x)
        (grad,) = torch.autograd.grad(out.gather(1, targets[:, None]).sum(), x)
        return grad * (inputs - float(self.params.get("reference", 0.0)))


class TopFeatureDrop(Metric):
    """How much the target's output falls when the sample's most relevant feature (largest
    |attribution|) is set to ``baseline``: higher is better."""

    info = MetricInfo(name="top_feature_drop", category="faithfulness", direction="higher",
                      attributions="absolute", batched=True)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, a: Tensor, explainer: Optional[Any] = None,
                 ground_truth: Optional[Tensor] = None) -> np.ndarray:
        fn = with_output(model, self.params.get("output", "softmax"))
        flat = x.reshape(len(x), -1).clone()
        top = a.reshape(len(a), -1).abs().argmax(1)
        flat[torch.arange(len(x)), top] = float(self.params.get("baseline", 0.0))
        device = next(model.parameters()).device
        with torch.no_grad():
            before = fn(x.to(device)).gather(1, y.to(device)[:, None]).flatten()
            after = fn(flat.reshape(x.shape).to(device)).gather(1, y.to(device)[:, None]).flatten()
        return (before - after).cpu().numpy().astype(float)


class TinyNet(nn.Module):
    """One hidden layer; ``in_features`` and ``num_classes`` come from the dataset."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def blobs(n_train: int = 200, n_test: int = 40, n_features: int = 6, seed: int = 0) -> Dataset:
    """Two Gaussian classes whose means differ in the first two features only (the ground truth)."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, n_features, generator=g)
    x[:, :2] += 2.0 * y[:, None].float()
    truth = torch.zeros(n_test, n_features)
    truth[:, :2] = 1.0
    return Dataset("blobs", "tabular", x[:n_train], y[:n_train], x[n_train:], y[n_train:], n_classes=2,
                   feature_names=[f"f{i}" for i in range(n_features)], ground_truth=truth)
