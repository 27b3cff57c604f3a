"""The bridge from Quantus' ``explain_func`` protocol to our :class:`baselines.base.Explainer`.

Quantus re-explains perturbed inputs (robustness), other classes (RandomLogit) and randomised
copies of the model (MPRT) by calling ``explain_func(model=..., inputs=ndarray, targets=ndarray,
**kwargs) -> ndarray``. :class:`ExplainFunc` answers that call with the explainer the harness
built, prepared exactly as the harness prepared the attributions being scored
(:func:`baselines.base.for_scoring`: channels reduced, magnitudes for unsigned methods).

Explanations of the harness's own model are memoised per explainer when the explainer carries a
``memo`` dict (the runner gives it one): MaxSensitivity and AvgSensitivity draw the same seeded
perturbations, so the second reads the explanations the first computed instead of re-running the
method, and a stochastic method is scored on the same perturbed explanations by both. For that the
explainer runs with the global random generators saved and restored around it: whatever a library
draws from them (shap does) must not move the perturbations Quantus draws next, or a memoised and
a fresh call would lead to different perturbations.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from baselines.base import Explainer, for_scoring


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without moving numpy's, torch's or Python's global random generators."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class ExplainFunc:
    """Callable in Quantus' ``explain_func`` shape, backed by one of our explainers.

    When Quantus hands over a model other than the one the explainer was built on (MPRT's
    randomised copy), the explainer is rebuilt on that model with the same context and
    parameters, so that the explanation really is of the randomised network. The copy is mutated
    in place layer after layer, so the rebuilt explainer is not cached.
    """

    def __init__(self, explainer: Explainer, channel_reduction: str = "sum") -> None:
        self.explainer = explainer
        self.channel_reduction = channel_reduction

    def explainer_for(self, model: nn.Module) -> Explainer:
        if model is self.explainer.model:
            return self.explainer
        return type(self.explainer)(model, self.explainer.context, **self.explainer.params)

    def __call__(self, model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: Any) -> np.ndarray:
        inputs = np.asarray(inputs)
        # token ids (text) stay integers; every other input is float32 as Quantus hands it over
        inputs = np.ascontiguousarray(inputs, dtype=np.int64 if np.issubdtype(inputs.dtype, np.integer) else np.float32)
        targets = np.ascontiguousarray(targets, dtype=np.int64).reshape(-1)
        memo = getattr(self.explainer, "memo", None) if model is self.explainer.model else None
        key = None
        if memo is not None:
            digest = hashlib.sha1(inputs.tobytes())
            digest.update(targets.tobytes())
            key = (inputs.shape, self.channel_reduction, digest.hexdigest())
            if key in memo:
                return memo[key].copy()
        device = self.explainer.context.device
        x = torch.as_tensor(inputs, device=device)
        t = torch.as_tensor(targets, device=device)
        explainer = self.explainer_for(model)
        with preserved_rng():
            values = explainer(x, t).values
        out = for_scoring(values, explainer.signed, self.channel_reduction).detach().cpu().numpy().astype(np.float64)
        if key is not None:
            memo[key] = out.copy()
        return out


def normalise_per_sample(a: np.ndarray, normalise_axes: Optional[Sequence[int]] = None) -> np.ndarray:
    """Divide each sample's attributions by their own largest magnitude.

    Quantus' default ``normalise_by_max`` takes the maximum over every axis, the batch axis
    included, so one sample's score would depend on which other samples share its batch (and
    MaxSensitivity would normalise the clean and the perturbed batch by different constants).
    An all-zero map is left as it is.
    """
    axes = tuple(range(1, a.ndim)) if normalise_axes is None else tuple(normalise_axes)
    scale = np.max(np.abs(a), axis=axes, keepdims=True)
    return a / np.where(scale > 0, scale, 1.0)
