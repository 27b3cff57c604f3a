"""DLBacktrace (this project's engine, ``backtrace.explain``) behind the common interface.

For classification the method explains the run's ``output``: with ``softmax`` (the paper's
classifiers end in a softmax) the engine sees ``nn.Sequential(model, nn.Softmax(dim=-1))``; with
``logits`` the model itself. Relevance starts at the target class (the harness's label or
prediction, not the engine's own argmax).

Default mode is not signed: the rule gives every contribution, positive or negative, relevance of
the sign of the output it came from, so a sample's map has one sign throughout (that of its
starting value) and says how much, not which way. Contrastive mode's positive map is unsigned for
the same reason; its ``difference`` map (positive minus negative) is signed.

A Keras model (``experiments.zoo.keras_models.KerasClassifier``) is explained through its Keras model
(with a Keras softmax appended for ``softmax``) by the engine's Keras front end; inputs and
relevance are moved between the harness's layout and Keras's.

A dense task's head (``baselines.dense_heads``) is explained by the engine's own task on the
network (``binary-segmentation`` with the head's ``thresholding``, ``bbox-regression``), which
starts from the value the head returns: the same value every other method explains.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from .base import ExplainContext, Explainer
from .dense_heads import DenseHead
from .vocabulary import MODALITIES, check_choice

CONTRASTIVE_OUTPUTS = ("positive", "difference")


class BacktraceMethod(Explainer):
    """DLBacktrace in its default mode; ``options`` go to the engine unchanged."""

    name = "backtrace"
    modalities = MODALITIES
    mode = "default"
    signed = False

    def __init__(self, model: nn.Module, context: ExplainContext, output: str = "softmax",
                 options: Optional[dict[str, Any]] = None, **params: Any) -> None:
        super().__init__(model, context, output=output, options=options, **params)
        self.options = dict(self.params.get("options") or {})
        self.keras = getattr(model, "framework", "torch") == "keras"
        if isinstance(model, DenseHead):
            if self.options.get("scaler"):   # it would start every sample from the same constant
                raise ValueError(f"backtrace option scaler={self.options['scaler']!r} starts a {model.task} "
                                 f"explanation from a constant, not from the value the head defines "
                                 f"({model.describe()}); leave it out")
            self.explained, task = model.backtrace_view()
            clash = sorted(k for k, v in task.items() if k in self.options and self.options[k] != v)
            if clash:
                raise ValueError(f"backtrace options {', '.join(f'{k}={self.options[k]!r}' for k in clash)} contradict "
                                 f"the model's head ({', '.join(f'{k}={task[k]!r}' for k in clash)}); leave them out")
            self.options.update(task)
        else:
            self.explained = model.with_output(output) if self.keras else self.forward_fn(output)

    def _run(self, inputs: Tensor, targets: Tensor) -> Any:
        """The engine's relevance; each sample's conservation (total input relevance over its
        starting relevance: how much the explanation kept) goes to the extras, for the record."""
        from backtrace import explain  # the engine; imported on use so baselines load without it

        if not self.keras:
            result, kept = explain(self.explained, inputs, mode=self.mode, target=targets, return_conservation=True,
                                   **self.options)
        else:
            rel, ratio = explain(self.explained, self.model.to_keras(inputs), mode=self.mode, target=targets.cpu(),
                                 return_conservation=True, **self.options)
            back = self.model.from_keras
            result = tuple(back(r).to(inputs.device) for r in rel) if isinstance(rel, tuple) \
                else back(rel).to(inputs.device)
            kept = tuple(torch.from_numpy(k) for k in ratio) if isinstance(ratio, tuple) else torch.from_numpy(ratio)
        if isinstance(kept, tuple):
            self.last_extras.update({"conservation_positive": kept[0].detach(), "conservation_negative": kept[1].detach()})
        else:
            self.last_extras["conservation"] = kept.detach()
        return result

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return self._run(inputs, targets)


class BacktraceContrastiveMethod(BacktraceMethod):
    """DLBacktrace in contrastive mode: relevance for (positive) and against (negative) the
    target. The attribution is the positive map (``contrastive_output: positive``) or positive
    minus negative (``difference``); both maps are kept in the record's extras."""

    name = "backtrace_contrastive"
    mode = "contrastive"
    outputs = ("softmax",)
    output_note = "its negative map starts from the other classes' probability mass"

    def __init__(self, model: nn.Module, context: ExplainContext, contrastive_output: str = "positive",
                 output: str = "softmax", options: Optional[dict[str, Any]] = None) -> None:
        super().__init__(model, context, output=output, options=options, contrastive_output=contrastive_output)
        self.contrastive_output = check_choice("contrastive_output", contrastive_output, CONTRASTIVE_OUTPUTS)
        self.signed = self.contrastive_output == "difference"

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        positive, negative = self._run(inputs, targets)
        self.last_extras.update({"positive": positive.detach(), "negative": negative.detach()})
        return positive if self.contrastive_output == "positive" else positive - negative
