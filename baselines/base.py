"""One explainer interface for every method, the DLBacktrace engine included.

A method is built from its Hydra config (``configs/method/<name>.yaml``, ``_target_`` pointing at
an :class:`Explainer` subclass) with the model and an :class:`ExplainContext`, then called as
``explain(inputs, targets) -> attributions`` on a batch. Class attributes declare what a method
supports, so an unsupported pairing is refused before anything runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor, nn

MODALITIES = ("tabular", "image", "text")
MODEL_KINDS = ("mlp", "conv", "transformer", "recurrent")
CHANNEL_REDUCTIONS = ("sum", "mean", "abs_sum", "max_abs", "none")


class IncompatibleMethodError(ValueError):
    """A method was paired with a modality or model kind it does not support."""


@dataclass
class ExplainContext:
    """What a method may need besides the model: the data it may draw a background from, the
    run seed (every stochastic method seeds from it), and the kind of model and data."""

    modality: str
    model_kind: str
    n_classes: int
    x_train: Optional[Tensor] = None
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    feature_names: Optional[list[str]] = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Attribution:
    """Attributions for a batch, the wall time it took, and anything a method keeps on the side
    (e.g. the negative map of contrastive backtrace)."""

    values: Tensor
    seconds: float
    extras: dict[str, Tensor] = field(default_factory=dict)


class Explainer:
    """Base class: subclasses set the class attributes and implement :meth:`explain`."""

    name: ClassVar[str] = "explainer"
    signed: ClassVar[bool] = True                       # attributions carry a sign
    modalities: ClassVar[tuple[str, ...]] = MODALITIES  # data it can explain
    model_kinds: ClassVar[tuple[str, ...]] = MODEL_KINDS  # models it can explain
    deterministic: ClassVar[bool] = True

    def __init__(self, model: nn.Module, context: ExplainContext, **params: Any) -> None:
        self.check_compatible(context.modality, context.model_kind)
        self.model = model
        self.context = context
        self.params = params
        self.last_extras: dict[str, Tensor] = {}

    @classmethod
    def check_compatible(cls, modality: str, model_kind: str) -> None:
        if modality not in cls.modalities:
            raise IncompatibleMethodError(
                f"method {cls.name!r} does not support {modality!r} data; it supports: {', '.join(cls.modalities)}"
            )
        if model_kind not in cls.model_kinds:
            raise IncompatibleMethodError(
                f"method {cls.name!r} does not support {model_kind!r} models; it supports: {', '.join(cls.model_kinds)}"
            )

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """Attributions shaped like ``inputs`` for class ``targets[i]`` of sample ``i``."""
        raise NotImplementedError

    def __call__(self, inputs: Tensor, targets: Tensor) -> Attribution:
        self.last_extras = {}
        start = time.perf_counter()
        values = self.explain(inputs, targets)
        seconds = time.perf_counter() - start
        return Attribution(values.detach(), seconds, dict(self.last_extras))


def reduce_channels(attributions: Tensor, how: str = "sum") -> Tensor:
    """Collapse the channel axis of image attributions (N, C, H, W) -> (N, 1, H, W), the same way
    for every method before metrics. Non-image attributions are returned unchanged."""
    if how not in CHANNEL_REDUCTIONS:
        raise ValueError(f"unknown channel reduction {how!r}; choose one of: {', '.join(CHANNEL_REDUCTIONS)}")
    if attributions.ndim != 4 or how == "none":
        return attributions
    if how == "sum":
        return attributions.sum(1, keepdim=True)
    if how == "mean":
        return attributions.mean(1, keepdim=True)
    if how == "abs_sum":
        return attributions.abs().sum(1, keepdim=True)
    idx = attributions.abs().argmax(1, keepdim=True)
    return attributions.gather(1, idx)
