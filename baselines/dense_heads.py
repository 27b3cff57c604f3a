"""The value every method explains for a dense model, defined once, as a head on the network.

A classifier's methods explain one class score. A segmentation or box model has no such score,
so each dense task declares one, and the head computes it; every method is handed the head as
its model and explains output ``target`` of it, through the same ``explain(inputs, targets)``:

- ``binary-segmentation``: ``S(x) = sum over pixels of p * [p > thresholding]``, with ``p`` the
  sigmoid of the network's per-pixel logits: the sum of the foreground probabilities of the
  pixels predicted foreground. This is what DLBacktrace's reference puts on the output layer for
  this task (each pixel above ``thresholding`` starts with its probability, every other pixel
  with nothing; times ``multiplier``), so backtrace's starting relevance and every other method's
  explained value are one number. One output: the target is always 0. The indicator is constant
  almost everywhere, so a gradient of ``S`` is the sum of the gradients of the kept pixels'
  probabilities; ``S`` jumps by about ``thresholding`` where a pixel crosses it.
- ``bbox-regression``: the network's four box coordinates (x0, y0, x1, y1), the target choosing
  one (``box_output: coordinate``, four outputs), or their sum (``box_output: sum``, one output).

DLBacktrace does not read the head: it runs its own tasks on the network (:meth:`backtrace_view`)
and starts from the same value, so the tests compare the two.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from .vocabulary import DENSE_TASKS, ConfigError, check_choice
BOX_OUTPUTS = ("coordinate", "sum")
BOX_COORDINATES = ("x0", "y0", "x1", "y1")
# A head's settings (a dense model config's ``head`` block): thresholding for segmentation; for
# boxes, box_output and the coordinate explained (the target of every sample).
HEAD_PARAMS = {"binary-segmentation": ("thresholding",), "bbox-regression": ("box_output", "coordinate")}


class DenseHead(nn.Module):
    """A dense network behind a head that returns the explained value ``(N, n_outputs)``.

    ``net`` is the network as trained (torch, or a wrapped Keras model): per-pixel logits
    ``(N, 1, H, W)`` for segmentation, coordinates ``(N, 4)`` for boxes."""

    task: ClassVar[str]

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    @property
    def framework(self) -> str:
        return str(getattr(self.net, "framework", "torch"))

    @property
    def n_outputs(self) -> int:
        raise NotImplementedError

    @property
    def cam_layer(self) -> Any:
        """The layer GradCAM reads, where the network names one: a module path in this head for a
        torch network, a layer name for a Keras one; else None (GradCAM finds the last conv map)."""
        name = getattr(self.net, "cam_layer", None)
        if name is None or self.framework == "keras":
            return name
        return f"net.{name}"

    def describe(self) -> str:
        """The explained value in words, for records and table headings."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def backtrace_view(self) -> tuple[Any, dict[str, Any]]:
        """(the model DLBacktrace explains, its options): the engine's own task on the network."""
        raise NotImplementedError

    def output_view(self) -> nn.Module:
        """A torch network whose outputs the explained value is a sum of parts of
        (:meth:`value_parts`): for methods that start from the outputs of a network made of
        layers, as LRP does."""
        raise NotImplementedError

    def value_parts(self, out: Tensor, targets: Tensor) -> Tensor:
        """The explained value of each sample split over the outputs ``out`` of
        :meth:`output_view`: shaped like ``out``, summing per sample to ``self(x)[i, targets[i]]``."""
        raise NotImplementedError

    def keras_value(self, out: Any, targets: Any) -> Any:
        """The explained value from the Keras network's output ``out`` (a TF tensor, channels-last),
        one per sample, in TensorFlow (GradCAM's tape needs it there)."""
        raise NotImplementedError

    # a wrapped Keras network's layout helpers, for the methods that talk to Keras directly
    def to_keras(self, x: Tensor) -> Any:
        return self.net.to_keras(x)

    def from_keras(self, a: Any) -> Tensor:
        return self.net.from_keras(a)

    @property
    def keras_model(self) -> Any:
        return self.net.keras_model


class SegmentationScore(DenseHead):
    """``S(x) = sum p [p > thresholding]`` over the pixels, one output (see the module docstring)."""

    task = "binary-segmentation"

    def __init__(self, net: nn.Module, thresholding: float = 0.5) -> None:
        super().__init__(net)
        t = float(thresholding)
        if not 0.0 <= t < 1.0:
            raise ConfigError(f"thresholding={thresholding!r} is invalid; choose a probability in [0, 1)")
        self.thresholding = t

    @property
    def n_outputs(self) -> int:
        return 1

    def describe(self) -> str:
        return f"S = sum of the foreground probabilities p over the pixels with p > {self.thresholding:g}"

    def params(self) -> dict[str, Any]:
        return {"task": self.task, "thresholding": self.thresholding}

    def probabilities(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.net(x))

    def forward(self, x: Tensor) -> Tensor:
        p = self.probabilities(x)
        kept = (p > self.thresholding).to(p.dtype)          # no gradient: constant almost everywhere
        return (p * kept).flatten(1).sum(1, keepdim=True)

    def backtrace_view(self) -> tuple[Any, dict[str, Any]]:
        if self.framework == "keras":
            return self.net.with_output("sigmoid"), {"task": self.task, "thresholding": self.thresholding}
        return nn.Sequential(self.net, nn.Sigmoid()).eval(), {"task": self.task, "thresholding": self.thresholding}

    def output_view(self) -> nn.Module:
        return nn.Sequential(self.net, nn.Sigmoid()).eval()     # the probabilities p

    def value_parts(self, out: Tensor, targets: Tensor) -> Tensor:
        return out * (out > self.thresholding).to(out.dtype)    # p on the kept pixels, 0 elsewhere

    def keras_value(self, out: Any, targets: Any) -> Any:
        import tensorflow as tf

        p = tf.sigmoid(out)
        kept = tf.cast(p > self.thresholding, p.dtype)
        return tf.reduce_sum(tf.reshape(p * kept, (tf.shape(p)[0], -1)), axis=1, keepdims=True)


