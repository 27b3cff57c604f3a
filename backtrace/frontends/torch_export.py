"""The torch.export front end: models torch.fx cannot trace (Hugging Face transformers, ...) to a
:class:`~backtrace.ir.Graph`.

``torch.export`` records the ATen ops the model runs on example inputs (the exact shapes, so a
graph is built per input signature; the engine caches them). ATen ops map onto the same op kinds
as the torch.fx front end (``aten.linear`` -> ``"linear"``, ``aten.view`` -> ``"reshape"``, ...)
plus the kinds transformers need (``"matmul"``, ``"attention"``, ``"where"``, ``"interpolate"``).

Which values carry relevance ("live" values) is decided per node:

- a float graph input is live; an integer one (token ids, attention masks) is not, but an
  embedding lookup whose indices come from a graph input is (reshapes and index moves of
  the ids on the way hand the per-token relevance back to the input);
- an op is live when one of its data inputs is. Everything else (attention masks, position
  ids, rotary tables, shapes) is an ``"aux"`` node: computed by the model, read by the rules
  that need it (the attention mask), never given relevance. A live op that reads an integer
  input itself (``x * mask``) reads it through an ``"aux"`` alias, so no relevance lands on
  it; a layer with weights applied to a value of integer inputs alone is refused by name
  (:func:`backtrace.inputs.integer_input_error`), as is an integer input that the model feeds
  to an op torch refuses to run on integers (found by exporting again with that input cast);
- a reduction's statistic (the ``rsqrt(mean(x^2))`` of RMSNorm) multiplying a live value is a
  scale, so decomposed normalisations pass relevance through as LayerNorm does;
- an elementwise function built from several elementwise ops of one tensor (the tanh form of
  GELU that GPT-2 spells out) is one ``"pointwise"`` op of that tensor, an activation.

A front end returns ``(Graph, runner)``: ``runner(inputs, wanted)`` runs the exported program
and returns ``{IR node name: value}`` for the node names in ``wanted``.
"""
from __future__ import annotations

import inspect
import operator
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.fx as fx
from torch import Tensor, nn

from backtrace.errors import UnsupportedOperation
from backtrace.frontends.torch_fx import IntegerAliases, _Recorder, module_attr  # shared by both front ends
from backtrace.inputs import check_integer, integer_input_error
from backtrace.ir import Graph, Node
from backtrace.rules import RULES

aten = torch.ops.aten

Runner = Callable[[Sequence[Any], set], dict]

# ATen op (overload packet) -> op kind, by family ----------------------------------------------
_ACTIVATIONS = {
    aten.relu: "relu", aten.relu_: "relu", aten.gelu: "gelu", aten.silu: "silu", aten.silu_: "silu",
    aten.tanh: "tanh", aten.sigmoid: "sigmoid", aten.leaky_relu: "leaky_relu", aten.elu: "elu",
    aten.hardtanh: "hardtanh", aten.hardtanh_: "hardtanh", aten.mish: "mish", aten.softplus: "softplus",
    aten.hardswish: "hardswish", aten.hardsigmoid: "hardsigmoid", aten.softmax: "softmax",
    aten._softmax: "softmax", aten.relu6: "relu6",
}
_IDENTITY = {aten.dropout, aten.alias, aten.clone, aten.contiguous, aten.detach, aten.detach_, aten.to,
             aten._to_copy, aten.type_as, aten.lift_fresh_copy, aten.feature_dropout, aten.native_dropout}
_RESHAPE = {aten.view, aten.reshape, aten._unsafe_view, aten.flatten, aten.unflatten, aten.unsqueeze,
            aten.squeeze, aten.view_as, aten.reshape_as}
_INDEX = {aten.transpose, aten.permute, aten.t, aten.expand, aten.slice, aten.select, aten.narrow,
          aten.repeat, aten.flip, aten.roll, aten.constant_pad_nd, aten.movedim, aten.expand_as,
          aten.pixel_shuffle, aten.numpy_T, aten.mT}
