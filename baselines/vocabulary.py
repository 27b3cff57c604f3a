"""The words every layer shares, and the few helpers that go with them.

What a run can be told (modalities, the output function a method explains, how image channels are
reduced) is named here once, together with the one way a bad choice is refused
(:func:`check_choice`: :class:`ConfigError`, ``unknown X 'v'; valid choices: a, b``), the one
context that seeds a library call (:func:`seeded`) and where a model lives (:func:`device_of`).
It imports nothing of the project, so the methods, the metrics and the harness all stand on it,
and neither numpy nor torch until a helper runs: the command line's checks import it first.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:
    import torch

MODALITIES = ("tabular", "image", "text")
# What a model predicts, named as the engine names its tasks: a class per sample, or (images only)
# a dense label: a foreground mask, or one box per image.
TASKS = ("classification", "binary-segmentation", "bbox-regression")
DENSE_TASKS = TASKS[1:]
# The function of the model every method explains and every metric reads: the class
# probabilities or the raw class scores; or, for a dense task (segmentation, box regression), the
# value its head returns (baselines.dense_heads), explained as it is under the name ``identity``.
CLASS_OUTPUTS = ("softmax", "logits")
DENSE_OUTPUT = "identity"
OUTPUTS = (*CLASS_OUTPUTS, DENSE_OUTPUT)
# How image attributions (N, C, H, W) become one map per pixel before any metric sees them.
CHANNEL_REDUCTIONS = ("sum", "mean", "abs_sum", "max_abs", "none")


class ConfigError(ValueError):
    """A bad configured value (a run setting, a method's or a metric's parameter); its message is
    the one line shown to the user."""


def check_choice(what: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``, else one :class:`ConfigError` line naming it and
    every valid choice."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; valid choices: {', '.join(map(str, choices))}")
    return value


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed the global torch, numpy and random generators for a library call that draws from them
    (captum's NoiseTunnel, shap's KernelExplainer, Quantus), restoring their previous states
    afterwards so the call neither depends on nor disturbs anything else in the process."""
    import numpy as np
    import torch

    np_state = np.random.get_state()
    py_state = random.getstate()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without parameters)."""
    import torch

    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")
