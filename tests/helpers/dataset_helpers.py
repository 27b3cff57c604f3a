"""A tiny tabular dataset that the training-cache tests (torch and Keras) share."""
from __future__ import annotations

import torch

from experiments.data.datasets import Dataset


def toy_dataset() -> Dataset:
    """200 rows of 4 features; the label is a linear rule of the first two, 150/50 split."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return Dataset(name="toy", modality="tabular", x_train=x[:150], y_train=y[:150], x_test=x[150:],
                   y_test=y[150:], n_classes=2)