_INTERPOLATE = {aten.upsample_nearest1d, aten.upsample_nearest2d, aten.upsample_bilinear2d,
                aten.upsample_linear1d, aten._upsample_nearest_exact2d}
_NORMS = {aten.layer_norm: "layer_norm", aten.rms_norm: "rms_norm", aten.group_norm: "group_norm",
          aten.instance_norm: "instance_norm"}
_REDUCTIONS = {aten.mean: "mean", aten.sum: "sum"}
_POOLS = {aten.avg_pool1d: "avg_pool1d", aten.avg_pool2d: "avg_pool2d", aten.adaptive_avg_pool1d: "adaptive_avg_pool1d",
          aten.adaptive_avg_pool2d: "adaptive_avg_pool2d"}
_STATISTICS = {aten.mean, aten.sum, aten.var, aten.std, aten.var_mean, aten.linalg_vector_norm, aten.norm,
               aten.amax, aten.max}
# elementwise functions of one tensor (and scalars): activations in the reference's sense
_UNARY = {aten.pow, aten.exp, aten.log, aten.sqrt, aten.rsqrt, aten.erf, aten.abs, aten.reciprocal, aten.sin,
          aten.cos, aten.square, aten.log1p, aten.expm1, aten.clamp, aten.clamp_min, aten.clamp_max}
_ELEMENTWISE = (set(_ACTIVATIONS) - {aten.softmax, aten._softmax}) | _IDENTITY | _UNARY | {
    aten.add, aten.sub, aten.mul, aten.div, aten.neg, aten.rsub}
# layers with weights (their IR kind): they need floating-point values that carry relevance
_WEIGHT_OPS = {aten.linear: "linear", aten.addmm: "linear", aten.conv1d: "conv1d", aten.conv2d: "conv2d",
               aten.convolution: "convolution", aten.lstm: "lstm", aten.layer_norm: "layer_norm",
               aten.group_norm: "group_norm", aten.batch_norm: "batch_norm", aten.rms_norm: "rms_norm"}
_SKIP = {aten._assert_tensor_metadata, aten.sym_size, aten.sym_constrain_range_for_size,
         aten._assert_scalar}

_HOW_TO = ("write the op with supported ones, or register a rule for it (backtrace.rules.register); "
           "models torch.fx can trace use frontend='fx'")


def _packet(target: Any) -> Any:
    return getattr(target, "overloadpacket", target)


def _op_name(target: Any) -> str:
    name = getattr(target, "__name__", None) or str(target)
    return f"aten.{name}" if isinstance(target, torch._ops.OpOverload) else name


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


def input_names(model: nn.Module, n: int) -> list[str]:
    """Names for ``n`` positional inputs: the forward's parameter names where it has them."""
    try:
        params = [p.name for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"input_{i}" for i in range(n)]


