"""The torch.export front end: models torch.fx cannot trace (Hugging Face transformers, ...) to a
:class:`~backtrace.ir.Graph`.

``torch.export`` records the ATen ops the model runs on example inputs (the exact shapes, so a
graph is built per input signature; the engine caches them). ATen ops map onto the same op kinds
as the torch.fx front end (``aten.linear`` -> ``"linear"``, ``aten.view`` -> ``"reshape"``, ...:
one line of :data:`TABLE`) plus the kinds transformers need (``"matmul"``, ``"attention"``,
``"where"``, ``"interpolate"``).

Which values carry relevance is decided as in :mod:`backtrace.frontends.lowering`, with:

- integer inputs told by the example values' dtypes: token ids and attention masks carry none,
  an embedding lookup of ids does;
- everything computed from constants alone (position ids, rotary tables) is ``"aux"`` too;
- an integer input that the model feeds to an op torch refuses to run on integers is named
  (found by exporting again with that input cast);
- a reduction's statistic (the ``rsqrt(mean(x^2))`` of RMSNorm) multiplying a live value is a
  scale, so decomposed normalisations pass relevance through as LayerNorm does;
- an elementwise function built from several elementwise ops of one tensor (the tanh form of
  GELU that GPT-2 spells out) is one ``"pointwise"`` op of that tensor, an activation.

A front end returns ``(Graph, runner)``: ``runner(inputs, wanted)`` runs the exported program
and returns ``{IR node name: value}`` for the node names in ``wanted``.
"""
from __future__ import annotations

import operator
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.fx as fx
from torch import Tensor, nn

from backtrace.errors import UnsupportedOperation
from backtrace.frontends.lowering import (Handler, Lowering, Runner, Unmapped, add, by_target, cat, check_supported,
                                          conv_params, dense_params, getitem, handler, mark_activations,
                                          maxpool_params, node_args, prune_unused, runner, same, split, unlowered,
                                          with_fn)
from backtrace.inputs import check_integer, integer_input_error
from backtrace.ir import Graph
from backtrace.rules import RULES

aten = torch.ops.aten

_STATISTICS = {aten.mean, aten.sum, aten.var, aten.std, aten.var_mean, aten.linalg_vector_norm, aten.norm,
               aten.amax, aten.max}
_PRODUCTS = (aten.mm, aten.matmul, aten.bmm)
_SKIP = {aten._assert_tensor_metadata, aten.sym_size, aten.sym_constrain_range_for_size, aten._assert_scalar}
_NO_RULE = "no rule for this ATen op"
_HOW_TO = ("write the op with supported ones, or register a rule for it (backtrace.rules.register); "
           "models torch.fx can trace use frontend='fx'")


def _packet(target: Any) -> Any:
    return getattr(target, "overloadpacket", target)


def _op_name(target: Any) -> str:
    name = getattr(target, "__name__", None) or str(target)
    return f"aten.{name}" if isinstance(target, torch._ops.OpOverload) else name


def _val(n: Any) -> Any:
    return n.meta.get("val") if isinstance(n, fx.Node) else n


def _smaller(operand: fx.Node, n: fx.Node) -> bool:
    """``operand`` is broadcast in ``n`` (a per-row statistic scaling a whole row)."""
    a, b = _val(operand), _val(n)
    return isinstance(a, Tensor) and isinstance(b, Tensor) and a.numel() < b.numel()


def _is_param(v: Any) -> bool:
    return isinstance(v, fx.Node) and v.op == "get_attr"


# --- handlers -------------------------------------------------------------------------------------

@handler("linear")
def _linear(b: Lowering, n: fx.Node, ins: list) -> None:
    args = n.args
    b.emit(n, "linear", ins[:1], dense_params(b.const(args[1]), b.const(args[2] if len(args) > 2 else None)))


@handler("linear")
def _addmm(b: Lowering, n: fx.Node, ins: list) -> None:
    if n.args[1] is not ins[0]:
        raise Unmapped("the live operand must be the first factor")
    b.emit(n, "linear", ins[:1], dense_params(b.const(n.args[2]).t(), b.const(n.args[0])))


