"""The engine: run a traced model on a batch, then walk its graph backwards applying the rules.

``Backtrace(model).predict(x)`` records every node's output; ``.eval(outs, ...)`` seeds the
relevance at the model output (by task) and hands it back node by node, vectorised over the
batch. :func:`explain` does both and returns the input relevance; it keeps only that node's
relevance and frees each recorded value once the walk is past it, which lowers its peak
memory. Image-shaped (4-D) inputs run in channels-last memory (faster
convolutions and pooling on CPU); returned relevance is in the usual contiguous layout.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

from backtrace.frontends import FRONTENDS, fingerprint
from backtrace.inputs import check_finite, check_integer, integer_inputs, normalise_inputs, primary_name
from backtrace.ir import Graph
from backtrace.rules import RULES
from backtrace.rules.base import EvalOptions, safe_div, tree_add, tree_map, tree_zeros_like

MODES = ("default", "contrastive")
MODE_ALIASES = {"default": "default", "contrastive": "contrastive", "contrast": "contrastive"}
TASKS = ("binary-classification", "multi-class classification", "bbox-regression", "binary-segmentation")
GENERATION = "generation"     # language models' next-token logits; see :func:`generation_relevance`

Target = Union[None, int, Sequence[int], Tensor]
# Model dtypes whose rounding the attention rules amplify (see ``Rule.ill_conditioned``).
_ROUNDED = (torch.float32, torch.float16, torch.bfloat16)


class Backtrace:
    """DLBacktrace for a PyTorch model, traced once.

    The model is deep-copied (then put in eval mode and, with ``dtype``, converted), so the
    caller's model is never changed. Tensors stay on the model's device.

    ``frontend``: ``"fx"`` (torch.fx symbolic tracing, once), ``"export"`` (torch.export, once
    per input signature: shapes, dtypes, names), or ``"auto"``: torch.fx unless it cannot trace
    the model or the model holds modules only torch.export sees through (Hugging Face
    transformers, ``nn.MultiheadAttention``). A Keras model gets the ``"keras"`` front end (with
    ``"auto"`` too): it is mirrored in torch by :mod:`backtrace.frontends.keras`, its inputs may
    be NumPy arrays or TF tensors (channels-last images as Keras takes them), and
    :func:`explain` returns NumPy relevance for it.

    Integer inputs: token ids take relevance through their embedding lookup only; what the
    model computes from integer inputs alone (padding masks, counts, position ids) is an
    ``"aux"`` value that takes none (``x * mask`` scales ``x``; ``s / mask.sum(1)`` divides by a
    constant); a layer with weights applied to such a value is a named error. torch.fx learns
    which inputs hold token ids from the embeddings they feed; ``integer_inputs`` (name ->
    dtype) names others (:func:`explain` passes the integer inputs it is given), and a graph for
    any other integer input is built when one is given.
    """

    def __init__(self, model: Any, dtype: Optional[torch.dtype] = None, fold_batchnorm: bool = True,
                 frontend: str = "auto", integer_inputs: Optional[dict[str, Any]] = None) -> None:
        from backtrace.frontends import choose_frontend

        self._frontend = choose_frontend(model, frontend, fold_batchnorm, dtype, integer_inputs)
        work = self.model = self._frontend.model           # the front end's copy, in eval mode
        first = next(iter(work.parameters()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else (first.dtype if first is not None and first.is_floating_point()
                                                      else torch.get_default_dtype())
        self.frontend = self._frontend.name
        self.module = self._frontend.module
        # whether the graph holds an ill-conditioned rule (None: not known before the first
        # lowering); :func:`explain` then evaluates in float64
        self.precise: Optional[bool] = None
        self._graph: Optional[Graph] = None
        if self._frontend.graph is not None:
            self._graph, self._runner = self._frontend.lower((), (), False)
            self._use(self._graph)

    def _use(self, graph: Graph) -> None:
        self._graph = graph
        self._recorded = {n.name for n in graph.nodes if n.kind != "constant"}
        self._read = _values_read(graph)

    @property
    def graph(self) -> Graph:
        """The model's graph (with torch.export: the graph of the latest input signature)."""
        if self._graph is None:
            raise RuntimeError("this model is traced with torch.export, which needs example inputs: "
                               "call predict(inputs) (or explain) first")
        return self._graph

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.graph.inputs

    def _prepare(self, x: Any) -> Any:
        """Inputs on the model's device and dtype; with torch.fx, 4-D float inputs (images) in
        channels-last memory, which the traced copy runs in: the same values, but oneDNN's
        convolutions and pooling are several times faster in that layout on CPU. The front end
        made the traced copy's ``view`` calls layout-free for this."""
        if isinstance(x, Tensor):
            x = x.to(self.device)
            if not x.is_floating_point():
                return x
            x = x.to(self.dtype)
            if x.dim() == 4 and self._frontend.channels_last:
                return x.contiguous(memory_format=torch.channels_last)
            return x
        if isinstance(x, (tuple, list)):
            return type(x)(self._prepare(v) for v in x)
        return x

    def _lower(self, inputs: Any) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """The input names and values (checked, prepared) in the graph's order; the front end's
        graph and runner for them made current (torch.export exports once per signature)."""
        known = self._frontend.graph
        inputs = self._frontend.inputs(inputs)            # e.g. a Keras model's NumPy/TF inputs
        names, values, keywords = normalise_inputs(self.model, inputs, known)
        values = tuple(self._prepare(v) for v in values)
        check_finite(names, values)
        graph, self._runner = self._frontend.lower(names, values, keywords)    # built for these dtypes
        check_integer(names, values, graph)
        if graph is not self._graph:
            self._use(graph)
        return names, values

    @torch.no_grad()
    def predict(self, *inputs: Any) -> dict[str, Any]:
        """Every node's output on a batch: ``{node name: value}`` in graph order (inputs first).

        ``inputs``: the model's positional inputs, or one mapping of keyword inputs (as a
        tokenizer returns them). Values computed from a 4-D input are channels-last tensors
        with torch.fx (see :meth:`_prepare`): the model's values, in a memory layout where
        ``.reshape`` works and ``.view`` may not."""
        batch = inputs[0] if len(inputs) == 1 and isinstance(inputs[0], Mapping) else inputs
        if self._frontend.graph is not None and not isinstance(batch, Mapping) and len(batch) != len(self.graph.inputs):
            raise ValueError(f"the model takes {len(self.graph.inputs)} input(s) "
                             f"({', '.join(self.graph.inputs)}); got {len(inputs)}")
        _, values = self._lower(batch)
        return self._runner(values, self._recorded)

    def _record(self, inputs: Sequence[Any], wanted: set[str]) -> dict[str, Any]:
        """Run the model keeping the values of the IR nodes in ``wanted`` (prepared inputs)."""
        with torch.no_grad():
            return self._runner(inputs, wanted)

    def eval(self, outs: dict[str, Any], mode: str = "default", task: str = "multi-class classification",
             multiplier: float = 100.0, scaler: Optional[float] = None, thresholding: float = 0.5,
             target: Target = None, embedding_reduction: str = "mean",
             keep: Optional[Iterable[str]] = None, position: Any = None) -> dict[str, Any]:
        """Relevance of every node's output: ``{name: R}`` (contrastive: ``{name: (R+, R-)}``).

        ``keep`` names the nodes whose relevance to return (default: all); the others' are
        freed as soon as they have been handed on, which lowers the peak memory. ``position``:
        with ``task="generation"``, the position(s) whose next-token logit is explained.
        """
        return self._relevance(dict(outs), mode=mode, task=task, multiplier=multiplier, scaler=scaler,
                               thresholding=thresholding, target=target, embedding_reduction=embedding_reduction,
                               keep=keep, release_values=False, position=position)

    def _relevance(self, values: dict[str, Any], mode: str, task: str, multiplier: float,
                   scaler: Optional[float], thresholding: float, target: Target, embedding_reduction: str,
                   keep: Optional[Iterable[str]], release_values: bool, position: Any = None,
                   seed_totals: Optional[list] = None) -> dict[str, Any]:
        """The backward walk. ``values`` is owned by the walk: with ``release_values`` each node's
        recorded output is dropped once its own rule has run (its consumers ran before it)."""
        if mode not in MODE_ALIASES:
            raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)} (or 'contrast')")
        if task not in TASKS and task != GENERATION:
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
        if opts.task == GENERATION:
            seed = generation_relevance(out_value, opts, target, position)
        else:
            seed = start_relevance(out_value, opts, target)
        del out_value
        if seed_totals is not None:
            seed_totals.append(tree_map(lambda t: t.reshape(t.shape[0], -1).sum(1), seed))
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
    """IR names of the values a backward walk reads: the inputs, the output (the seed), and
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
    return {name for name in names if by_name[name].kind != "constant"}


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


def generation_relevance(output: Tensor, opts: EvalOptions, target: Target = None, position: Any = None) -> Any:
    """Seed for a language model's logits ``(batch, positions, vocabulary)``: the multi-class
    seed of the row at ``position`` (one index, or one per sample; default the last), target
    default its argmax (the next token), every other position none."""
    if output.dim() != 3:
        raise ValueError(f"task 'generation' needs logits shaped (batch, positions, vocabulary); got "
                         f"{tuple(output.shape)}")
    B, T = output.shape[:2]
    pos = torch.as_tensor(T - 1 if position is None else position, device=output.device).long().reshape(-1)
    pos = pos.expand(B) if pos.numel() == 1 else pos
    if pos.numel() != B or bool(((pos < -T) | (pos >= T)).any()):
        raise ValueError(f"position must be one index or one per sample ({B}) in [-{T}, {T}); got {pos.tolist()}")
    pos = pos % T
    rows = torch.arange(B, device=output.device)
    seed = start_relevance(output[rows, pos], replace(opts, task="multi-class classification"), target)

    def place(r: Tensor) -> Tensor:
        full = torch.zeros_like(output)
        full[rows, pos] = r
        return full

    return tree_map(place, seed)


def _rescale(neg: Tensor, scaler: Optional[float]) -> Tensor:
    if not scaler:
        return neg
    total = neg.sum(dim=1, keepdim=True)
    return torch.where(total > 0, neg * safe_div(torch.full_like(total, float(scaler)), total), neg)


# explain() keeps the last few traced models: tracing once per model, not once per batch.
_CACHE: "OrderedDict[tuple[int, Optional[torch.dtype]], tuple[weakref.ref, tuple, Backtrace]]" = OrderedDict()
_CACHE_SIZE = 6          # a model and its float64 copy (see explain's dtype) count twice


def _backtrace_for(model: Any, dtype: Optional[torch.dtype], frontend: str = "auto",
                   integer_inputs: Optional[dict[str, Any]] = None) -> Backtrace:
    key = (id(model), dtype, frontend, tuple(sorted(integer_inputs or ())))
    hit = _CACHE.get(key)
    fp = fingerprint(model)
    if hit is not None and hit[0]() is model and hit[1] == fp:
        _CACHE.move_to_end(key)
        return hit[2]
    bt = Backtrace(model, dtype=dtype, frontend=frontend, integer_inputs=integer_inputs)
    _CACHE[key] = (weakref.ref(model), fp, bt)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return bt


def explain(model: Any, x: Any, mode: str = "default", target: Target = None,
            dtype: Optional[torch.dtype] = None, *, frontend: str = "auto", return_all: bool = False,
            return_conservation: bool = False, position: Any = None, **options: Any) -> Any:
    """Input relevance of ``model`` on the batch ``x``; in contrastive mode the pair ``(R+, R-)``.

    ``x``: a tensor, a tuple of tensors, or a mapping of keyword inputs (as a tokenizer returns
    them). The relevance returned is that of the primary input (``input_ids``,
    ``inputs_embeds`` or ``pixel_values`` of a mapping, else the first input): shaped like it
    for float inputs, per token ``(batch, seq_len)`` for token ids. A Hugging Face output is
    read at ``.logits``. For a Keras model ``x`` may be NumPy arrays or TF tensors, and the
    relevance (and conservation ratio) is NumPy.

    Token ids: the relevance reaching each looked-up embedding vector ``(batch, seq_len, dim)``
    is reduced over ``dim``, by ``embedding_reduction="mean"`` (the reference's choice; not
    conservative) or ``"sum"`` (conservative), and a token read by several lookups (word and
    token-type embeddings of one id input) sums them. Position ids, padding masks and whatever
    else the model computes from integer inputs alone take none, so a pad token's relevance is 0
    unless the model reads its embedding. In contrastive mode both maps are formed this way:
    ``(R+, R-)``, each ``(batch, seq_len)``.

    ``return_all``: a dict of every input's relevance by name instead. ``return_conservation``:
    also each sample's total input relevance (all inputs) over its starting relevance, as
    ``(result, ratio)`` (contrastive: a ratio per map). ``task="generation"``: the logit of
    ``target`` (default: the argmax next token) at ``position`` (default: the last real token
    by the ``attention_mask``, else the last position) of a language model's output.
    ``options``: ``task``, ``multiplier``, ``scaler``, ``thresholding``, ``embedding_reduction``
    (see :meth:`Backtrace.eval`). ``frontend``: see :class:`Backtrace`.

    ``dtype``: the dtype the model is evaluated and explained in. ``None``: the model's own,
    except that a float32 (or half) model whose graph holds attention (``matmul`` between two
    activations, fused ``attention``) is evaluated in float64 and its relevance handed back in
    the model's dtype: those rules split a product of two activations in proportion to its
    terms, which amplifies the rounding of their inputs wherever the product nearly cancels, and
    float32 rounding differs with the batch's shape, so float32 relevance would depend on which
    sequences share a batch and on their padding (on a fine-tuned MiniLM by up to 1e-1 of a
    map's largest value). Pass ``dtype=torch.float32`` to explain in float32 all the same."""
    known = ("task", "multiplier", "scaler", "thresholding", "embedding_reduction")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(known)}")
    settings = {"task": "multi-class classification", "multiplier": 100.0, "scaler": None, "thresholding": 0.5,
                "embedding_reduction": "mean", **options}
    ints = integer_inputs(model, x)
    bt = _backtrace_for(model, dtype, frontend, ints)
    if bt._frontend.graph is not None and not isinstance(x, Mapping):
        n_given = len(x) if isinstance(x, tuple) else 1
        if n_given != len(bt.graph.inputs):
            bt.predict(*(x if isinstance(x, tuple) else (x,)))     # raises the one-line error
    returned = bt.dtype
    if dtype is None and bt.dtype in _ROUNDED and bt.precise is not False:
        if bt.precise is None:              # decided once per traced model, from its graph
            bt._lower(x)
            bt.precise = any(RULES[n.kind].ill_conditioned for n in bt.graph.nodes if n.kind in RULES)
        if bt.precise:
            bt = _backtrace_for(model, torch.float64, frontend, ints)
    names, values = bt._lower(x)
    if settings["task"] == GENERATION and position is None and "attention_mask" in names:
        mask = values[names.index("attention_mask")]
        steps = torch.arange(mask.shape[1], device=mask.device)
        position = (mask.ne(0).long() * (steps + 1)).argmax(dim=1)     # the last real token
    primary = primary_name(names)
    keep = names if (return_all or return_conservation) else (primary,)
    totals: list = []
    # only the values the rules read are recorded, and the walk frees each once it is used up
    rel = bt._relevance(bt._record(values, bt._read), mode=mode, target=target, keep=keep, release_values=True,
                        position=position, seed_totals=totals, **settings)
    result = {name: rel[name] for name in names} if return_all else rel[primary]
    if return_conservation:
        result = (result, _conservation([rel[name] for name in names], totals[0]))
    if bt.dtype != returned:                # evaluated in float64: handed back in the model's dtype
        result = _cast(result, returned)
    return bt._frontend.relevance(result)


def _cast(tree: Any, dtype: torch.dtype) -> Any:
    if isinstance(tree, Mapping):
        return {k: _cast(v, dtype) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_cast(v, dtype) for v in tree)
    return tree.to(dtype) if isinstance(tree, Tensor) and tree.is_floating_point() else tree


def _conservation(relevances: Sequence[Any], seed_total: Any) -> Any:
    """Per sample: the total relevance over all inputs, over the total put on the output."""
    if isinstance(seed_total, tuple):
        return tuple(_conservation([r[k] for r in relevances], seed_total[k]) for k in range(2))
    kept = sum(r.reshape(r.shape[0], -1).sum(1) for r in relevances)
    return safe_div(kept, seed_total)
