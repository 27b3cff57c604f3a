"""The engine: run a traced model on a batch, then walk its graph backwards applying the rules.

``Backtrace(model).predict(x)`` records every node's output; ``.eval(outs, ...)`` seeds the
relevance at the model output (by task) and hands it back node by node, vectorised over the
batch. :func:`explain` does both and returns the input relevance.
"""
from __future__ import annotations

import copy
import weakref
from collections import OrderedDict
from typing import Any, Optional, Sequence, Union

import torch
import torch.fx as fx
from torch import Tensor, nn

from backtrace.ir import Graph
from backtrace.rules import RULES
from backtrace.rules.base import EvalOptions, safe_div, tree_add, tree_zeros_like

MODES = ("default", "contrastive")
MODE_ALIASES = {"default": "default", "contrastive": "contrastive", "contrast": "contrastive"}
TASKS = ("binary-classification", "multi-class classification", "bbox-regression", "binary-segmentation")

Target = Union[None, int, Sequence[int], Tensor]


class _Recorder(fx.Interpreter):
    """Runs the traced module keeping every intermediate value."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)


class Backtrace:
    """DLBacktrace for a PyTorch model, traced once.

    The model is deep-copied (then put in eval mode and, with ``dtype``, converted), so the
    caller's model is never changed. Tensors stay on the model's device.
    """

    def __init__(self, model: nn.Module, dtype: Optional[torch.dtype] = None, fold_batchnorm: bool = True) -> None:
        from backtrace.frontends.torch_fx import trace

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
        self._fx_nodes = {n.name: n for n in self.module.graph.nodes}

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.graph.inputs

    def _prepare(self, x: Any) -> Any:
        if isinstance(x, Tensor):
            x = x.to(self.device)
            return x.to(self.dtype) if x.is_floating_point() else x
        if isinstance(x, (tuple, list)):
            return type(x)(self._prepare(v) for v in x)
        return x

    @torch.no_grad()
    def predict(self, *inputs: Any) -> dict[str, Any]:
        """Every node's output on a batch: ``{node name: value}`` in graph order (inputs first)."""
        if len(inputs) != len(self.graph.inputs):
            raise ValueError(f"the model takes {len(self.graph.inputs)} input(s) "
                             f"({', '.join(self.graph.inputs)}); got {len(inputs)}")
        rec = _Recorder(self.module)
        rec.run(*[self._prepare(v) for v in inputs])
        outs: dict[str, Any] = OrderedDict()
        for node in self.graph.nodes:
            if node.kind == "constant":
                continue
            outs[node.name] = rec.env[self._fx_nodes[node.meta["fx"]]]
        return outs

    def eval(self, outs: dict[str, Any], mode: str = "default", task: str = "multi-class classification",
             multiplier: float = 100.0, scaler: Optional[float] = None, thresholding: float = 0.5,
             target: Target = None, embedding_reduction: str = "mean") -> dict[str, Any]:
        """Relevance of every node's output: ``{name: R}`` (contrastive: ``{name: (R+, R-)}``)."""
        if mode not in MODE_ALIASES:
            raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)} (or 'contrast')")
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
        if embedding_reduction not in ("mean", "sum"):
            raise ValueError(f"unknown embedding_reduction {embedding_reduction!r}; choose one of: mean, sum")
        opts = EvalOptions(mode=MODE_ALIASES[mode], task=task, multiplier=float(multiplier), scaler=scaler,
                           thresholding=float(thresholding), embedding_reduction=embedding_reduction)
        contrastive = opts.mode == "contrastive"
        values = dict(outs)
        for node in self.graph.nodes:
            if node.kind == "constant":
                values[node.name] = node.params["value"]
        out_value = values[self.graph.output]
        seed = start_relevance(out_value, opts, target)
        rel: dict[str, Any] = {self.graph.output: seed}
        with torch.no_grad():
            for node in reversed(self.graph.nodes):
                r = rel.get(node.name)
                if r is None or node.kind in ("input", "constant"):
                    continue
                rule = RULES[node.kind]
                ins = [values[i] for i in node.inputs]
                if contrastive:
                    res = rule.contrastive(node, ins, values[node.name], r, opts)
                else:
                    res = rule.default(node, ins, values[node.name], r, opts)
                for name, ri in zip(node.inputs, res):
                    if ri is None:
                        continue
                    rel[name] = ri if name not in rel else tree_add(rel[name], ri)
        result: dict[str, Any] = OrderedDict()
        for node in self.graph.nodes:
            if node.kind == "constant":
                continue
            r = rel.get(node.name)
            if r is None:
                zero = _zeros_for(values[node.name], out_value.dtype)
                r = (zero, _zeros_for(values[node.name], out_value.dtype)) if contrastive else zero
            result[node.name] = r
        return result


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


def _backtrace_for(model: nn.Module, dtype: Optional[torch.dtype]) -> Backtrace:
    key = (id(model), dtype)
    hit = _CACHE.get(key)
    fp = _fingerprint(model)
    if hit is not None and hit[0]() is model and hit[1] == fp:
        _CACHE.move_to_end(key)
        return hit[2]
    bt = Backtrace(model, dtype=dtype)
    _CACHE[key] = (weakref.ref(model), fp, bt)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return bt


def explain(model: nn.Module, x: Any, mode: str = "default", target: Target = None,
            dtype: Optional[torch.dtype] = None, **options: Any) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """Input relevance of ``model`` on the batch ``x`` (shape of ``x``); in contrastive mode
    the pair ``(R+, R-)``. ``options``: ``task``, ``multiplier``, ``scaler``, ``thresholding``,
    ``embedding_reduction`` (see :meth:`Backtrace.eval`)."""
    bt = _backtrace_for(model, dtype)
    inputs = x if isinstance(x, tuple) else (x,)
    outs = bt.predict(*inputs)
    rel = bt.eval(outs, mode=mode, target=target, **options)
    return rel[bt.graph.inputs[0]]
