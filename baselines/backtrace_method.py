"""DLBacktrace (this project's engine, ``backtrace.explain``) behind the common interface.

For classification the method explains the softmax of the model's logits, as the paper's
classifiers end in a softmax: the engine sees ``nn.Sequential(model, nn.Softmax(dim=-1))``, and
relevance starts at the target class (the harness's label or prediction, not the engine's own
argmax). Both modes are signed. A Keras model (``experiments.keras_models.KerasClassifier``) is
explained through its Keras model with a Keras softmax appended (the engine's Keras front end);
inputs and relevance are moved between the harness's layout and Keras's.
"""
from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

from .base import MODALITIES, ExplainContext, Explainer, check_choice

CONTRASTIVE_OUTPUTS = ("positive", "difference")


class BacktraceMethod(Explainer):
    """DLBacktrace in its default mode; ``options`` go to the engine unchanged."""

    name = "backtrace"
    modalities = MODALITIES
    mode = "default"

    def __init__(self, model: nn.Module, context: ExplainContext, output: str = "softmax",
                 options: Optional[dict[str, Any]] = None, **params: Any) -> None:
        super().__init__(model, context, output=output, options=options, **params)
        self.options = dict(self.params.get("options") or {})
        self.keras = getattr(model, "framework", "torch") == "keras"
        self.explained = model.with_output(output) if self.keras else self.forward_fn(output)

    def _run(self, inputs: Tensor, targets: Tensor) -> Any:
        from backtrace import explain  # the engine; imported on use so baselines load without it

        if not self.keras:
            return explain(self.explained, inputs, mode=self.mode, target=targets, **self.options)
        rel = explain(self.explained, self.model.to_keras(inputs), mode=self.mode, target=targets.cpu(),
                      **self.options)
        back = self.model.from_keras
        return (back(rel[0]), back(rel[1])) if isinstance(rel, tuple) else back(rel).to(inputs.device)

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return self._run(inputs, targets)


class BacktraceContrastiveMethod(BacktraceMethod):
    """DLBacktrace in contrastive mode: relevance for (positive) and against (negative) the
    target. The attribution is the positive map (``contrastive_output: positive``) or positive
    minus negative (``difference``); both maps are kept in the record's extras."""

    name = "backtrace_contrastive"
    mode = "contrastive"

    def __init__(self, model: nn.Module, context: ExplainContext, contrastive_output: str = "positive",
                 output: str = "softmax", options: Optional[dict[str, Any]] = None) -> None:
        super().__init__(model, context, output=output, options=options, contrastive_output=contrastive_output)
        self.contrastive_output = check_choice("contrastive_output", contrastive_output, CONTRASTIVE_OUTPUTS)

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        positive, negative = self._run(inputs, targets)
        self.last_extras = {"positive": positive.detach(), "negative": negative.detach()}
        return positive if self.contrastive_output == "positive" else positive - negative