@handler("conv1d", "conv2d")
def _conv(b: Lowering, n: fx.Node, ins: list) -> None:
    a = list(n.args) + [None, 1, 0, 1, 1][len(n.args) - 2:]
    dims = 1 if _packet(n.target) is aten.conv1d else 2
    b.emit(n, f"conv{dims}d", ins[:1], conv_params(b.const(a[1]), b.const(a[2]), dims, a[3], a[4], a[5], a[6]))


@handler("max_pool1d", "max_pool2d")
def _max_pool(b: Lowering, n: fx.Node, ins: list) -> None:
    a = list(n.args) + [None, None, 0, 1, False][len(n.args) - 1:]
    dims = 1 if _packet(n.target) is aten.max_pool1d else 2
    b.emit(n, f"max_pool{dims}d", ins[:1], maxpool_params(dims, a[1], a[2] or None, a[3], a[4], a[5]))


@handler("embedding")
def _embedding(b: Lowering, n: fx.Node, ins: list) -> None:
    b.emit(n, "embedding", [n.args[1]])


@handler("add")
def _rsub(b: Lowering, n: fx.Node, ins: list) -> None:
    raise Unmapped("add/sub with alpha != 1")


@handler("mul", "scale")
def _mul(b: Lowering, n: fx.Node, ins: list) -> None:
    tensors = [a for a in n.args[:2] if isinstance(a, fx.Node)]
    others = [t for t in tensors if t not in b.live or (t in b.stat and _smaller(t, n))]
    lives = [t for t in tensors if t not in others]
    b.emit(n, "mul" if len(lives) == 2 else "scale", lives if len(lives) == 2 else lives + others)


@handler("scale")
def _div(b: Lowering, n: fx.Node, ins: list) -> None:
    d = n.args[1]
    if isinstance(d, fx.Node) and d in b.live and not (d in b.stat and _smaller(d, n)):
        raise Unmapped("division by a value computed from the input")
    b.emit(n, "scale", [a for a in n.args[:2] if isinstance(a, fx.Node)])


@handler("matmul", "linear")
def _product(b: Lowering, n: fx.Node, ins: list) -> None:
    x, w = n.args[0], n.args[1]
    if x in b.live and w in b.live:
        b.emit(n, "matmul", [x, w])
    elif x in b.live and _is_param(w) and _val(w).dim() == 2:
        b.emit(n, "linear", [x], dense_params(b.const(w).t(), None))
    else:
        raise Unmapped("a product of a live value with a computed (non-parameter) matrix")


@handler("matmul")
def _baddbmm(b: Lowering, n: fx.Node, ins: list) -> None:
    # mask + a @ b (nn.MultiheadAttention's scores): the product by the matmul rule, the
    # additive mask taking none, as for the eager path's add of the mask
    summand, x, y = n.args[:3]
    if summand in b.live or not (x in b.live and y in b.live):
        raise Unmapped("baddbmm with a live summand or a constant factor")
    b.emit(n, "matmul", [x, y], {"recompute": True})


@handler("attention")
def _attention(b: Lowering, n: fx.Node, ins: list) -> None:
    names = ["query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"]
    a = dict(zip(names, n.args))
    a.update(n.kwargs)
    mask = a.get("attn_mask")
    if isinstance(mask, fx.Node) and mask in b.live:
        raise Unmapped("an attention mask computed from the explained input")
    b.emit(n, "attention", [a["query"], a["key"], a["value"]] + ([mask] if isinstance(mask, fx.Node) else []),
           {"is_causal": bool(a.get("is_causal", False)), "scale": a.get("scale"),
            "enable_gqa": bool(a.get("enable_gqa", False))})


