"""Controls that every table carries, so a reader sees the floor: seeded random noise, for
images an edge map of the input, and for text each token's rarity in the training split. None of
them reads the model's output or the target."""
from __future__ import annotations

import numpy as np
import torch
from skimage.filters import sobel
from torch import Tensor, nn

from .base import ExplainContext, Explainer
from .text_inputs import feature_mask
from .vocabulary import MODALITIES, check_choice

NOISES = ("normal", "uniform")


class RandomMethod(Explainer):
    """Independent noise per input element, seeded from the run seed; ``normal`` is signed
    (standard normal), ``uniform`` draws from [-1, 1) so it is signed too."""

    name = "random"
    modalities = MODALITIES
    deterministic = False
    reads_output = False

    def __init__(self, model: nn.Module, context: ExplainContext, distribution: str = "normal") -> None:
        super().__init__(model, context, distribution=distribution)
        self.distribution = check_choice("random distribution", distribution, NOISES)

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        gen = torch.Generator().manual_seed(self.next_seed())
        if self.distribution == "normal":
            noise = torch.randn(inputs.shape, generator=gen)
        else:
            noise = torch.rand(inputs.shape, generator=gen) * 2 - 1
        return noise.to(inputs.device)


class SobelMethod(Explainer):
    """Sobel edge magnitude of each input channel (skimage.filters.sobel): non-negative, model-
    and target-independent. A method that scores no better than this is reading the image, not
    the model."""

    name = "sobel"
    signed = False
    reads_output = False
    modalities = ("image",)

    def __init__(self, model: nn.Module, context: ExplainContext) -> None:
        super().__init__(model, context)

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        x = inputs.detach().cpu().double().numpy()
        edges = np.stack([np.stack([sobel(channel) for channel in sample]) for sample in x])
        return torch.from_numpy(edges).to(inputs.dtype).to(inputs.device)


class RarityMethod(Explainer):
    """Each token's surprisal under the training split's token frequencies,
    ``log(total + 1) - log(count + 1)`` (counts of the id among the training split's feature
    tokens; an id never seen there scores highest). Non-negative, model- and target-independent.
    On a corpus whose rationale words are rarer than the rest, this control agrees with the
    rationale without reading the model: a method has to beat it to show that it does."""

    name = "rarity"
    signed = False
    reads_output = False
    modalities = ("text",)

    def __init__(self, model: nn.Module, context: ExplainContext) -> None:
        super().__init__(model, context)
        if context.x_train is None or context.x_train.dtype.is_floating_point:
            raise ValueError("method 'rarity' counts tokens of the training split: it needs the training token ids "
                             "(ExplainContext.x_train); none were given")
        ids = context.x_train.detach().cpu().long()
        counted = ids[feature_mask(model, ids).cpu()]
        self.counts = torch.bincount(counted, minlength=1).double()
        self.total = float(len(counted))

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        ids = inputs.detach().cpu().long()
        counts = torch.zeros(ids.shape, dtype=torch.float64)
        seen = ids < len(self.counts)
        counts[seen] = self.counts[ids[seen]]
        surprisal = np.log(self.total + 1.0) - torch.log1p(counts)
        return surprisal.float().to(inputs.device)
