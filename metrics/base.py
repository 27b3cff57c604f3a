"""What every metric carries as data (its direction above all) and the call every metric answers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

DIRECTIONS = ("higher", "lower")
CATEGORIES = ("faithfulness", "robustness", "randomisation", "complexity", "localisation")
# The categories whose metrics explain again: perturbed inputs (robustness), a changed model or
# another class (randomisation). They need the method itself, not only its attributions.
REEXPLAINING = ("robustness", "randomisation")


@dataclass(frozen=True)
class MetricInfo:
    name: str
    category: str
    direction: str          # "higher" | "lower": which way is better
    attributions: str       # "signed" | "absolute": what the metric expects to be given
    batched: bool           # whether the model is called on batches (False: one sample a call)

    @property
    def reexplains(self) -> bool:
        """Whether the metric calls the method again (so fixed attributions cannot be scored by it)."""
        return self.category in REEXPLAINING


class Metric:
    """Subclasses set ``info`` and implement :meth:`__call__`; parameters come from the config and
    are recorded with every score."""

    info: ClassVar[MetricInfo]

    def __init__(self, **params: Any) -> None:
        # Hydra hands lists and mappings over as OmegaConf containers: keep plain ones, so the
        # parameters can be recorded as JSON and passed on to libraries.
        self.params = {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v
                       for k, v in params.items()}

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, a: Tensor,
                 explainer: Optional[Any] = None, ground_truth: Optional[Tensor] = None) -> np.ndarray:
        """Per-sample scores (length ``len(x)``); NaN where a score is undefined, never dropped.

        ``a`` are the attributions after channel reduction; ``explainer`` (a
        :class:`baselines.base.Explainer`) is re-run by robustness and randomisation metrics;
        ``ground_truth`` is a mask shaped like ``a`` for localisation metrics.
        """
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {**self.info.__dict__, "params": dict(self.params)}
