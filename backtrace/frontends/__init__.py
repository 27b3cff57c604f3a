"""Front ends turn a model into the IR: ``torch_fx`` (symbolic tracing, once per model),
``torch_export`` (torch.export's ATen graph, once per input signature) and ``keras`` (a Keras 3
model mirrored in torch, then traced by ``torch_fx``; imported only for Keras models, so
torch-only use never imports TensorFlow). The two torch front ends are one walk over an fx
graph (``lowering``), each with its table from targets to handlers; Keras has its table of
layers (``keras_layers``).

A front end holds the engine's working copy of the model (``model``: the caller's model is
never changed) and gives ``(Graph, runner)`` for a batch of inputs; ``runner(inputs, wanted)``
returns ``{IR node name: value}`` for the node names in ``wanted``. It also moves inputs into
torch and relevance back into the user's framework. The engine picks one by model type
(:func:`choose_frontend`) and never looks inside it.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from backtrace.errors import UnsupportedOperation
from backtrace.ir import Graph

Runner = Callable[[Sequence[Any], set], dict]
FRONTENDS = ("auto", "fx", "export", "keras")


class FrontEnd:
    """``model``: the torch module the engine runs (a copy); ``graph``: the model's graph when
    it is known before any input (else ``None``); ``lower(names, values, keywords)``: the graph
    and runner for these inputs; ``channels_last``: whether 4-D float inputs should come in
    channels-last memory; ``inputs`` / ``relevance``: the user's inputs as torch values, and
    relevance as the user's framework holds arrays (both unchanged for torch models)."""

    name = ""
    model: Any = None
    graph: Optional[Graph] = None
    module: Any = None
    channels_last = False

    def lower(self, names: tuple[str, ...], values: tuple[Any, ...], keywords: bool) -> tuple[Graph, Runner]:
        raise NotImplementedError

    def inputs(self, x: Any) -> Any:
        return x

    def relevance(self, r: Any) -> Any:
        return r


class FxFrontEnd(FrontEnd):
    """torch.fx: traced once; the traced copy runs in channels-last memory (see the engine).

    ``graph`` treats as integer the inputs an embedding reads (token ids) and
    ``integer_inputs`` (name -> dtype; :func:`backtrace.explain` passes the integer/bool inputs
    it is given); inputs given as integer/bool tensors besides those (attention masks) get a
    graph of their own, built from the same trace once per such set (what the model computes
    from them alone is ``aux``)."""

    name = "fx"
    channels_last = True

    def __init__(self, model: nn.Module, fold: bool, integer_inputs: Optional[dict[str, Any]] = None) -> None:
        from backtrace.frontends.torch_fx import lower, token_id_inputs

        self.model = model
        self.fold = fold
        self.graph, self.runner, self.module = lower(model, fold=fold, integer_inputs=integer_inputs)
        self.known_integer = set(integer_inputs or ())
        self.token_ids = token_id_inputs(self.module) if isinstance(self.module, torch.fx.GraphModule) else set()
        self.variants: dict[tuple, tuple[Graph, Runner]] = {}

    def lower(self, names: tuple[str, ...], values: tuple[Any, ...], keywords: bool) -> tuple[Graph, Runner]:
        from backtrace.frontends.torch_fx import lower_for

        integer = {name: v.dtype for name, v in zip(names, values) if isinstance(v, Tensor)
                   and not (v.is_floating_point() or v.is_complex())
                   and name not in self.token_ids | self.known_integer}
        if not integer:
            return self.graph, self.runner
        key = tuple(sorted((k, str(d)) for k, d in integer.items()))
        if key not in self.variants:
            self.variants[key] = lower_for(self.module, self.fold, integer)
        return self.variants[key]


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


class KerasFrontEnd(FxFrontEnd):
    """Keras 3: the model's torch mirror (:func:`backtrace.frontends.keras.to_torch`, built from
    copies of its weights), traced once by torch.fx. Inputs are NumPy arrays, TF or torch
    tensors in Keras's own layout (channels-last images as given: the mirror permutes them
    itself, so the engine leaves their memory layout alone); relevance comes back as NumPy."""

    name = "keras"
    channels_last = False

    def __init__(self, model: Any, fold: bool, dtype: Optional[torch.dtype] = None) -> None:
        from backtrace.frontends.keras import to_torch

        mirror = to_torch(model).eval()
        super().__init__(mirror.to(dtype) if dtype is not None else mirror, fold)

    def inputs(self, x: Any) -> Any:
        from backtrace.frontends.keras import inputs_to_torch

        return inputs_to_torch(x)

    def relevance(self, r: Any) -> Any:
        from backtrace.frontends.keras import relevance_to_numpy

        if isinstance(r, dict):
            return {name: self.relevance(v) for name, v in r.items()}
        if isinstance(r, tuple):
            return tuple(self.relevance(v) for v in r)
        return relevance_to_numpy(r)


def is_keras_model(model: Any) -> bool:
    """True for Keras models, told by the module of the model's classes (no keras import)."""
    return any((getattr(cls, "__module__", None) or "").split(".")[0] == "keras" for cls in type(model).__mro__)


def needs_export(model: nn.Module) -> bool:
    """Models torch.fx cannot map: Hugging Face transformers (fx cannot trace them) and
    PyTorch's own attention modules (fx sees one opaque attention function)."""
    for m in model.modules():
        if isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            return True
        if type(m).__module__.startswith("transformers."):
            return True
    return False


def fingerprint(model: Any) -> tuple:
    """Changes whenever a weight of the model is replaced or updated in place (or, for a torch
    model, its training mode flips): when a cached trace of it is stale."""
    if is_keras_model(model):
        from backtrace.frontends.keras import fingerprint as keras_fingerprint

        return keras_fingerprint(model)
    return (model.training,) + tuple((t.data_ptr(), t._version) for t in list(model.parameters())
                                     + list(model.buffers()))


def choose_frontend(model: Any, frontend: str, fold: bool, dtype: Optional[torch.dtype] = None,
                    integer_inputs: Optional[dict[str, Any]] = None) -> FrontEnd:
    """The front end for ``model`` (the caller's; the front end works on a copy, converted to
    ``dtype``). A Keras model (told by its class's module) gets the Keras front end (``"auto"``
    or ``"keras"``). A torch model: ``"fx"``, ``"export"``, or ``"auto"``: torch.fx unless
    :func:`needs_export` or symbolic tracing itself fails (an op torch.fx traces but cannot map
    is still its named error). ``integer_inputs``: see :class:`FxFrontEnd`."""
    if frontend not in FRONTENDS:
        raise ValueError(f"unknown frontend {frontend!r}; choose one of: {', '.join(FRONTENDS)}")
    if is_keras_model(model):
        if frontend not in ("auto", "keras"):
            raise ValueError(f"frontend {frontend!r} is for PyTorch models; a Keras model takes: auto, keras")
        return KerasFrontEnd(model, fold, dtype)
    if frontend == "keras":
        raise ValueError(f"frontend 'keras' is for Keras models, not {type(model).__name__}; "
                         f"choose one of: auto, fx, export")
    work = copy.deepcopy(model).eval()
    if dtype is not None:
        work = work.to(dtype)
    if frontend == "export" or (frontend == "auto" and needs_export(work)):
        return ExportFrontEnd(work)
    try:
        return FxFrontEnd(work, fold, integer_inputs)
    except UnsupportedOperation as exc:
        if frontend == "auto" and exc.node == "<trace>":     # symbolic tracing itself failed
            return ExportFrontEnd(work)
        raise
