"""Front ends: turn a framework's model into a :class:`backtrace.ir.Graph`.

``torch_fx`` traces PyTorch modules; ``keras`` (imported only for Keras models, so torch-only
use never imports TensorFlow) mirrors a Keras 3 model in torch and hands it to ``torch_fx``.
"""
from __future__ import annotations

from typing import Any


def is_keras_model(model: Any) -> bool:
    """True for Keras models, told by the module of the model's classes (no keras import)."""
    return any((getattr(cls, "__module__", None) or "").split(".")[0] == "keras" for cls in type(model).__mro__)
