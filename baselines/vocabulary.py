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


# Options that were renamed: asking for an old name says which new one to use.
RENAMED = {
    "metric": {
        "token_auprc": "token_average_precision (what it computed; ERASER's average_precision) or "
                       "token_auprc_trapezoid (ERASER's auprc)",
        "token_f1": "token_r_precision (what it computed: k = the rationale's size) or token_hard_f1 "
                    "(ERASER's token F1 at a fixed fraction of the tokens)",
    },
}


def check_choice(what: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``, else one :class:`ConfigError` line naming it and
    every valid choice (and, for a renamed option, its new name)."""
    choices = list(choices)
    if value not in choices:
        renamed = RENAMED.get(what, {}).get(value)
        if renamed:
            raise ConfigError(f"{what} {value!r} was renamed: use {renamed}; "
                              f"valid choices: {', '.join(map(str, choices))}")
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


def sample_seed(seed: int, *parts: Any) -> int:
    """A seed for the random draws about one sample, from the run seed and the sample itself (the
    bytes of its input and target): the draws follow the sample, not its position in a batch or
    how many samples a run explains, so a sample gets the same draws in every run that holds it."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256(str(int(seed)).encode())
    for part in parts:
        array = part.detach().cpu().numpy() if hasattr(part, "detach") else np.asarray(part)
        digest.update(str(array.dtype).encode() + np.ascontiguousarray(array).tobytes())
    return int.from_bytes(digest.digest()[:4], "little")


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without parameters)."""
    import torch

    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")
