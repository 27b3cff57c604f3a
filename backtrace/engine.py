"""The engine: run a traced model on a batch, then walk its graph backwards applying the rules.

``Backtrace(model).predict(x)`` records every node's output; ``.eval(outs, ...)`` seeds the
relevance at the model output (by task) and hands it back node by node, vectorised over the
batch. :func:`explain` does both and returns the input relevance; it keeps only that node's
relevance and frees each recorded value once the walk is past it, which lowers its peak
memory. Image-shaped (4-D) inputs run in channels-last memory (faster
convolutions and pooling on CPU); returned relevance is in the usual contiguous layout.
"""
from __future__ import annotations

import copy
import weakref
from collections import OrderedDict
from typing import Any, Iterable, Optional, Sequence, Union

import torch
import torch.fx as fx
from torch import Tensor, nn

from backtrace.frontends import is_keras_model
from backtrace.ir import Graph
from backtrace.rules import RULES
from backtrace.rules.base import EvalOptions, safe_div, tree_add, tree_map, tree_zeros_like

MODES = ("default", "contrastive")
MODE_ALIASES = {"default": "default", "contrastive": "contrastive", "contrast": "contrastive"}
TASKS = ("binary-classification", "multi-class classification", "bbox-regression", "binary-segmentation")

Target = Union[None, int, Sequence[int], Tensor]


class _Recorder(fx.Interpreter):
    """Runs the traced module keeping the values the graph's nodes read (``wanted`` fx node
    names); every other intermediate (e.g. a convolution's output before a folded BatchNorm)
    is freed after its last use, as in a plain forward pass."""

    def __init__(self, gm: fx.GraphModule, wanted: set[str]) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.wanted = wanted
        self.kept: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        if n.name in self.wanted:
            self.kept[n.name] = value
        return value