class BoxScore(DenseHead):
    """The box coordinates (four outputs) or their sum (one output)."""

    task = "bbox-regression"

    def __init__(self, net: nn.Module, box_output: str = "coordinate") -> None:
        super().__init__(net)
        self.box_output = check_choice("box_output", box_output, BOX_OUTPUTS)

    @property
    def n_outputs(self) -> int:
        return 4 if self.box_output == "coordinate" else 1

    def describe(self) -> str:
        if self.box_output == "coordinate":
            return "one predicted box coordinate (target 0..3: x0, y0, x1, y1, as fractions of the image)"
        return "the sum of the four predicted box coordinates x0 + y0 + x1 + y1"

    def params(self) -> dict[str, Any]:
        return {"task": self.task, "box_output": self.box_output}

    def forward(self, x: Tensor) -> Tensor:
        boxes = self.net(x)
        return boxes if self.box_output == "coordinate" else boxes.sum(1, keepdim=True)

    def backtrace_view(self) -> tuple[Any, dict[str, Any]]:
        """The engine's bbox-regression task from the explained output's own value (no ``scaler``):
        the network itself for a coordinate, the head (the network and the sum, which the engine
        splits over the coordinates in proportion to their values) for the sum."""
        options = {"task": self.task}
        if self.framework == "keras":
            model = self.net.keras_model if self.box_output == "coordinate" else self.net.with_output("sum")
            return model, options
        return (self.net if self.box_output == "coordinate" else self), options

    def output_view(self) -> nn.Module:
        return self.net     # the four coordinates

    def value_parts(self, out: Tensor, targets: Tensor) -> Tensor:
        if self.box_output == "sum":
            return out
        return out * torch.nn.functional.one_hot(targets, out.shape[1]).to(out.dtype)

    def keras_value(self, out: Any, targets: Any) -> Any:
        import tensorflow as tf

        if self.box_output == "sum":
            return tf.reduce_sum(out, axis=1, keepdims=True)
        idx = np.asarray(targets.cpu() if isinstance(targets, Tensor) else targets, dtype=np.int64).reshape(-1, 1)
        return tf.gather(out, tf.constant(idx), batch_dims=1)


def dense_head(net: nn.Module, task: str, thresholding: float = 0.5, box_output: str = "coordinate") -> DenseHead:
    """The head of ``task`` on ``net``."""
    if task == "binary-segmentation":
        return SegmentationScore(net, thresholding).eval()
    if task == "bbox-regression":
        return BoxScore(net, box_output).eval()
    raise ConfigError(f"unknown dense task {task!r}; valid choices: {', '.join(DENSE_TASKS)}")


def explained_targets(head: DenseHead, n: int, coordinate: int = 0) -> Tensor:
    """The target of each of ``n`` samples: 0 for one-output heads, else the box coordinate."""
    if head.n_outputs == 1:
        return torch.zeros(n, dtype=torch.long)
    if isinstance(coordinate, bool) or not isinstance(coordinate, int) or not 0 <= coordinate < head.n_outputs:
        raise ConfigError(f"box coordinate {coordinate!r} is invalid; choose 0..3 ({', '.join(BOX_COORDINATES)})")
    return torch.full((n,), int(coordinate), dtype=torch.long)


def head_settings(task: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` (a model config's ``head`` block) checked for ``task``: unknown settings and bad
    values are one :class:`ConfigError` line each; returns them with the defaults filled in."""
    check_choice("dense task", task, DENSE_TASKS)
    unknown = sorted(set(params) - set(HEAD_PARAMS[task]))
    if unknown:
        raise ConfigError(f"unknown head setting(s) {unknown} for a {task} model; valid: {', '.join(HEAD_PARAMS[task])}")
    defaults = {"thresholding": 0.5} if task == "binary-segmentation" else {"box_output": "coordinate", "coordinate": 0}
    merged = {**defaults, **params}
    probe = dense_head(nn.Identity(), task, **{k: v for k, v in merged.items() if k != "coordinate"})
    if task == "bbox-regression":
        explained_targets(probe, 1, merged["coordinate"])
    return merged


def head_of(net: nn.Module, task: str, params: dict[str, Any]) -> DenseHead:
    """The head of ``task`` on ``net`` with the (checked) settings of a model config's ``head``."""
    merged = head_settings(task, params)
    return dense_head(net, task, **{k: v for k, v in merged.items() if k != "coordinate"})
