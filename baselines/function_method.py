"""A method of one's own given as a function, ``fn(inputs, targets) -> attributions``, behind the
:class:`~baselines.base.Explainer` interface: so it is scored by the same metrics as the
project's methods, re-explained by the robustness and randomisation metrics like them, and its
output checked the same way (shape, finiteness). It has no config file; the Python API
(``experiments.api.evaluate``) builds it."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from .base import ExplainContext, Explainer

AttributionFn = Callable[[Tensor, Tensor], Any]


class FunctionMethod(Explainer):
    """Attributions from ``fn(inputs, targets)``: a tensor or array shaped like ``inputs`` (images:
    or one map per pixel, (N, 1, H, W)). Taken as signed: a function returning magnitudes gives
    non-negative maps, which score the same either way."""

    name = "function"
    signed = True

    def __init__(self, model: nn.Module, context: ExplainContext, fn: AttributionFn, name: str = "function",
                 **params: Any) -> None:
        if not callable(fn):
            raise TypeError(f"method {name!r}: fn must be callable as fn(inputs, targets), got {type(fn).__name__}")
        super().__init__(model, context, **params)
        self.fn = fn
        self.name = name  # type: ignore[misc]  # this instance's own name, as given by the caller

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        out = self.fn(inputs, targets)
        if isinstance(out, Tensor):
            values = out.detach()
        else:
            try:
                values = torch.as_tensor(np.asarray(out, dtype=np.float32))
            except (TypeError, ValueError):
                raise TypeError(f"method {self.name!r} returned {type(out).__name__}; return a tensor or an array "
                                f"shaped like the inputs") from None
        values = values.to(device=inputs.device, dtype=torch.float32)
        bad = ~torch.isfinite(values.reshape(len(values), -1)).all(1) if values.ndim else ~torch.isfinite(values)
        if bool(bad.any()):
            raise ValueError(f"method {self.name!r} returned non-finite attributions for {int(bad.sum())} of "
                             f"{len(values)} samples (the first: sample {int(torch.nonzero(bad).flatten()[0])} of "
                             f"the batch); non-finite attributions are refused")
        return values

    def _check_shape(self, inputs: Tensor, values: Tensor) -> None:
        accepted = {tuple(inputs.shape)}
        if self.context.modality == "image" and inputs.ndim == 4:
            accepted.add((inputs.shape[0], 1, *inputs.shape[2:]))
        if tuple(values.shape) not in accepted:
            raise ValueError(f"method {self.name!r} returned attributions of shape {tuple(values.shape)}; expected "
                             f"the shape of the inputs {tuple(inputs.shape)}"
                             + (" (or (N, 1, H, W): one map per pixel)" if len(accepted) > 1 else ""))
