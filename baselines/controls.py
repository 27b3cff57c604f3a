"""Controls that every table carries, so a reader sees the floor: seeded random noise, and for
images an edge map of the input (which ignores the model and the target entirely)."""
from __future__ import annotations

import numpy as np
import torch
from skimage.filters import sobel
from torch import Tensor, nn

from .base import ExplainContext, Explainer
from .vocabulary import MODALITIES, check_choice

NOISES = ("normal", "uniform")


class RandomMethod(Explainer):
    """Independent noise per input element, seeded from the run seed; ``normal`` is signed
    (standard normal), ``uniform`` draws from [-1, 1) so it is signed too."""

    name = "random"
    modalities = MODALITIES
    deterministic = False

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
    modalities = ("image",)

    def __init__(self, model: nn.Module, context: ExplainContext) -> None:
        super().__init__(model, context)

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        x = inputs.detach().cpu().double().numpy()
        edges = np.stack([np.stack([sobel(channel) for channel in sample]) for sample in x])
        return torch.from_numpy(edges).to(inputs.dtype).to(inputs.device)