@handler("where")
def _where(b: Lowering, n: fx.Node, ins: list) -> None:
    cond, x, y = n.args[:3]
    if cond in b.live:
        raise Unmapped("a condition computed from the explained input")
    if not all(isinstance(t, fx.Node) for t in (cond, x, y)):
        raise Unmapped("where with python scalars")
    b.emit(n, "where", [cond, x, y])


@handler("masked_fill")
def _masked_fill(b: Lowering, n: fx.Node, ins: list) -> None:
    if n.args[1] in b.live or isinstance(n.args[2], fx.Node):
        raise Unmapped("a mask computed from the explained input")
    b.emit(n, "masked_fill", [ins[0], n.args[1]])


# --- the table: ATen op (overload packet) -> handler ---------------------------------------------

TABLE: dict[Any, Handler] = by_target({
    # layers with weights and lookups
    (aten.linear,): _linear, aten.addmm: _addmm, (aten.conv1d, aten.conv2d): _conv,
    aten.layer_norm: same("layer_norm"), aten.rms_norm: same("rms_norm"), aten.group_norm: same("group_norm"),
    aten.instance_norm: same("instance_norm"),
    aten.batch_norm: unlowered("batch_norm", _NO_RULE), aten.lstm: unlowered("lstm", _NO_RULE),
    aten.embedding: _embedding,
    # activations
    (aten.relu, aten.relu_): same("relu"),
    aten.relu6: same("relu6"),
    aten.leaky_relu: same("leaky_relu"),
    aten.elu: same("elu"),
    aten.gelu: same("gelu"),
    (aten.silu, aten.silu_): same("silu"),
    aten.mish: same("mish"),
    aten.softplus: same("softplus"),
    (aten.hardtanh, aten.hardtanh_): same("hardtanh"),
    aten.hardswish: same("hardswish"),
    aten.hardsigmoid: same("hardsigmoid"),
    aten.tanh: same("tanh"),
    aten.sigmoid: same("sigmoid"),
    (aten.softmax, aten._softmax): same("softmax"),
    # pooling and reductions
    aten.avg_pool1d: with_fn("avg_pool1d"), aten.avg_pool2d: with_fn("avg_pool2d"),
    aten.adaptive_avg_pool1d: with_fn("adaptive_avg_pool1d"),
    aten.adaptive_avg_pool2d: with_fn("adaptive_avg_pool2d"),
    (aten.max_pool1d, aten.max_pool2d): _max_pool,
    aten.mean: with_fn("mean"), aten.sum: with_fn("sum"),
    # moving values around
    (aten.alias, aten.clone, aten.contiguous, aten.detach, aten.detach_, aten.to, aten._to_copy, aten.type_as,
     aten.lift_fresh_copy, aten.feature_dropout, aten.native_dropout): same("identity"),
    aten.dropout: same("dropout"),
    (aten.view, aten.reshape, aten._unsafe_view, aten.flatten, aten.unflatten, aten.unsqueeze, aten.squeeze,
     aten.view_as, aten.reshape_as): same("reshape"),
    (aten.transpose, aten.permute, aten.t, aten.expand, aten.slice, aten.select, aten.narrow, aten.repeat,
     aten.flip, aten.roll, aten.constant_pad_nd, aten.movedim, aten.expand_as, aten.pixel_shuffle, aten.numpy_T,
     aten.mT): with_fn("index_map"),
    operator.getitem: getitem,
    aten.cat: cat,
    (aten.split, aten.split_with_sizes, aten.chunk): split(2),
    aten.unbind: split(1, stack=True),
    (aten.upsample_nearest1d, aten.upsample_nearest2d, aten.upsample_bilinear2d, aten.upsample_linear1d,
     aten._upsample_nearest_exact2d): with_fn("interpolate"),
    # arithmetic (elementwise functions of one tensor are "pointwise": activations in the reference's sense)
    aten.add: add(sub=False), aten.sub: add(sub=True), aten.rsub: _rsub,
    aten.mul: _mul, aten.div: _div, aten.neg: same("scale"),
    (aten.pow, aten.exp, aten.log, aten.sqrt, aten.rsqrt, aten.erf, aten.abs, aten.reciprocal, aten.sin, aten.cos,
     aten.square, aten.log1p, aten.expm1, aten.clamp, aten.clamp_min, aten.clamp_max): same("pointwise"),
    # attention and masks
    _PRODUCTS: _product, aten.baddbmm: _baddbmm,
    aten.scaled_dot_product_attention: _attention,
    aten.where: _where, (aten.masked_fill, aten.masked_fill_): _masked_fill,
})
# ops computing an elementwise function of their live operands (chains of them over one tensor fold)
_ELEMENTWISE = {t for t, h in TABLE.items() if h.all("elementwise")}


