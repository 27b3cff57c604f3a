"""Training and scoring of the dense models: the loss each task trains with, and the test score
recorded in place of a classifier's accuracy.

- ``binary-segmentation`` trains on per-pixel logits with ``bce_dice`` (binary cross-entropy on
  the logits plus one minus the soft Dice coefficient of the probabilities, averaged over the
  batch; the Dice term keeps small objects from drowning in background pixels), ``bce`` or
  ``dice``; its score is the test IoU: per image, |predicted & true| / |predicted | true| with the
  prediction p > 0.5, averaged over the test images (an image with neither scores 1).
- ``bbox-regression`` trains on the four coordinates with ``l1_giou`` (mean absolute error plus
  one minus the generalised IoU of Rezatofighi et al., 2019), ``l1`` or ``giou``; its score is the
  mean box IoU over the test images.

Training is the classifiers' loop (``experiments.zoo.training.train``) with the task's loss and
``Dataset.targets_train``: Adam, seeded data order, one progress bar. The loss is chosen by the
model config's ``train.loss`` among its task's, the first being the default; it is part of the
model's cache key.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from experiments.data.base import Dataset
from experiments.errors import ConfigError

LOSSES = {"binary-segmentation": ("bce_dice", "bce", "dice"), "bbox-regression": ("l1_giou", "l1", "giou")}
SCORES = {"binary-segmentation": "test IoU", "bbox-regression": "test mean box IoU"}
SMOOTH = 1.0     # added to the Dice numerator and denominator: an empty mask predicted empty scores 1


def loss_name(task: str, train_cfg: Any) -> str:
    """The configured loss of ``task`` (``train.loss``), or its default; a bad one is one line."""
    if task not in LOSSES:
        raise ConfigError(f"no training loss for task {task!r}; dense tasks: {', '.join(LOSSES)}")
    name = train_cfg.get("loss") if hasattr(train_cfg, "get") else None
    if name is None:
        return LOSSES[task][0]
    if name not in LOSSES[task]:
        raise ConfigError(f"model.train.loss={name!r} is invalid for {task}; choose one of: {', '.join(LOSSES[task])}")
    return str(name)


def soft_dice(p: Tensor, mask: Tensor) -> Tensor:
    """Per-sample soft Dice coefficient of probabilities ``p`` and a {0, 1} mask, (N,)."""
    p, mask = p.flatten(1), mask.flatten(1)
    return (2 * (p * mask).sum(1) + SMOOTH) / (p.sum(1) + mask.sum(1) + SMOOTH)


def box_iou(a: Tensor, b: Tensor, generalised: bool = False) -> Tensor:
    """Per-row IoU (or generalised IoU) of boxes (x0, y0, x1, y1), (N,). A box whose corners
    are swapped has zero area."""
    def area(box: Tensor) -> Tensor:
        return (box[:, 2] - box[:, 0]).clamp(min=0) * (box[:, 3] - box[:, 1]).clamp(min=0)
    lo, hi = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (hi - lo).clamp(min=0).prod(1)
    union = area(a) + area(b) - inter
    iou = inter / union.clamp(min=1e-12)
    if not generalised:
        return iou
    enclose = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(1)
    return iou - (enclose - union) / enclose.clamp(min=1e-12)


def mask_iou(pred: Tensor, true: Tensor) -> Tensor:
    """Per-sample IoU of two {0, 1} masks, (N,); 1 where both are empty."""
    pred, true = pred.flatten(1).bool(), true.flatten(1).bool()
    inter, union = (pred & true).sum(1).double(), (pred | true).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def dense_loss(task: str, name: str, out: Tensor, target: Tensor) -> Tensor:
    """The batch loss of ``task``: ``out`` is per-pixel logits or boxes, ``target`` masks or boxes."""
    if task == "binary-segmentation":
        bce = F.binary_cross_entropy_with_logits(out, target)
        if name == "bce":
            return bce
        dice = 1 - soft_dice(torch.sigmoid(out), target).mean()
        return dice if name == "dice" else bce + dice
    l1 = (out - target).abs().mean()
    if name == "l1":
        return l1
    giou = 1 - box_iou(out, target, generalised=True).mean()
    return giou if name == "giou" else l1 + giou


def keras_loss(task: str, name: str) -> Any:
    """:func:`dense_loss` for Keras's ``compile`` (y_true, y_pred channels-last), in keras.ops."""
    import keras
    from keras import ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        n = ops.shape(y_pred)[0]
        if task == "binary-segmentation":
            bce = ops.mean(keras.losses.binary_crossentropy(ops.reshape(y_true, (n, -1)), ops.reshape(y_pred, (n, -1)),
                                                            from_logits=True))
            if name == "bce":
                return bce
            p, m = ops.reshape(ops.sigmoid(y_pred), (n, -1)), ops.reshape(y_true, (n, -1))
            dice = 1 - ops.mean((2 * ops.sum(p * m, axis=1) + SMOOTH) / (ops.sum(p, axis=1) + ops.sum(m, axis=1) + SMOOTH))
            return dice if name == "dice" else bce + dice
        l1 = ops.mean(ops.abs(y_pred - y_true))
        if name == "l1":
            return l1
        lo, hi = ops.maximum(y_pred[:, :2], y_true[:, :2]), ops.minimum(y_pred[:, 2:], y_true[:, 2:])
        inter = ops.prod(ops.maximum(hi - lo, 0.0), axis=1)
        def area(b: Any) -> Any:
            return ops.maximum(b[:, 2] - b[:, 0], 0.0) * ops.maximum(b[:, 3] - b[:, 1], 0.0)
        union = area(y_pred) + area(y_true) - inter
        enclose = ops.prod(ops.maximum(ops.maximum(y_pred[:, 2:], y_true[:, 2:]) -
                                       ops.minimum(y_pred[:, :2], y_true[:, :2]), 0.0), axis=1)
        giou = inter / ops.maximum(union, 1e-12) - (enclose - union) / ops.maximum(enclose, 1e-12)
        g = 1 - ops.mean(giou)
        return g if name == "giou" else l1 + g

    return loss


@torch.no_grad()
def dense_outputs(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """The network's outputs (logits or boxes) in batches on its device, returned on the CPU."""
    model.eval()
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def predicted(task: str, out: Tensor) -> Tensor:
    """What the network predicts: the mask p > 0.5 (logit > 0), or the box."""
    return (out > 0).float() if task == "binary-segmentation" else out


def dense_scores(task: str, out: Tensor, targets: Tensor) -> Tensor:
    """Per-sample score of the outputs against the targets: mask IoU or box IoU, (N,) float64."""
    if task == "binary-segmentation":
        return mask_iou(predicted(task, out), targets)
    return box_iou(out.double(), targets.double())


def dense_score(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> float:
    """The test score recorded for a dense model (SCORES names it): the mean over the test images."""
    out = dense_outputs(model, dataset.x_test, batch_size)
    return float(np.mean(dense_scores(dataset.task, out, dataset.targets_test).numpy()))
