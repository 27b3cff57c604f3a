"""Gradient-based baselines, computed by captum: saliency, gradient x input, Integrated Gradients
and SmoothGrad.

They explain the run's ``output``: the softmax probability of the target (the default, the same
function every method of a table explains) or its logit.

Text (token ids have no gradient): the same methods on the output of the token-embedding layer
(``model.embedding_layer()``), by captum's layer variants (LayerGradientXActivation,
LayerIntegratedGradients); each token's attribution is the sum over its hidden units
(``text_inputs.HIDDEN_REDUCTION``), the same for every method. Saliency takes the absolute value
per hidden unit before that sum, as it does per pixel; SmoothGrad multiplies by the embedding
before it (see :class:`SmoothGradMethod`).
"""
from __future__ import annotations

from typing import Any, Optional, Union

import torch
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    NoiseTunnel,
    Saliency,
)
from torch import Tensor, nn

from .base import ExplainContext, Explainer
from .text_inputs import HIDDEN_REDUCTION, TOKEN_BASELINES, EmbeddingsAsInput, baseline_ids, embedding_layer, reduce_hidden
from .vocabulary import MODALITIES, check_choice, seeded

GRADIENT_MODALITIES = MODALITIES  # text: gradients at the token embeddings


class _TextGradients:
    """Declares, for text, how per-hidden-unit attributions became one per token."""

    context: ExplainContext

    def declared(self) -> dict[str, dict[str, Any]]:
        out = super().declared()  # type: ignore[misc]
        if self.context.modality == "text":
            out["reduction"] = {"hidden": HIDDEN_REDUCTION}
        return out


def _leaf(inputs: Tensor) -> Tensor:
    """A fresh leaf that requires grad (captum would set it itself, with a warning per call)."""
    return inputs.detach().requires_grad_(True)


class SaliencyMethod(_TextGradients, Explainer):
    """Absolute input gradient (Simonyan et al.), captum's default: unsigned. Text: the absolute
    gradient at each hidden unit of the token embedding, summed over the hidden units."""

    name = "saliency"
    signed = False
    modalities = GRADIENT_MODALITIES

    def __init__(self, model: nn.Module, context: ExplainContext, output: str = "logits") -> None:
        super().__init__(model, context, output=output)
        if context.modality == "text":
            # the layer's gradient alone: LayerGradientXActivation without the activation factor
            self.method = LayerGradientXActivation(self.forward_fn(output), embedding_layer(model),
                                                   multiply_by_inputs=False)
        else:
            self.method = Saliency(self.forward_fn(output))

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if self.context.modality == "text":
            return reduce_hidden(self.method.attribute(inputs, target=targets).abs())
        return self.method.attribute(_leaf(inputs), target=targets, abs=True)


class GradientXInputMethod(_TextGradients, Explainer):
    """Input times its gradient: signed. Text: the token embedding times its gradient, summed
    over the hidden units."""

    name = "gradxinput"
    modalities = GRADIENT_MODALITIES

    def __init__(self, model: nn.Module, context: ExplainContext, output: str = "logits") -> None:
        super().__init__(model, context, output=output)
        if context.modality == "text":
            self.method = LayerGradientXActivation(self.forward_fn(output), embedding_layer(model))
        else:
            self.method = InputXGradient(self.forward_fn(output))

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if self.context.modality == "text":
            return reduce_hidden(self.method.attribute(inputs, target=targets))
        return self.method.attribute(_leaf(inputs), target=targets)


IG_BASELINES = ("zero", "mean")