class ExportLowering(Lowering):
    """The ATen graph of an exported program. ``names``: the inputs' names, in order;
    ``integer``: input name -> dtype for inputs to treat as integer whatever the example value
    holds (an input cast to find where an integer input fails)."""

    how_to = f"; {_HOW_TO}"

    def __init__(self, gm: fx.GraphModule, names: Sequence[str], integer: Optional[dict[str, Any]] = None) -> None:
        super().__init__(gm, integer)
        self.names = list(names)
        self.stat: set[fx.Node] = set()           # a statistic of a reduction (norm denominators)
        self.root: dict[fx.Node, fx.Node] = {}    # elementwise functions: the tensor they are a function of

    def handler_of(self, n: fx.Node) -> Optional[Handler]:
        return TABLE.get(_packet(n.target))

    def no_rule(self, n: fx.Node) -> str:
        return _NO_RULE

    def source(self, n: fx.Node) -> str:
        stack = n.meta.get("nn_module_stack") or {}
        path = ""
        if stack:
            path, cls = list(stack.values())[-1]
            path = str(path)                      # the user's model sits at "model" in the wrapper
            path = "" if path == "model" else path[len("model."):] if path.startswith("model.") else path
            cls = getattr(cls, "__name__", None) or str(cls).rsplit(".", 1)[-1].strip("'>")
            path = f" in module {path or '<root>'} ({cls})"
        return f"op {_op_name(n.target)}{path}"

    def input_name(self, n: fx.Node) -> str:
        k = sum(1 for m in self.nodes if m.kind == "input")
        return self.names[k] if k < len(self.names) else n.name

    def is_integer_input(self, n: fx.Node, name: str) -> bool:
        if name in self.integer:
            return True
        v = _val(n)
        if isinstance(v, Tensor) and v.is_floating_point():
            return False
        self.integer[name] = getattr(v, "dtype", "integer")
        return True

    def skip(self, n: fx.Node) -> bool:
        return n.op == "call_module" or _packet(n.target) in _SKIP      # export's guard function, asserts

    def returned(self, n: fx.Node) -> Any:
        outs = node_args(n.args)
        return outs[0] if outs else None

    def lookup_indices(self, n: fx.Node) -> Optional[fx.Node]:
        return n.args[1] if _packet(n.target) is aten.embedding else None

    def operands(self, n: fx.Node, data: list[fx.Node]) -> list[fx.Node]:
        return [d for d in data if d in self.live] if n in self.live else [n.args[0]]

    def of_constants(self, n: fx.Node, data: list[fx.Node]) -> None:
        self.aux(n)

    def aux(self, n: fx.Node) -> None:
        deps = [d for d in node_args((n.args, n.kwargs)) if d in self.ir_of]
        if _packet(n.target) in _STATISTICS or any(d in self.stat for d in deps):
            self.stat.add(n)
        super().aux(n)

    def is_layer(self, n: fx.Node) -> bool:
        return super().is_layer(n) or (_packet(n.target) in _PRODUCTS and any(_is_param(a) for a in n.args))

    def refuse_integer(self, n: fx.Node, data: list[fx.Node]) -> None:
        try:
            super().refuse_integer(n, data)         # the error at the node it maps to
        except UnsupportedOperation:                # a layer it cannot map: named by its kind
            pass
        h = self.handler_of(n)
        kind = h.kinds[0] if h is not None and len(h.kinds) == 1 else "linear"
        name = self.origin[n]
        raise integer_input_error(name, self.integer[name], n.name, kind, self.source(n))

    def lower(self, n: fx.Node, ins: list[fx.Node]) -> None:
        """Track the statistics and elementwise chains, then map by the table."""
        op = _packet(n.target)
        if op in _STATISTICS or (ins and all(d in self.stat for d in ins)
                                 and (op in _ELEMENTWISE or n.target is operator.getitem)):
            self.stat.add(n)
        if op in _ELEMENTWISE:
            root = self._elementwise_root(n, ins)
            if root is not None:
                self.root[n] = root
                if len(ins) > 1:
                    self.emit(n, "pointwise", [root])
                    return
        super().lower(n, ins)

    def _elementwise_root(self, n: fx.Node, live: Sequence[fx.Node]) -> Optional[fx.Node]:
        """The one tensor ``n`` is an elementwise function of, when that takes several elementwise
        ops (``x * tanh(x + x**3)``); ``None`` otherwise."""
        roots = {self.root.get(d, d) for d in live}
        if len(roots) != 1:
            return None
        (root,) = roots
        v, rv = _val(n), _val(root)
        if not (isinstance(v, Tensor) and isinstance(rv, Tensor) and v.shape == rv.shape):
            return None
        return root