class Backtrace:
    """DLBacktrace for a PyTorch model, traced once.

    The model is deep-copied (then put in eval mode and, with ``dtype``, converted), so the
    caller's model is never changed. Tensors stay on the model's device. A Keras model is
    first mirrored in torch by :mod:`backtrace.frontends.keras` (its inputs may then be NumPy
    arrays or TF tensors; :func:`explain` returns NumPy relevance for it).
    """

    def __init__(self, model: Any, dtype: Optional[torch.dtype] = None, fold_batchnorm: bool = True) -> None:
        from backtrace.frontends.torch_fx import trace

        self._to_torch: Any = _unchanged       # the user's inputs as torch tensors
        self._to_user: Any = _unchanged        # relevance in the user's framework
        if is_keras_model(model):
            from backtrace.frontends import keras as keras_frontend
            model = keras_frontend.to_torch(model)
            self._to_torch, self._to_user = keras_frontend.inputs_to_torch, keras_frontend.relevance_to_numpy
        work = copy.deepcopy(model).eval()
        if dtype is not None:
            work = work.to(dtype)
        self.model = work
        self.graph: Graph
        self.graph, self.module = trace(work, fold=fold_batchnorm)
        first = next(iter(work.parameters()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else (first.dtype if first is not None and first.is_floating_point()
                                                      else torch.get_default_dtype())
        self._recorded = {n.meta["fx"] for n in self.graph.nodes if n.kind != "constant"}
        self._read = _values_read(self.graph)

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.graph.inputs

    def _prepare(self, x: Any) -> Any:
        """Inputs on the model's device and dtype; 4-D float inputs (images) in channels-last
        memory, which the traced copy runs in: the same values, but oneDNN's convolutions and
        pooling are several times faster in that layout on CPU. The front end made the traced
        copy's ``view`` calls layout-free for this."""
        if isinstance(x, Tensor):
            x = x.to(self.device)
            if not x.is_floating_point():
                return x
            x = x.to(self.dtype)
            return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        if isinstance(x, (tuple, list)):
            return type(x)(self._prepare(v) for v in x)
        return x

    @torch.no_grad()
    def predict(self, *inputs: Any) -> dict[str, Any]:
        """Every node's output on a batch: ``{node name: value}`` in graph order (inputs first).

        Values computed from a 4-D input are channels-last tensors (see :meth:`_prepare`): the
        model's values, in a memory layout where ``.reshape`` works and ``.view`` may not."""
        if len(inputs) != len(self.graph.inputs):
            raise ValueError(f"the model takes {len(self.graph.inputs)} input(s) "
                             f"({', '.join(self.graph.inputs)}); got {len(inputs)}")
        return self._record(self._to_torch(inputs), self._recorded)

    def _record(self, inputs: Sequence[Any], wanted: set[str]) -> dict[str, Any]:
        """Run the traced copy keeping the outputs of the fx nodes in ``wanted``, by node name."""
        rec = _Recorder(self.module, wanted)
        rec.run(*[self._prepare(v) for v in inputs])
        outs: dict[str, Any] = OrderedDict()
        for node in self.graph.nodes:
            if node.kind != "constant" and node.meta["fx"] in rec.kept:
                outs[node.name] = rec.kept[node.meta["fx"]]
        return outs

    def eval(self, outs: dict[str, Any], mode: str = "default", task: str = "multi-class classification",
             multiplier: float = 100.0, scaler: Optional[float] = None, thresholding: float = 0.5,
             target: Target = None, embedding_reduction: str = "mean",
             keep: Optional[Iterable[str]] = None) -> dict[str, Any]:
        """Relevance of every node's output: ``{name: R}`` (contrastive: ``{name: (R+, R-)}``).

        ``keep`` names the nodes whose relevance to return (default: all); the others' are
        freed as soon as they have been handed on, which lowers the peak memory.
        """
        return self._relevance(dict(outs), mode=mode, task=task, multiplier=multiplier, scaler=scaler,
                               thresholding=thresholding, target=target, embedding_reduction=embedding_reduction,
                               keep=keep, release_values=False)

    def _relevance(self, values: dict[str, Any], mode: str, task: str, multiplier: float,
                   scaler: Optional[float], thresholding: float, target: Target, embedding_reduction: str,
                   keep: Optional[Iterable[str]], release_values: bool) -> dict[str, Any]:
        """The backward walk. ``values`` is owned by the walk: with ``release_values`` each node's
        recorded output is dropped once its own rule has run (its consumers ran before it)."""
        if mode not in MODE_ALIASES:
            raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)} (or 'contrast')")
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
        if embedding_reduction not in ("mean", "sum"):
            raise ValueError(f"unknown embedding_reduction {embedding_reduction!r}; choose one of: mean, sum")
        names = [n.name for n in self.graph.nodes if n.kind != "constant"]
        kept = set(names) if keep is None else set(keep)
        unknown = sorted(kept - set(names))
        if unknown:
            raise ValueError(f"unknown node name(s) in keep: {', '.join(map(repr, unknown))}; "
                             f"choose from: {', '.join(names)}")
        opts = EvalOptions(mode=MODE_ALIASES[mode], task=task, multiplier=float(multiplier), scaler=scaler,
                           thresholding=float(thresholding), embedding_reduction=embedding_reduction)
        contrastive = opts.mode == "contrastive"
        for node in self.graph.nodes:
            if node.kind == "constant":
                values[node.name] = node.params["value"]
        out_value = values[self.graph.output]
        dtype = out_value.dtype
        seed = start_relevance(out_value, opts, target)
        del out_value
        rel: dict[str, Any] = {self.graph.output: seed}
        zeros: dict[str, Any] = {}
        with torch.no_grad():
            for node in reversed(self.graph.nodes):
                if node.kind in ("input", "constant"):
                    continue
                r = rel.get(node.name) if node.name in kept else rel.pop(node.name, None)
                if r is not None:
                    rule = RULES[node.kind]
                    ins = [values.get(i) for i in node.inputs]
                    if contrastive:
                        res = rule.contrastive(node, ins, values.get(node.name), r, opts)
                    else:
                        res = rule.default(node, ins, values.get(node.name), r, opts)
                    del ins, r
                    for name, ri in zip(node.inputs, res):
                        if ri is None:
                            continue
                        rel[name] = ri if name not in rel else tree_add(rel[name], ri)
                    del res
                if release_values:
                    value = values.pop(node.name, None)
                    if node.name in kept and node.name not in rel and value is not None:
                        zeros[node.name] = _zeros_for(value, dtype)
        result: dict[str, Any] = OrderedDict()
        for name in names:
            if name not in kept:
                continue
            r = rel.get(name)
            if r is None:
                zero = zeros.get(name)
                if zero is None:
                    zero = _zeros_for(values[name], dtype)
                r = (zero, tree_zeros_like(zero)) if contrastive else zero
            result[name] = tree_map(_contiguous, r)
        return result


def _values_read(graph: Graph) -> set[str]:
    """fx names of the values a backward walk reads: the inputs, the output (the seed), and
    what each node's rule reads (see ``Rule.reads_inputs`` / ``reads_output``)."""
    by_name = {n.name: n for n in graph.nodes}
    names = set(graph.inputs) | {graph.output}
    for n in graph.nodes:
        if n.kind in ("input", "constant"):
            continue
        rule = RULES[n.kind]
        if rule.reads_inputs:
            names.update(n.inputs)
        if rule.reads_output:
            names.add(n.name)
    return {by_name[name].meta["fx"] for name in names if by_name[name].kind != "constant"}


def _unchanged(x: Any) -> Any:
    return x


def _contiguous(t: Any) -> Any:
    """Relevance in the usual memory layout (the rules may work channels-last)."""
    return t.contiguous() if isinstance(t, Tensor) else t


def _zeros_for(value: Any, dtype: torch.dtype) -> Any:
    def z(t: Any) -> Any:
        if isinstance(t, Tensor):
            return torch.zeros(t.shape, dtype=dtype, device=t.device)
        return t
    return tree_zeros_like(value) if not isinstance(value, Tensor) else z(value)


