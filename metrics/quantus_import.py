"""Import Quantus without importing TensorFlow.

Quantus 0.6.0 runs ``import tensorflow as tf`` at module level in several of its modules whenever
TensorFlow is installed, even for PyTorch models: seconds of start-up and TensorFlow's log lines on
stderr in every torch-only process. Here Quantus is imported while TensorFlow is hidden from it,
and the ``tf`` name those modules use afterwards (only in ``isinstance(model, tf.keras.Model)``
checks) resolves to the real TensorFlow once something else has imported it, and to a class no
model is an instance of until then.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

# Quantus modules that bind ``tf`` at import time when TensorFlow is installed.
_TF_USERS = ("quantus.helpers.utils", "quantus.helpers.model.model_interface", "quantus.helpers.model.models")


class _NotImported:
    """No object is an instance of this: TensorFlow is not loaded, so no model is a Keras one."""


class _LazyTensorFlow:
    """Stands for ``tensorflow`` inside Quantus: the real module once loaded, else a stub."""

    def __getattr__(self, name: str) -> Any:
        tf = sys.modules.get("tensorflow")
        if tf is not None:
            return getattr(tf, name)
        if name == "keras":
            return SimpleNamespace(Model=_NotImported)
        raise AttributeError(f"tensorflow is not imported (quantus asked for tf.{name})")


def import_quantus() -> ModuleType:
    if "quantus" in sys.modules:
        return sys.modules["quantus"]
    # Quantus imports zennit's modules whenever zennit is installed, and zennit's own __init__
    # imports torchvision, which cannot import here: enter zennit without its __init__ first.
    from baselines.lrp_packages import enter_zennit

    enter_zennit()
    if "tensorflow" in sys.modules:  # already loaded by the user: nothing to avoid
        return importlib.import_module("quantus")
    sys.modules["tensorflow"] = None  # type: ignore[assignment]  # find_spec -> None, import fails
    try:
        quantus = importlib.import_module("quantus")
    finally:
        del sys.modules["tensorflow"]
    for name in _TF_USERS:
        module = sys.modules.get(name)
        if module is not None:
            module.tf = _LazyTensorFlow()  # type: ignore[attr-defined]
    return quantus
