"""One explainer interface for every method, the DLBacktrace engine included.

A method is built from its Hydra config (``configs/method/<name>.yaml``, ``_target_`` pointing at
an :class:`Explainer` subclass) with the model and an :class:`ExplainContext`, then called as
``explain(inputs, targets) -> attributions`` on a batch. Class attributes declare what a method
supports, so an unsupported pairing is refused before anything runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .vocabulary import CHANNEL_REDUCTIONS, CLASS_OUTPUTS, DENSE_OUTPUT, MODALITIES, OUTPUTS, check_choice

MODEL_KINDS = ("mlp", "conv", "transformer", "recurrent")
FRAMEWORKS = ("torch", "keras")  # Keras models come wrapped (experiments.zoo.keras_models.KerasClassifier)


class IncompatibleMethodError(ValueError):
    """A method was paired with a modality or model kind it does not support."""


class NonFiniteInputError(ValueError):
    """Inputs holding NaN or infinity: explaining them would give NaN attributions, so they are refused."""


def check_finite_inputs(inputs: Tensor, sample_ids: Optional[Tensor] = None, what: str = "inputs") -> None:
    """Refuse non-finite inputs, naming the first bad sample (its index in the batch, or
    ``sample_ids[i]`` where the caller knows the samples' own indices) and how many there are."""
    if not inputs.dtype.is_floating_point or inputs.ndim == 0 or inputs.numel() == 0:
        return  # integer inputs (token ids) are always finite
    bad = ~torch.isfinite(inputs.reshape(len(inputs), -1)).all(1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()
        first = int(rows[0])
        value = inputs[first][~torch.isfinite(inputs[first])].flatten()[0].item()
        name = f"sample {int(sample_ids[first])}" if sample_ids is not None else f"sample {first} of the batch"
        raise NonFiniteInputError(
            f"{what} hold a non-finite value ({value}) in {name} ({len(rows)} sample(s) affected); "
            f"non-finite inputs are refused, since explaining them gives NaN attributions"
        )


def check_token_ids(inputs: Tensor) -> None:
    """Text inputs are token ids: an integer tensor (N, L). Anything else is refused in one line."""
    if inputs.dtype.is_floating_point or inputs.dtype == torch.bool or inputs.ndim != 2:
        raise ValueError(f"text inputs must be int64 token ids of shape (N, L); got dtype {inputs.dtype} "
                         f"and shape {tuple(inputs.shape)}")


@dataclass
class ExplainContext:
    """What a method may need besides the model: the data it may draw a background from, the
    run seed (every stochastic method seeds from it), and the kind of model and data. ``extras``
    holds what only some methods read; for text, ``extras["tokenizer"]`` is the tokenizer of the
    token ids (a transformers tokenizer: ``convert_ids_to_tokens``), handed over by the harness."""

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
    # functions of a classifier it can explain (a dense head's own value, ``identity``: ``dense``)
    outputs: ClassVar[tuple[str, ...]] = CLASS_OUTPUTS
    frameworks: ClassVar[tuple[str, ...]] = FRAMEWORKS    # frameworks whose models it can explain
    deterministic: ClassVar[bool] = True
    # Whether it explains a dense task's head (baselines.dense_heads): the value the head returns
    dense: ClassVar[bool] = True
    # False where the map never reads the model's output (attention weights, the controls): such a
    # method explains no output function, and tables say "reads no output" instead of naming one.
    reads_output: ClassVar[bool] = True
    # True where image attributions are one map per pixel, (N, 1, H, W), instead of one per input
    # channel: every channel reduction leaves such a map unchanged (GradCAM, LIME's superpixels).
    pixel_map: ClassVar[bool] = False
    # The parameters that set a method's cost and the value it treats as "absent" (a reference
    # input, a background, a fill colour): recorded with every run and shown with every table.
    budget_params: ClassVar[tuple[str, ...]] = ()
    absent_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module, context: ExplainContext, **params: Any) -> None:
        self.check_compatible(context.modality, context.model_kind, params.get("output"), framework_of(model))
        check_dense(type(self), model, params.get("output"))
        # Explanations are always of the model as deployed: BatchNorm/Dropout in inference mode.
        self.model = model.eval()
        self.context = context
        self.params = {k: plain(v) for k, v in params.items()}
        self.last_extras: dict[str, Tensor] = {}
        # One stream of per-call seeds from the run seed: the same config and the same sequence
        # of batches give the same attributions, while successive batches get fresh noise.
        self._seeds = np.random.default_rng(context.seed)

    @classmethod
    def check_compatible(cls, modality: str, model_kind: str, output: Optional[str] = None,
                         framework: str = "torch") -> None:
        if framework not in cls.frameworks:
            raise IncompatibleMethodError(
                f"method {cls.name!r} does not support {framework} models; it supports: {', '.join(cls.frameworks)}"
            )
        if modality not in cls.modalities:
            raise IncompatibleMethodError(
                f"method {cls.name!r} does not support {modality!r} data; it supports: {', '.join(cls.modalities)}"
            )
        if model_kind not in cls.model_kinds:
            raise IncompatibleMethodError(
                f"method {cls.name!r} does not support {model_kind!r} models; it supports: {', '.join(cls.model_kinds)}"
            )
        if output is not None and output != DENSE_OUTPUT and output not in cls.outputs:
            why = f" ({cls.output_note})" if getattr(cls, "output_note", "") else ""
            raise IncompatibleMethodError(
                f"method {cls.name!r} cannot explain output {output!r}{why}; valid choices: {', '.join(cls.outputs)}"
            )

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """Attributions shaped like ``inputs`` for class ``targets[i]`` of sample ``i``."""
        raise NotImplementedError

    def __call__(self, inputs: Tensor, targets: Tensor) -> Attribution:
        if self.context.modality == "text":
            check_token_ids(inputs)
        check_finite_inputs(inputs)
        targets = self._check_targets(inputs, targets)
        self.last_extras = {}
        start = time.perf_counter()
        values = self.explain(inputs, targets)
        seconds = time.perf_counter() - start
        self._check_shape(inputs, values)
        if self.context.modality == "text":
            values = self._features_only(inputs, values)
        return Attribution(values.detach(), seconds, dict(self.last_extras))

    def _features_only(self, inputs: Tensor, values: Tensor) -> Tensor:
        """Text: one float per token, exactly zero on the tokens that are not features ([CLS],
        [SEP], padding: the model's ``feature_mask``), whatever the method put there. Done here
        once, so no method and no metric can credit a special token."""
        from .text_inputs import feature_mask

        keep = feature_mask(self.model, inputs).to(values.device)
        values = values if values.dtype.is_floating_point else values.float()
        return torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))

    def declared(self) -> dict[str, dict[str, Any]]:
        """What the method is told to spend and what it removes features to: ``{"budget": {...},
        "absent": {...}}`` from its parameters, for records and table headings."""
        return {"budget": {k: self.params.get(k) for k in self.budget_params},
                "absent": {k: self.params.get(k) for k in self.absent_params}}

    # -- helpers shared by the methods ------------------------------------------------------

    def next_seed(self) -> int:
        """A fresh seed for one call, drawn from the run seed's stream."""
        return int(self._seeds.integers(0, 2**31 - 1))

    def forward_fn(self, output: str) -> nn.Module:
        """The function a method explains: the model's logits or their softmax."""
        return with_output(self.model, output)

    def expected_shape(self, inputs: Tensor) -> tuple[int, ...]:
        if self.pixel_map and self.context.modality == "image" and inputs.ndim == 4:
            return (inputs.shape[0], 1, *inputs.shape[2:])
        return tuple(inputs.shape)

    def _check_targets(self, inputs: Tensor, targets: Tensor) -> Tensor:
        targets = torch.as_tensor(targets)
        if targets.ndim != 1 or targets.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"targets must have shape ({inputs.shape[0]},), one class per sample; got {tuple(targets.shape)}"
            )
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise ValueError(f"targets must be integer class indices; got dtype {targets.dtype}")
        bad = targets[(targets < 0) | (targets >= self.context.n_classes)]
        if len(bad):
            raise ValueError(
                f"target class {int(bad[0])} out of range; valid classes are 0..{self.context.n_classes - 1}"
            )
        return targets.long().to(inputs.device)

    def _check_shape(self, inputs: Tensor, values: Tensor) -> None:
        if tuple(values.shape) != self.expected_shape(inputs):
            raise RuntimeError(
                f"method {self.name!r} returned attributions of shape {tuple(values.shape)}; "
                f"expected {self.expected_shape(inputs)}"
            )