def _target_index(flat: Tensor, target: Target) -> Tensor:
    B = flat.shape[0]
    if target is None:
        return flat.argmax(dim=1)
    idx = torch.as_tensor(target, device=flat.device).long().reshape(-1)
    if idx.numel() == 1 and B != 1:
        idx = idx.expand(B)
    if idx.numel() != B:
        raise ValueError(f"target must be one class index or one per sample ({B}); got {idx.numel()} values")
    if (idx < 0).any() or (idx >= flat.shape[1]).any():
        raise ValueError(f"target index out of range [0, {flat.shape[1]}): {idx.tolist()}")
    return idx


def start_relevance(output: Tensor, opts: EvalOptions, target: Target = None) -> Any:
    """The relevance put on the model output, per task and mode (batch kept)."""
    B = output.shape[0]
    flat = output.reshape(B, -1)
    scaler, mult = opts.scaler, opts.multiplier
    contrastive = opts.mode == "contrastive"
    if opts.task == "binary-segmentation":
        mask = flat > opts.thresholding
        if scaler:
            count = mask.sum(dim=1, keepdim=True)
            pos = safe_div(mask * float(scaler), count.to(flat.dtype).expand_as(flat))
        else:
            pos = flat * mask
        if not contrastive:
            return (pos * mult).reshape(output.shape)
        le_one = flat.amax(dim=1, keepdim=True) <= 1
        neg = torch.where(mask, torch.where(le_one, 1 - flat, torch.zeros_like(flat)), flat)
        neg = _rescale(neg, scaler)
        return (pos * mult).reshape(output.shape), (neg * mult).reshape(output.shape)
    idx = _target_index(flat, target).unsqueeze(1)
    val = flat.gather(1, idx)
    if opts.task == "bbox-regression" and scaler:
        pos = torch.full_like(flat, float(scaler) / flat.shape[1])
    else:
        pos = torch.zeros_like(flat).scatter(1, idx, torch.full_like(val, float(scaler)) if scaler else val)
    if not contrastive:
        return (pos * mult).reshape(output.shape)
    if flat.shape[1] == 1:
        fill = torch.where(val < 1, 1 - val, torch.zeros_like(val))
    else:
        fill = torch.zeros_like(val)
    neg = _rescale(flat.clone().scatter(1, idx, fill), scaler)
    return (pos * mult).reshape(output.shape), (neg * mult).reshape(output.shape)


def _rescale(neg: Tensor, scaler: Optional[float]) -> Tensor:
    if not scaler:
        return neg
    total = neg.sum(dim=1, keepdim=True)
    return torch.where(total > 0, neg * safe_div(torch.full_like(total, float(scaler)), total), neg)


# explain() keeps the last few traced models: tracing once per model, not once per batch.
_CACHE: "OrderedDict[tuple[int, Optional[torch.dtype]], tuple[weakref.ref, tuple, Backtrace]]" = OrderedDict()
_CACHE_SIZE = 4


def _fingerprint(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or updated in place (or mode flips)."""
    return (model.training,) + tuple((t.data_ptr(), t._version) for t in list(model.parameters())
                                     + list(model.buffers()))


def _backtrace_for(model: Any, dtype: Optional[torch.dtype]) -> Backtrace:
    key = (id(model), dtype)
    hit = _CACHE.get(key)
    if is_keras_model(model):
        from backtrace.frontends.keras import fingerprint
        fp = fingerprint(model)
    else:
        fp = _fingerprint(model)
    if hit is not None and hit[0]() is model and hit[1] == fp:
        _CACHE.move_to_end(key)
        return hit[2]
    bt = Backtrace(model, dtype=dtype)
    _CACHE[key] = (weakref.ref(model), fp, bt)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return bt


def explain(model: Any, x: Any, mode: str = "default", target: Target = None,
            dtype: Optional[torch.dtype] = None, **options: Any) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """Input relevance of ``model`` on the batch ``x`` (shape of ``x``); in contrastive mode
    the pair ``(R+, R-)``. ``options``: ``task``, ``multiplier``, ``scaler``, ``thresholding``,
    ``embedding_reduction`` (see :meth:`Backtrace.eval`). For a Keras model ``x`` may be
    NumPy arrays or TF tensors and the relevance is NumPy."""
    bt = _backtrace_for(model, dtype)
    inputs = bt._to_torch(x if isinstance(x, tuple) else (x,))
    first = bt.graph.inputs[0]
    known = ("task", "multiplier", "scaler", "thresholding", "embedding_reduction")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(known)}")
    settings = {"task": "multi-class classification", "multiplier": 100.0, "scaler": None, "thresholding": 0.5,
                "embedding_reduction": "mean", **options}
    # only the values the rules read are recorded, and the walk frees each once it is used up
    if len(inputs) != len(bt.graph.inputs):
        bt.predict(*inputs)                                   # raises the one-line error
    rel = bt._relevance(bt._record(inputs, bt._read), mode=mode, target=target, keep=(first,), release_values=True,
                        **settings)
    return bt._to_user(rel[first])
