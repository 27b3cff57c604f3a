"""Front ends turn a model into the IR: ``torch_fx`` (symbolic tracing, once per model) and
``torch_export`` (torch.export's ATen graph, once per input signature).

Each gives ``(Graph, runner)``; ``runner(inputs, wanted)`` returns ``{IR node name: value}``.
"""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

from backtrace.errors import UnsupportedOperation


def needs_export(model: nn.Module) -> bool:
    """Models torch.fx cannot map: Hugging Face transformers (fx cannot trace them) and
    PyTorch's own attention modules (fx sees one opaque attention function)."""
    for m in model.modules():
        if isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            return True
        if type(m).__module__.startswith("transformers."):
            return True
    return False


def choose_frontend(model: nn.Module, frontend: str, fold: bool) -> tuple[str, Optional[tuple[Any, Any, Any]]]:
    """``(name, lowered)``: ``lowered`` is torch.fx's ``(graph, runner, module)``, or ``None``
    for torch.export (which traces at the first call, with the inputs)."""
    if frontend == "export" or (frontend == "auto" and needs_export(model)):
        return "export", None
    from backtrace.frontends.torch_fx import lower

    try:
        return "fx", lower(model, fold=fold)
    except UnsupportedOperation as exc:
        if frontend == "auto" and exc.node == "<trace>":     # symbolic tracing itself failed
            return "export", None
        raise