class IntegratedGradientsMethod(_TextGradients, Explainer):
    """Integrated Gradients (Sundararajan et al.) from a baseline: ``zero``, ``mean`` (the mean
    training input) or a constant. Signed; sums to f(x) - f(baseline) up to the quadrature error.

    Text: captum's LayerIntegratedGradients on the token embeddings, from the embedding of the
    same sentence with every feature token replaced by ``token_baseline`` (``mask``: [MASK],
    ``pad``: [PAD], whose embedding is zero); [CLS], [SEP] and padding stay as they are."""

    name = "ig"
    budget_params = ("n_steps",)
    absent_params = ("baseline",)
    modalities = GRADIENT_MODALITIES

    def __init__(self, model: nn.Module, context: ExplainContext, n_steps: int = 50,
                 baseline: Union[str, float] = "zero", method: str = "gausslegendre",
                 internal_batch_size: Optional[int] = None, output: str = "logits",
                 token_baseline: str = "mask") -> None:
        super().__init__(model, context, n_steps=n_steps, baseline=baseline, method=method,
                         internal_batch_size=internal_batch_size, output=output, token_baseline=token_baseline)
        self.text = context.modality == "text"
        if self.text:
            check_choice("ig token_baseline", token_baseline, TOKEN_BASELINES)
        elif isinstance(baseline, str):
            check_choice("ig baseline", baseline, IG_BASELINES)
            if baseline == "mean" and context.x_train is None:
                raise ValueError("ig baseline 'mean' needs the training inputs (context.x_train); none were given")
        if internal_batch_size is not None and (isinstance(internal_batch_size, bool) or int(internal_batch_size) < 1):
            raise ValueError(f"ig internal_batch_size must be a positive integer or null; got {internal_batch_size!r}")
        self.n_steps = int(n_steps)
        self.baseline = baseline
        self.token_baseline = token_baseline
        self.integration = method
        self.internal_batch_size = internal_batch_size
        self._mean: Optional[Tensor] = None
        if self.text:
            self.method = LayerIntegratedGradients(self.forward_fn(output), embedding_layer(model))
        else:
            self.method = IntegratedGradients(self.forward_fn(output))

    def declared(self) -> dict[str, dict[str, Any]]:
        out = super().declared()
        if self.text:
            out["absent"] = {"token_baseline": self.token_baseline}
        return out

    def baselines_for(self, inputs: Tensor) -> Union[Tensor, float]:
        if self.text:
            return baseline_ids(self.model, inputs, self.token_baseline)
        if self.baseline == "zero":
            return torch.zeros_like(inputs)
        if self.baseline == "mean":
            if self._mean is None:
                self._mean = self.context.x_train.float().mean(0, keepdim=True)
            return self._mean.to(inputs.device).expand_as(inputs).contiguous()
        return torch.full_like(inputs, float(self.baseline))

    def batch_for(self, n_inputs: int) -> Optional[int]:
        """``internal_batch_size`` (inputs x steps per forward pass), raised to the batch's size
        where it is smaller: captum then evaluates one step of every input per pass anyway, with a
        warning on every call; asking for it directly gives the same result without one."""
        if self.internal_batch_size is None:
            return None
        return max(int(self.internal_batch_size), int(n_inputs))

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        values = self.method.attribute(
            inputs if self.text else _leaf(inputs), baselines=self.baselines_for(inputs), target=targets,
            n_steps=self.n_steps, method=self.integration, internal_batch_size=self.batch_for(len(inputs)),
        )
        return reduce_hidden(values) if self.text else values


class SmoothGradMethod(_TextGradients, Explainer):
    """SmoothGrad (Smilkov et al.): the input gradient averaged over ``nt_samples`` noisy copies
    of the input, Gaussian noise of standard deviation ``stdevs`` (in input units). Signed (the
    raw gradient is averaged, not its absolute value). Noise is seeded from the run seed.

    Text: the noise goes on the token embeddings (all positions), ``stdevs`` in units of the
    standard deviation of the embedding table's entries (the embeddings' own scale: a random-init
    BERT's is 0.02, a trained one's larger). ``multiply_by_inputs`` (null: true for text, false
    otherwise) multiplies the averaged gradient by the input before the channel or hidden-unit sum
    (SmoothGrad x input). For text it must: BERT's token embedding goes straight into a LayerNorm,
    whose output does not change when one constant is added to every hidden unit, so the gradient
    there sums to zero over the hidden units and the plain gradient's sum is zero for every token."""

    name = "smoothgrad"
    budget_params = ("nt_samples", "stdevs")
    deterministic = False
    modalities = GRADIENT_MODALITIES

    def __init__(self, model: nn.Module, context: ExplainContext, nt_samples: int = 25,
                 stdevs: float = 0.15, nt_samples_batch_size: Optional[int] = None,
                 output: str = "logits", multiply_by_inputs: Optional[bool] = None) -> None:
        if multiply_by_inputs is None:
            multiply_by_inputs = context.modality == "text"
        super().__init__(model, context, nt_samples=nt_samples, stdevs=stdevs,
                         nt_samples_batch_size=nt_samples_batch_size, output=output,
                         multiply_by_inputs=bool(multiply_by_inputs))
        self.multiply_by_inputs = bool(multiply_by_inputs)
        self.nt_samples = int(nt_samples)
        self.stdevs = float(stdevs)
        self.nt_samples_batch_size = nt_samples_batch_size
        if context.modality == "text":
            # NoiseTunnel adds noise to the explained function's inputs, and token ids cannot take
            # it: the function explained is the model of its embeddings (EmbeddingsAsInput).
            self.layer = embedding_layer(model)
            with torch.no_grad():
                scale = float(self.layer.weight.float().std())
            self.text_stdevs = self.stdevs * scale
            self.method = NoiseTunnel(Saliency(EmbeddingsAsInput(self.forward_fn(output), self.layer)))
        else:
            self.method = NoiseTunnel(Saliency(self.forward_fn(output)))

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        # NoiseTunnel draws its noise from torch's global generator: seed it for this call only.
        with seeded(self.next_seed()):
            if self.context.modality != "text":
                grads = self.method.attribute(
                    _leaf(inputs), nt_type="smoothgrad", nt_samples=self.nt_samples, stdevs=self.stdevs,
                    nt_samples_batch_size=self.nt_samples_batch_size, target=targets, abs=False,
                )
                return grads * inputs if self.multiply_by_inputs else grads
            with torch.no_grad():
                embeddings = self.layer(inputs)
            grads = self.method.attribute(
                _leaf(embeddings), nt_type="smoothgrad", nt_samples=self.nt_samples, stdevs=self.text_stdevs,
                nt_samples_batch_size=self.nt_samples_batch_size, target=targets, abs=False,
                additional_forward_args=(inputs,),
            )
            return reduce_hidden(grads * embeddings if self.multiply_by_inputs else grads)