def check_dense(cls: type, model: nn.Module, output: Optional[str]) -> None:
    """A dense task's head is explained as it is (output ``identity``), and only by methods that
    can; ``identity`` on a classifier would explain its logits under another name."""
    from .dense_heads import DenseHead

    dense = isinstance(model, DenseHead)
    if dense and not cls.dense:
        raise IncompatibleMethodError(f"method {cls.name!r} does not support the dense task {model.task!r}")
    if output is None:
        return
    if dense and output != DENSE_OUTPUT:
        raise IncompatibleMethodError(f"method {cls.name!r}: a {model.task} head is explained as it is; "
                                      f"output must be {DENSE_OUTPUT!r}, not {output!r}")
    if not dense and output == DENSE_OUTPUT:
        raise IncompatibleMethodError(f"method {cls.name!r}: output 'identity' is for dense-task heads "
                                      f"(baselines.dense_heads); for a classifier choose softmax or logits")


def framework_of(model: nn.Module) -> str:
    """``"keras"`` for a wrapped Keras model, else ``"torch"``."""
    return str(getattr(model, "framework", "torch"))


def plain(value: Any) -> Any:
    """Hydra hands nested config values over as OmegaConf containers; methods want plain Python."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - hydra is a dependency
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def with_output(model: nn.Module, output: str) -> nn.Module:
    """``model`` itself for ``"logits"`` (and for ``"identity"``, a dense head's value); ``model``
    followed by a softmax over classes for ``"softmax"`` (the paper's classifiers end in a softmax;
    the zoo's models return logits)."""
    check_choice("output", output, OUTPUTS)
    if output in ("logits", DENSE_OUTPUT):
        return model
    return nn.Sequential(model, nn.Softmax(dim=-1)).eval()


class SelectOutput(nn.Module):
    """A model restricted to one output column, shape (N, 1).

    shap's torch explainers explain every output (or the top-ranked ones), not a chosen class per
    sample; restricting the model to the target's column explains exactly that class at the cost
    of one class instead of all of them.
    """

    def __init__(self, model: nn.Module, index: int) -> None:
        super().__init__()
        self.model = model
        self.index = int(index)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[:, self.index : self.index + 1]


def numpy_predictor(model: nn.Module, device: torch.device, to_tensor: Callable[[np.ndarray], Tensor],
                    batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """A numpy-in, numpy-out batched forward pass, as the model-agnostic libraries (shap, lime)
    call it; ``to_tensor`` turns their layout (e.g. HWC images) into the model's."""

    def predict(x: np.ndarray) -> np.ndarray:
        outs = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                chunk = to_tensor(np.asarray(x[start : start + batch_size])).to(device)
                outs.append(model(chunk).float().cpu().numpy())
        return np.concatenate(outs, 0).astype(np.float64) if outs else np.zeros((0,))

    return predict


def group_by_target(targets: Tensor) -> Iterator[tuple[int, Tensor]]:
    """(class, indices of the samples explaining that class), for libraries that explain one
    output at a time."""
    for cls in torch.unique(targets).tolist():
        yield int(cls), torch.nonzero(targets == cls).flatten()


def leaf_calls(model: nn.Module, example: Tensor) -> list[tuple[str, nn.Module, Any]]:
    """(name, module, output) of every leaf-module call of one forward pass on ``example``, in
    call order: how a method finds a layer by what the model does, not by how it is named."""
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[str, nn.Module, Any]] = []

    def hook(module: nn.Module, _inp: object, out: object) -> None:
        calls.append((names[module], module, out))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return calls


def for_scoring(attributions: Tensor, signed: bool, channel_reduction: str = "sum") -> Tensor:
    """Attributions as every metric receives them, the same for the first explanation and for
    each one a metric asks for again: channels reduced, and for a method that does not return
    signed attributions, their magnitudes. An unsigned method's map carries no per-feature sign
    (saliency, GradCAM, default-mode DLBacktrace, whose relevance has the sign of the output it
    started from at every feature); its magnitude is what it claims."""
    reduced = reduce_channels(attributions, channel_reduction)
    return reduced if signed else reduced.abs()


def sign_profile(attributions: Tensor) -> dict[str, float]:
    """What a batch of attributions actually holds, sample by sample: the share of samples whose
    map has both signs, only non-negative or only non-positive entries (all-zero maps count as
    both one-signed kinds), and the share of negative entries overall. Recorded next to what the
    method declares (``signed``) so a reader can check the declaration."""
    flat = attributions.detach().reshape(len(attributions), -1).float()
    has_pos, has_neg = (flat > 0).any(1), (flat < 0).any(1)
    n = max(len(flat), 1)
    return {"mixed_sign_samples": float((has_pos & has_neg).sum()) / n,
            "non_negative_samples": float((~has_neg).sum()) / n,
            "non_positive_samples": float((~has_pos).sum()) / n,
            "negative_entries": float((flat < 0).float().mean()) if flat.numel() else 0.0}


def reduce_channels(attributions: Tensor, how: str = "sum") -> Tensor:
    """Collapse the channel axis of image attributions (N, C, H, W) -> (N, 1, H, W), the same way
    for every method before metrics. Non-image attributions are returned unchanged."""
    check_choice("channel reduction", how, CHANNEL_REDUCTIONS)
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