def _node_args(args: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(args, lambda n: found.append(n) or n)
    return found


def _val(n: Any) -> Any:
    return n.meta.get("val") if isinstance(n, fx.Node) else n


def _is_float(n: Any) -> bool:
    v = _val(n)
    return isinstance(v, Tensor) and v.is_floating_point()


class _Builder(IntegerAliases):
    """``integer``: input name -> dtype for inputs to treat as integer whatever the example value
    holds (an input cast to find where an integer input fails)."""

    def __init__(self, gm: fx.GraphModule, names: Sequence[str], integer: Optional[dict[str, Any]] = None) -> None:
        self.gm = gm
        self.names = list(names)
        self.integer = dict(integer or {})
        self.origin: dict[fx.Node, str] = {}      # values of integer inputs alone -> one such input
        self.aliases: dict[fx.Node, str] = {}     # an integer input read by a live op, as an aux node
        self.reading_live = False
        self.nodes: list[Node] = []
        self.ir_of: dict[fx.Node, str] = {}
        self.live: set[fx.Node] = set()
        self.from_input: set[fx.Node] = set()     # depends on a graph input (any dtype)
        self.index_path: set[fx.Node] = set()     # integer inputs and index moves of them
        self.stat: set[fx.Node] = set()           # a statistic of a reduction (norm denominators)
        self.root: dict[fx.Node, fx.Node] = {}    # elementwise functions: the tensor they are a function of
        self.used: set[str] = set()

    # --- helpers ---------------------------------------------------------------------------------
    def _attr(self, target: str) -> Any:
        return module_attr(self.gm, target)

    def _source(self, n: fx.Node) -> str:
        stack = n.meta.get("nn_module_stack") or {}
        path = ""
        if stack:
            path, cls = list(stack.values())[-1]
            path = str(path)                      # the user's model sits at "model" in the wrapper
            path = "" if path == "model" else path[len("model."):] if path.startswith("model.") else path
            cls = getattr(cls, "__name__", None) or str(cls).rsplit(".", 1)[-1].strip("'>")
            path = f" in module {path or '<root>'} ({cls})"
        return f"op {_op_name(n.target)}{path}"

    def _unique(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}:{k}"
        self.used.add(name)
        return name

    def _emit(self, n: fx.Node, kind: str, inputs: Sequence[fx.Node], params: Optional[dict] = None) -> None:
        name = self._unique(n.name)
        self.nodes.append(Node(name=name, kind=kind, inputs=tuple(self._operand(i) for i in inputs),
                               params=params or {}, source=self._source(n), meta={"fx": n.name}))
        self.ir_of[n] = name

    def _const(self, v: Any) -> Any:
        if isinstance(v, fx.Node):
            if v.op != "get_attr":
                raise _Unmapped("a weight computed from other values")
            return self._attr(str(v.target))
        return v

    def _closure(self, n: fx.Node, live_at: int = 0) -> Callable[[Tensor], Tensor]:
        args, kwargs = list(n.args), dict(n.kwargs)
        if _node_args((args[:live_at] + args[live_at + 1:], kwargs)):
            raise _Unmapped("its other arguments are tensors")
        target = n.target
        return lambda t: target(*args[:live_at], t, *args[live_at + 1:], **kwargs)

    # --- the walk --------------------------------------------------------------------------------
    def build(self) -> Graph:
        inputs: list[str] = []
        output: Optional[str] = None
        k_input = 0
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                name = self.names[k_input] if k_input < len(self.names) else n.name
                k_input += 1
                self.used.add(name)
                self.nodes.append(Node(name=name, kind="input", inputs=(), source=name, meta={"fx": n.name}))
                self.ir_of[n] = name
                inputs.append(name)
                self.from_input.add(n)
                if _is_float(n) and name not in self.integer:
                    self.live.add(n)
                else:
                    self.index_path.add(n)
                    self.origin[n] = name
                    if name not in self.integer:
                        self.integer[name] = getattr(_val(n), "dtype", "integer")
                continue
            if n.op == "output":
                outs = [o for o in _node_args(n.args)]
                if not outs or outs[0] not in self.live:
                    detail = ("the explained output must be a tensor computed from the float inputs or from "
                              "embedding lookups of token ids (values of integer inputs alone carry no relevance)")
                    raise UnsupportedOperation("output", "the model's return value", RULES, detail)
                output = self.ir_of[outs[0]]
                continue
            if n.op == "get_attr":
                value = self._attr(str(n.target))
                self.nodes.append(Node(name=n.name, kind="constant", inputs=(), params={"value": value},
                                       source=str(n.target), meta={"fx": n.name}))
                self.used.add(n.name)
                self.ir_of[n] = n.name
                continue
            if n.op == "call_module" or _packet(n.target) in _SKIP:
                continue                                  # export's guard function, metadata asserts
            deps = [d for d in _node_args((n.args, n.kwargs)) if d in self.ir_of]
            if any(d in self.from_input for d in deps):
                self.from_input.add(n)
            live = [d for d in deps if d in self.live]
            if _packet(n.target) is aten.embedding:
                if n.args[1] in self.from_input:
                    self.live.add(n)
            elif live:
                self.live.add(n)
            first = n.args[0] if n.args else None
            from_ints = [d for d in deps if d in self.origin]
            if n not in self.live and from_ints:
                self.origin[n] = self.origin[from_ints[0]]
                op = _packet(n.target)
                if op in _WEIGHT_OPS or (op in (aten.mm, aten.matmul, aten.bmm)
                                         and any(isinstance(a, fx.Node) and a.op == "get_attr" for a in n.args)):
                    name = self.origin[n]
                    raise integer_input_error(name, self.integer[name], n.name, _WEIGHT_OPS.get(op, "linear"),
                                              self._source(n))
            if (n not in self.live and first in self.index_path
                    and _packet(n.target) in (_RESHAPE | _INDEX | _IDENTITY)):
                self.index_path.add(n)               # token ids moved on their way to a lookup
                self._map(n, [first])
                continue
            if n not in self.live:
                if _packet(n.target) in _STATISTICS or any(d in self.stat for d in deps):
                    self.stat.add(n)
                self._emit(n, "aux", [])
                continue
            self.reading_live = _packet(n.target) is not aten.embedding     # a lookup reads the ids themselves
            try:
                self._map(n, live)
            except _Unmapped as exc:
                raise UnsupportedOperation(n.name, self._source(n), RULES, f"{exc}; {_HOW_TO}") from None
            finally:
                self.reading_live = False
        assert output is not None
        return Graph(nodes=self.nodes, inputs=tuple(inputs), output=output)

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

    def _map(self, n: fx.Node, live: list[fx.Node]) -> None:
        op = _packet(n.target)
        args = n.args
        x = live[0] if live else None
        if op in _STATISTICS or (live and all(d in self.stat for d in live)
                                 and (op in _ELEMENTWISE or n.target is operator.getitem)):
            self.stat.add(n)
        if op in _ELEMENTWISE:
            root = self._elementwise_root(n, live)
            if root is not None:
                self.root[n] = root
            if len(live) > 1 and root is not None:
                self._emit(n, "pointwise", [root])
                return
        if n.target is operator.getitem:
            self._emit(n, "getitem", [x], {"index": args[1]})
        elif op is aten.linear:
            w, b = self._const(args[1]), self._const(args[2] if len(args) > 2 else None)
            self._emit(n, "linear", [x], _dense(w, b))
        elif op is aten.addmm:
            if args[1] is not x:
                raise _Unmapped("the live operand must be the first factor")
            self._emit(n, "linear", [x], _dense(self._const(args[2]).t(), self._const(args[0])))
        elif op in (aten.conv1d, aten.conv2d):
            from backtrace.frontends.torch_fx import _conv_params
            a = list(args) + [None, 1, 0, 1, 1][len(args) - 2:]
            dims = 1 if op is aten.conv1d else 2
            self._emit(n, f"conv{dims}d", [x], _conv_params(self._const(a[1]), self._const(a[2]), dims, a[3], a[4],
                                                            a[5], a[6]))
        elif op in (aten.max_pool1d, aten.max_pool2d):
            from backtrace.frontends.torch_fx import _maxpool_params
            a = list(args) + [None, None, 0, 1, False][len(args) - 1:]
            dims = 1 if op is aten.max_pool1d else 2
            self._emit(n, f"max_pool{dims}d", [x], _maxpool_params(dims, a[1], a[2] or None, a[3], a[4], a[5]))
        elif op in _POOLS:
            self._emit(n, _POOLS[op], [x], {"fn": self._closure(n)})
        elif op is aten.embedding:
            self._emit(n, "embedding", [args[1]], {})
        elif op in _NORMS:
            self._emit(n, _NORMS[op], [x])
        elif op in _ACTIVATIONS:
            self._emit(n, _ACTIVATIONS[op], [x])
        elif op in _IDENTITY:
            self._emit(n, "dropout" if op is aten.dropout else "identity", [x])
        elif op in _RESHAPE:
            self._emit(n, "reshape", [x])
        elif op in _INDEX:
            self._emit(n, "index_map", [x], {"fn": self._closure(n)})
        elif op in _INTERPOLATE:
            self._emit(n, "interpolate", [x], {"fn": self._closure(n)})
        elif op in _REDUCTIONS:
            self._emit(n, _REDUCTIONS[op], [x], {"fn": self._closure(n)})
        elif op is aten.cat:
            self._emit(n, "cat", list(args[0]), {"dim": int(args[1]) if len(args) > 1 else 0})
        elif op in (aten.split, aten.split_with_sizes, aten.chunk, aten.unbind):
            dim = args[2] if len(args) > 2 else n.kwargs.get("dim", 0)
            if op is aten.unbind:
                dim = args[1] if len(args) > 1 else 0
            self._emit(n, "split", [x], {"dim": int(dim), "stack": op is aten.unbind})
        elif op in (aten.add, aten.sub, aten.rsub):
            tensors = [a for a in args[:2] if isinstance(a, fx.Node)]
            consts = [a for a in args[:2] if not isinstance(a, fx.Node)]
            alpha = n.kwargs.get("alpha", 1)
            if alpha != 1 or (op is aten.rsub):
                raise _Unmapped("add/sub with alpha != 1")
            signs = tuple(-1 if (op is aten.sub and args.index(t) == 1) else 1 for t in tensors)
            constant = sum(float(c) for c in consts) * (-1 if op is aten.sub and not isinstance(args[1], fx.Node)
                                                          else 1)
            self._emit(n, "add", tensors, {"signs": signs, "constant": constant})
        elif op is aten.mul:
            tensors = [a for a in args[:2] if isinstance(a, fx.Node)]
            others = [t for t in tensors if t not in self.live or (t in self.stat and _smaller(t, n))]
            lives = [t for t in tensors if t not in others]
            if len(lives) == 2:
                self._emit(n, "mul", lives)
            else:
                self._emit(n, "scale", lives + others)
        elif op is aten.div:
            if isinstance(args[1], fx.Node) and args[1] in self.live and not (args[1] in self.stat
                                                                              and _smaller(args[1], n)):
                raise _Unmapped("division by a value computed from the input")
            self._emit(n, "scale", [a for a in args[:2] if isinstance(a, fx.Node)])
        elif op is aten.neg:
            self._emit(n, "scale", [x])
        elif op in _UNARY:
            self._emit(n, "pointwise", [x])
        elif op in (aten.matmul, aten.bmm, aten.mm):
            a, b = args[0], args[1]
            if a in self.live and b in self.live:
                self._emit(n, "matmul", [a, b])
            elif a in self.live and isinstance(b, fx.Node) and b.op == "get_attr" and _val(b).dim() == 2:
                self._emit(n, "linear", [a], _dense(self._const(b).t(), None))
            else:
                raise _Unmapped("a product of a live value with a computed (non-parameter) matrix")
        elif op is aten.baddbmm:
            # mask + a @ b (nn.MultiheadAttention's scores): the product by the matmul rule, the
            # additive mask taking none, as for the eager path's add of the mask
            if args[0] in self.live or not (args[1] in self.live and args[2] in self.live):
                raise _Unmapped("baddbmm with a live summand or a constant factor")
            self._emit(n, "matmul", [args[1], args[2]], {"recompute": True})
        elif op is aten.scaled_dot_product_attention:
            names = ["query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"]
            a = dict(zip(names, args))
            a.update(n.kwargs)
            mask = a.get("attn_mask")
            ins = [a["query"], a["key"], a["value"]] + ([mask] if isinstance(mask, fx.Node) else [])
            if isinstance(mask, fx.Node) and mask in self.live:
                raise _Unmapped("an attention mask computed from the explained input")
            self._emit(n, "attention", ins, {"is_causal": bool(a.get("is_causal", False)), "scale": a.get("scale"),
                                             "enable_gqa": bool(a.get("enable_gqa", False))})
        elif op is aten.where:
            cond, a, b = args[0], args[1], args[2]
            if cond in self.live:
                raise _Unmapped("a condition computed from the explained input")
            ins = [cond] + [t for t in (a, b)]
            if not all(isinstance(t, fx.Node) for t in ins):
                raise _Unmapped("where with python scalars")
            self._emit(n, "where", ins)
        elif op in (aten.masked_fill, aten.masked_fill_):
            if args[1] in self.live or isinstance(args[2], fx.Node):
                raise _Unmapped("a mask computed from the explained input")
            self._emit(n, "masked_fill", [x, args[1]])
        else:
            raise _Unmapped("no rule for this ATen op")


def _smaller(operand: fx.Node, n: fx.Node) -> bool:
    """``operand`` is broadcast in ``n`` (a per-row statistic scaling a whole row)."""
    a, b = _val(operand), _val(n)
    return isinstance(a, Tensor) and isinstance(b, Tensor) and a.numel() < b.numel()


class _Unmapped(Exception):
    pass


def _dense(weight: Tensor, bias: Optional[Tensor]) -> dict[str, Any]:
    w = weight.detach().clone()
    b = None if bias is None else bias.detach().clone()
    return {"weight": w, "bias": b, "abs_weight": w.abs()}


def prune_unused(graph: Graph) -> None:
    """Live nodes whose value feeds only aux nodes get no relevance (the ``mean(x^2)`` of
    RMSNorm): they become ``aux`` so that no rule is asked for them."""
    users: dict[str, list[Node]] = {n.name: [] for n in graph.nodes}
    for n in graph.nodes:
        for i in n.inputs:
            users[i].append(n)
    for n in reversed(graph.nodes):
        if n.kind in ("input", "constant", "aux") or n.name == graph.output:
            continue
        if not users[n.name] or all(u.kind == "aux" for u in users[n.name]):
            n.kind, n.inputs, n.params = "aux", (), {}


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
            graph = _Builder(gm, names, integer={name: v.dtype}).build()   # raises for a layer on the input
        except UnsupportedOperation:
            continue
        check_integer(names, inputs, graph)


def export(model: nn.Module, inputs: Sequence[Tensor], names: Sequence[str], keywords: bool
           ) -> tuple[Graph, Runner]:
    """Export ``model`` on ``inputs`` (one per name; keywords when the user gave a mapping)."""
    from backtrace.frontends.torch_fx import check_supported, mark_activations

    wrapper = _ExportWrapper(model, names, keywords)
    try:
        ep = torch.export.export(wrapper, tuple(inputs), strict=False)
    except Exception as exc:
        _name_integer_input(wrapper, inputs, names)
        raise UnsupportedOperation("<export>", f"model {type(model).__name__}", RULES,
                                   f"torch.export could not trace it: {type(exc).__name__}: {exc}; "
                                   f"{_HOW_TO}".replace("\n", " ")) from exc
    gm = ep.module()
    graph = _Builder(gm, names).build()
    prune_unused(graph)
    mark_activations(graph)
    check_supported(graph)
    fx_of = {n.name: n.meta["fx"] for n in graph.nodes if n.kind != "constant"}

    def run(values: Sequence[Any], wanted: set) -> dict:
        rec = _Recorder(gm, {fx_of[w] for w in wanted if w in fx_of})
        rec.run(*values)
        return {n.name: rec.kept[n.meta["fx"]] for n in graph.nodes
                if n.kind != "constant" and n.meta["fx"] in rec.kept}

    return graph, run
