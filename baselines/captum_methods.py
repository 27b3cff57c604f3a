"""Gradient-based baselines, computed by captum: saliency, gradient x input, Integrated Gradients
and SmoothGrad.

They explain the run's ``output``: the softmax probability of the target (the default, the same
function every method of a table explains) or its logit.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from torch import Tensor, nn

from .base import ExplainContext, Explainer, check_choice, seeded

GRADIENT_MODALITIES = ("tabular", "image")  # token ids (text) have no input gradient


def _leaf(inputs: Tensor) -> Tensor:
    """A fresh leaf that requires grad (captum would set it itself, with a warning per call)."""
    return inputs.detach().requires_grad_(True)


class SaliencyMethod(Explainer):
    """Absolute input gradient (Simonyan et al.), captum's default: unsigned."""

    name = "saliency"
    signed = False
    modalities = GRADIENT_MODALITIES

    def __init__(self, model: nn.Module, context: ExplainContext, output: str = "logits") -> None:
        super().__init__(model, context, output=output)
        self.method = Saliency(self.forward_fn(output))

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return self.method.attribute(_leaf(inputs), target=targets, abs=True)


class GradientXInputMethod(Explainer):
    """Input times its gradient: signed."""

    name = "gradxinput"

    def __init__(self, model: nn.Module, context: ExplainContext, output: str = "logits") -> None:
        super().__init__(model, context, output=output)
        self.method = InputXGradient(self.forward_fn(output))

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return self.method.attribute(_leaf(inputs), target=targets)


IG_BASELINES = ("zero", "mean")


class IntegratedGradientsMethod(Explainer):
    """Integrated Gradients (Sundararajan et al.) from a baseline: ``zero``, ``mean`` (the mean
    training input) or a constant. Signed; sums to f(x) - f(baseline) up to the quadrature error."""

    name = "ig"
    budget_params = ("n_steps",)
    absent_params = ("baseline",)

    def __init__(self, model: nn.Module, context: ExplainContext, n_steps: int = 50,
                 baseline: Union[str, float] = "zero", method: str = "gausslegendre",
                 internal_batch_size: Optional[int] = None, output: str = "logits") -> None:
        super().__init__(model, context, n_steps=n_steps, baseline=baseline, method=method,
                         internal_batch_size=internal_batch_size, output=output)
        if isinstance(baseline, str):
            check_choice("ig baseline", baseline, IG_BASELINES)
            if baseline == "mean" and context.x_train is None:
                raise ValueError("ig baseline 'mean' needs the training inputs (context.x_train); none were given")
        self.n_steps = int(n_steps)
        self.baseline = baseline
        self.integration = method
        self.internal_batch_size = internal_batch_size
        self._mean: Optional[Tensor] = None
        self.method = IntegratedGradients(self.forward_fn(output))

    def baselines_for(self, inputs: Tensor) -> Union[Tensor, float]:
        if self.baseline == "zero":
            return torch.zeros_like(inputs)
        if self.baseline == "mean":
            if self._mean is None:
                self._mean = self.context.x_train.float().mean(0, keepdim=True)
            return self._mean.to(inputs.device).expand_as(inputs).contiguous()
        return torch.full_like(inputs, float(self.baseline))

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return self.method.attribute(
            _leaf(inputs), baselines=self.baselines_for(inputs), target=targets, n_steps=self.n_steps,
            method=self.integration, internal_batch_size=self.internal_batch_size,
        )


class SmoothGradMethod(Explainer):
    """SmoothGrad (Smilkov et al.): the input gradient averaged over ``nt_samples`` noisy copies
    of the input, Gaussian noise of standard deviation ``stdevs`` (in input units). Signed (the
    raw gradient is averaged, not its absolute value). Noise is seeded from the run seed."""

    name = "smoothgrad"
    budget_params = ("nt_samples", "stdevs")
    deterministic = False

    def __init__(self, model: nn.Module, context: ExplainContext, nt_samples: int = 25,
                 stdevs: float = 0.15, nt_samples_batch_size: Optional[int] = None,
                 output: str = "logits") -> None:
        super().__init__(model, context, nt_samples=nt_samples, stdevs=stdevs,
                         nt_samples_batch_size=nt_samples_batch_size, output=output)
        self.nt_samples = int(nt_samples)
        self.stdevs = float(stdevs)
        self.nt_samples_batch_size = nt_samples_batch_size
        self.method = NoiseTunnel(Saliency(self.forward_fn(output)))

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        # NoiseTunnel draws its noise from torch's global generator: seed it for this call only.
        with seeded(self.next_seed()):
            return self.method.attribute(
                _leaf(inputs), nt_type="smoothgrad", nt_samples=self.nt_samples, stdevs=self.stdevs,
                nt_samples_batch_size=self.nt_samples_batch_size, target=targets, abs=False,
            )
