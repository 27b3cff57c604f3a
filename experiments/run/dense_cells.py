"""What a run of a dense model (segmentation, box regression) explains and records besides the
attributions: the target of every sample (the head's one output, or the configured box
coordinate), each sample's IoU and explained value (``scores.csv`` columns in place of a
classifier's predicted class), and the predicted and true masks or boxes (``arrays.npz``) that
the figures outline."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from baselines.dense_heads import DenseHead, explained_targets
from experiments.data.base import Dataset
from experiments.zoo import dense_training

# What the arrays hold, per task, for readers of a record.
ARRAYS = {"binary-segmentation": {"predicted": "mask (N, 1, H, W): foreground probability > 0.5",
                                   "true": "mask (N, 1, H, W) of the test labels, in {0, 1}"},
          "bbox-regression": {"predicted": "box (N, 4): x0, y0, x1, y1 as fractions of the image",
                              "true": "box (N, 4) of the test labels, as the predicted ones"}}


@dataclass
class DenseSamples:
    """The dense part of one run: targets, per-sample columns, arrays and the record's entry."""

    targets: Tensor
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def explained_values(head: DenseHead, x: Tensor, targets: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """The value every method explains, per sample: the head's output ``targets[i]`` of ``x[i]``."""
    out = [head(x[i:i + batch_size].to(device)).double().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).gather(1, targets[:, None]).flatten()


def dense_samples(head: DenseHead, ds: Dataset, idx: Tensor, x: Tensor, settings: dict[str, Any],
                  batch_size: int, device: torch.device) -> DenseSamples:
    """Targets, IoU and explained value per sample, predicted and true masks or boxes, and the
    record entry (what is explained, the head's settings, what the arrays hold) of the samples
    ``idx`` of ``ds``."""
    task = ds.task
    targets = explained_targets(head, len(x), settings.get("coordinate", 0))
    out = dense_training.dense_outputs(head.net, x, batch_size)
    assert ds.targets_test is not None  # Dataset checks that a dense task has its targets
    truth = ds.targets_test[idx]
    iou = dense_training.dense_scores(task, out, truth).numpy()
    values = explained_values(head, x, targets, batch_size, device).numpy()
    return DenseSamples(
        targets,
        {"iou": iou, "explained_value": values},
        {"predicted": dense_training.predicted(task, out).numpy(), "true": truth.numpy()},
        {"task": task, "explains": head.describe(), "head": dict(settings),
         "iou": "mask IoU (p > 0.5)" if task == "binary-segmentation" else "box IoU",
         "arrays": ARRAYS[task],
         "mean_iou": float(np.mean(iou)), "mean_explained_value": float(np.mean(values))},
    )