class _ExportWrapper(nn.Module):
    """The model called as the user calls it (keywords for a mapping), its output read at
    ``.logits`` (Hugging Face ``ModelOutput``) or the first element of a tuple."""

    def __init__(self, model: nn.Module, names: Sequence[str], keywords: bool) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)
        self.keywords = keywords

    def forward(self, *args: Tensor) -> Tensor:
        out = self.model(**dict(zip(self.names, args))) if self.keywords else self.model(*args)
        return primary_output(out)


def primary_output(out: Any) -> Any:
    """The tensor a model's output is explained at: ``.logits`` of a ModelOutput, else the first
    element of a tuple/list or mapping."""
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, Mapping):
        return next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def _name_integer_input(wrapper: nn.Module, inputs: Sequence[Any], names: Sequence[str]) -> None:
    """After a failed export: if casting one integer/bool input to floats lets the model export,
    raise the named error for the op that input feeds (torch itself refuses integers there)."""
    first = next((p for p in wrapper.parameters() if p.is_floating_point()), None)
    dtype = first.dtype if first is not None else torch.get_default_dtype()
    for i, (name, v) in enumerate(zip(names, inputs)):
        if not isinstance(v, Tensor) or v.is_floating_point() or v.is_complex():
            continue
        cast = tuple(inputs[:i]) + (v.to(dtype),) + tuple(inputs[i + 1:])
        try:
            gm = torch.export.export(wrapper, cast, strict=False).module()
        except Exception:
            continue
        try:
            graph = ExportLowering(gm, names, integer={name: v.dtype}).build()   # raises for a layer on the input
        except UnsupportedOperation:
            continue
        check_integer(names, inputs, graph)


def export(model: nn.Module, inputs: Sequence[Tensor], names: Sequence[str], keywords: bool
           ) -> tuple[Graph, Runner]:
    """Export ``model`` on ``inputs`` (one per name; keywords when the user gave a mapping)."""
    wrapper = _ExportWrapper(model, names, keywords)
    try:
        ep = torch.export.export(wrapper, tuple(inputs), strict=False)
    except Exception as exc:
        _name_integer_input(wrapper, inputs, names)
        raise UnsupportedOperation("<export>", f"model {type(model).__name__}", RULES,
                                   f"torch.export could not trace it: {type(exc).__name__}: {exc}; "
                                   f"{_HOW_TO}".replace("\n", " ")) from exc
    gm = ep.module()
    graph = ExportLowering(gm, names).build()
    prune_unused(graph)
    mark_activations(graph)
    check_supported(graph)
    return graph, runner(graph, gm)
