"""Front ends turn a model into the IR: ``torch_fx`` (symbolic tracing, once per model) and
``torch_export`` (torch.export's ATen graph, once per input signature).

A front end gives ``(Graph, runner)`` for a batch of inputs; ``runner(inputs, wanted)``
returns ``{IR node name: value}`` for the node names in ``wanted``. The engine picks one by
model type (:func:`choose_frontend`) and never looks inside it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence

from torch import Tensor, nn

from backtrace.errors import UnsupportedOperation
from backtrace.ir import Graph

Runner = Callable[[Sequence[Any], set], dict]


class FrontEnd:
    """``graph``: the model's graph when it is known before any input (else ``None``);
    ``lower(names, values, keywords)``: the graph and runner for these inputs;
    ``channels_last``: whether 4-D float inputs should come in channels-last memory."""

    name = ""
    graph: Optional[Graph] = None
    module: Any = None
    channels_last = False

    def lower(self, names: tuple[str, ...], values: tuple[Any, ...], keywords: bool) -> tuple[Graph, Runner]:
        raise NotImplementedError


class FxFrontEnd(FrontEnd):
    """torch.fx: traced once; the traced copy runs in channels-last memory (see the engine)."""

    name = "fx"
    channels_last = True

    def __init__(self, model: nn.Module, fold: bool) -> None:
        from backtrace.frontends.torch_fx import lower

        self.graph, self.runner, self.module = lower(model, fold=fold)

    def lower(self, names: tuple[str, ...], values: tuple[Any, ...], keywords: bool) -> tuple[Graph, Runner]:
        return self.graph, self.runner


class ExportFrontEnd(FrontEnd):
    """torch.export: exported once per input signature (names, shapes, dtypes), the last few kept."""

    name = "export"
    cache_size = 8

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.exports: "OrderedDict[tuple, tuple[Graph, Runner]]" = OrderedDict()

    def lower(self, names: tuple[str, ...], values: tuple[Any, ...], keywords: bool) -> tuple[Graph, Runner]:
        from backtrace.frontends.torch_export import export

        key = (names, keywords) + tuple((tuple(v.shape), v.dtype) if isinstance(v, Tensor) else repr(v)
                                        for v in values)
        hit = self.exports.get(key)
        if hit is None:
            hit = self.exports[key] = export(self.model, values, names, keywords)
            while len(self.exports) > self.cache_size:
                self.exports.popitem(last=False)
        self.exports.move_to_end(key)
        return hit


def needs_export(model: nn.Module) -> bool:
    """Models torch.fx cannot map: Hugging Face transformers (fx cannot trace them) and
    PyTorch's own attention modules (fx sees one opaque attention function)."""
    for m in model.modules():
        if isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            return True
        if type(m).__module__.startswith("transformers."):
            return True
    return False


def choose_frontend(model: nn.Module, frontend: str, fold: bool) -> FrontEnd:
    """``"fx"``, ``"export"``, or ``"auto"``: torch.fx unless :func:`needs_export` or symbolic
    tracing itself fails (an op torch.fx traces but cannot map is still its named error)."""
    if frontend == "export" or (frontend == "auto" and needs_export(model)):
        return ExportFrontEnd(model)
    try:
        return FxFrontEnd(model, fold)
    except UnsupportedOperation as exc:
        if frontend == "auto" and exc.node == "<trace>":     # symbolic tracing itself failed
            return ExportFrontEnd(model)
        raise
