"""The torch.fx front end: any traceable ``nn.Module`` to a :class:`~backtrace.ir.Graph`.

Module calls and functional calls map onto the same op kinds (``nn.ReLU``, ``F.relu``,
``torch.relu`` and ``x.relu()`` are all ``"relu"``). Module-call nodes are named by the
module's qualified name (``"layer1.0.conv1"``; a module called again gets ``":1"``,
``":2"``...); functional convolutions/linears whose weight is a parameter are named by the
module owning the weight. Values that are not tensors (``x.size(0)``, shapes) are not nodes:
:class:`~backtrace.engine.Backtrace` runs the traced module itself, so they are computed as
the model computes them.

Each IR node records in ``meta["fx"]`` the fx node whose value is its output. BatchNorm that
directly follows a linear/conv (its sole consumer) is folded into it: the layer's parameters
become the folded ones and its value is read from the BatchNorm's output. The model itself is
never modified (parameters are cloned).

Integer inputs: an input whose values reach an ``nn.Embedding``/``nn.EmbeddingBag`` as its
indices (possibly through reshapes and index moves) holds token ids; so does any input the
caller passes as an integer/bool tensor (:func:`lower` builds the graph for the dtypes given;
without them it knows only the ids an embedding reads). The ids take relevance only through
that lookup. Every value computed from integer inputs alone (a padding mask ``ids.ne(pad)``,
its casts, sums and clamps, position ids) is an ``"aux"`` node: the rules that need it read it
and it takes no relevance, so ``x * mask`` is a scale of ``x`` and ``s / mask.sum(1)`` a
division by a constant. A layer with weights (linear, conv, LSTM, a normalisation) applied to
such a value is refused by name, never turned into a silent pass-through, and every op of a
float value still needs its rule.
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from backtrace.errors import UnsupportedOperation
from backtrace.inputs import integer_input_error
from backtrace.ir import Graph, Node
from backtrace.rules import RULES
from backtrace.rules.shape import ACTIVATION_KINDS

# --- module types --------------------------------------------------------------------------

_ACTIVATION_MODULES: dict[type, str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.LeakyReLU: "leaky_relu", nn.ELU: "elu", nn.GELU: "gelu",
    nn.SiLU: "silu", nn.Mish: "mish", nn.Softplus: "softplus", nn.Hardtanh: "hardtanh",
    nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid",
    nn.Softmax: "softmax",
}
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
_RESHAPE_MODULES = (nn.Flatten, nn.Unflatten)
_PROPORTIONAL_MODULES: dict[type, str] = {
    nn.AvgPool1d: "avg_pool1d", nn.AvgPool2d: "avg_pool2d",
    nn.AdaptiveAvgPool1d: "adaptive_avg_pool1d", nn.AdaptiveAvgPool2d: "adaptive_avg_pool2d",
}
_PAD_MODULES = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d)

# --- functions and tensor methods ------------------------------------------------------------

_ACTIVATION_FUNCTIONS: dict[Any, str] = {
    F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.leaky_relu: "leaky_relu", F.elu: "elu",
    F.gelu: "gelu", F.silu: "silu", F.mish: "mish", F.softplus: "softplus", F.hardtanh: "hardtanh",
    F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid", torch.tanh: "tanh", F.tanh: "tanh",
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.softmax: "softmax", F.softmax: "softmax",
}
_ACTIVATION_METHODS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softmax": "softmax"}
_IDENTITY_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout}
_IDENTITY_METHODS = {"contiguous", "clone", "detach", "float", "double", "to", "type_as"}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_INDEX_FUNCTIONS = {torch.permute, torch.transpose, torch.t, torch.movedim, torch.flip, torch.roll,
                    torch.narrow, torch.select, F.pad}
_INDEX_METHODS = {"permute", "transpose", "t", "movedim", "flip", "roll", "narrow", "select", "expand",
                  "expand_as", "repeat", "mT"}
_REDUCTION_FUNCTIONS = {torch.mean: "mean", torch.sum: "sum"}
_REDUCTION_METHODS = {"mean": "mean", "sum": "sum"}
_PROPORTIONAL_FUNCTIONS = {F.avg_pool1d: "avg_pool1d", F.avg_pool2d: "avg_pool2d",
                           F.adaptive_avg_pool1d: "adaptive_avg_pool1d",
                           F.adaptive_avg_pool2d: "adaptive_avg_pool2d"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_SUB_FUNCTIONS = {operator.sub, operator.isub, torch.sub}
_MUL_FUNCTIONS = {operator.mul, operator.imul, torch.mul}
_DIV_FUNCTIONS = {operator.truediv, operator.itruediv, torch.div}
_META_METHODS = {"size", "dim", "numel"}
_INTERPOLATE_MODES = ("nearest", "linear", "bilinear")
# layers with weights: they need floating-point values that carry relevance
_WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.LSTM,
                   nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d,
                   nn.InstanceNorm2d)
_WEIGHT_FUNCTIONS = {F.linear, F.conv1d, F.conv2d}
_LOOKUP_MODULES = (nn.Embedding, nn.EmbeddingBag)
_ID_CASTS = {"long", "int"}        # integer casts: index moves of token ids on their way to a lookup


class UnmappedOp(Exception):
    """Raised inside the front end; turned into :class:`UnsupportedOperation` with context."""


def _bind(args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str], defaults: dict[str, Any]) -> dict:
    out = dict(defaults)
    out.update(zip(names, args))
    out.update(kwargs)
    return out


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def _node_args(args: Any) -> list[fx.Node]:
    """fx nodes among (possibly nested) args, in order."""
    found: list[fx.Node] = []
    fx.node.map_arg(args, lambda n: found.append(n) or n)
    return found


def _has_node(value: Any) -> bool:
    return bool(_node_args(value))


def _is_index_move(n: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """An op that moves or copies elements of its first argument without computing new values."""
    if n.op == "call_module":
        return isinstance(modules[n.target], _IDENTITY_MODULES + _RESHAPE_MODULES)
    if n.op == "call_method":
        return n.target in _IDENTITY_METHODS | _RESHAPE_METHODS | _INDEX_METHODS | _ID_CASTS
    return n.op == "call_function" and (n.target in _IDENTITY_FUNCTIONS | _RESHAPE_FUNCTIONS | _INDEX_FUNCTIONS
                                        or n.target is operator.getitem)


def token_id_inputs(gm: fx.GraphModule) -> set[str]:
    """Names of the inputs whose values reach an embedding lookup as its indices (through index
    moves only): they hold integer token ids whatever the caller passes."""
    modules = dict(gm.named_modules())
    found: set[str] = set()
    for n in gm.graph.nodes:
        if not (n.op == "call_module" and isinstance(modules[n.target], _LOOKUP_MODULES) and n.args):
            continue
        cur = n.args[0]
        while isinstance(cur, fx.Node) and cur.op != "placeholder" and _is_index_move(cur, modules) and cur.args:
            cur = cur.args[0]
        if isinstance(cur, fx.Node) and cur.op == "placeholder":
            found.add(str(cur.target).lstrip("*"))
    return found


class IntegerAliases:
    """What both torch builders share: a live op (not a lookup) reads an integer input, or an
    index move of one, through an ``"aux"`` alias, so none of its relevance lands on the ids.
    The builder sets ``reading_live`` while it maps a live op and keeps ``index_path``."""

    reading_live: bool
    index_path: set
    aliases: dict
    ir_of: dict
    nodes: list

    def _operand(self, i: fx.Node) -> str:
        """The IR name a node reads ``i`` under."""
        if not (self.reading_live and i in self.index_path):
            return self.ir_of[i]
        if i not in self.aliases:
            name = self._unique(f"{self.ir_of[i]}:aux")  # type: ignore[attr-defined]
            self.nodes.append(Node(name=name, kind="aux", inputs=(), source=f"integer value {self.ir_of[i]!r}",
                                   meta={"fx": i.name}))
            self.aliases[i] = name
        return self.aliases[i]


class _Builder(IntegerAliases):
    """Walks the fx graph once and emits IR nodes."""

    def __init__(self, gm: fx.GraphModule, integer_inputs: Optional[dict[str, Any]] = None) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.nodes: list[Node] = []
        self.ir_of: dict[fx.Node, str] = {}       # fx node -> IR name (tensor-valued nodes)
        self.meta_fx: set[fx.Node] = set()        # non-tensor values (sizes, shapes)
        self.used: set[str] = set()
        self.calls: dict[str, int] = {}
        # input name -> its dtype (as the error messages name it)
        self.integer_inputs = {name: "token ids" for name in token_id_inputs(gm)}
        self.integer_inputs.update(integer_inputs or {})
        self.live: set[fx.Node] = set()           # values that carry relevance
        self.origin: dict[fx.Node, str] = {}      # values from integer inputs alone -> one such input
        self.index_path: set[fx.Node] = set()     # integer inputs and index moves of them
        self.inert: set[fx.Node] = set()          # index path and aux values: they take no relevance
        self.aliases: dict[fx.Node, str] = {}     # an inert value read by a live op, as an aux node
        self.reading_live = False

    # names ---------------------------------------------------------------------------------
    def _unique(self, base: str) -> str:
        name, k = base, self.calls.get(base, 0)
        while name in self.used:
            k += 1
            name = f"{base}:{k}"
        self.calls[base] = k
        self.used.add(name)
        return name

    # helpers -------------------------------------------------------------------------------
    def _is_meta(self, n: fx.Node) -> bool:
        if n.op == "call_method" and n.target in _META_METHODS:
            return True
        if n.op == "call_function" and n.target is getattr and len(n.args) > 1 and n.args[1] in (
                "shape", "dtype", "device", "ndim"):
            return True
        deps = _node_args((n.args, n.kwargs))
        return n.op in ("call_function", "call_method") and bool(deps) and all(d in self.meta_fx for d in deps)

    def _attr(self, target: str) -> Any:
        return module_attr(self.gm, target)

    def _source(self, n: fx.Node) -> str:
        if n.op == "call_module":
            return f"module {n.target} ({type(self.modules[n.target]).__name__})"
        where = ""
        stack = n.meta.get("nn_module_stack")
        if stack:
            path = list(stack.keys())[-1] if isinstance(stack, dict) else ""
            if path:
                where = f" in module {path}"
        if n.op == "call_method":
            return f"method Tensor.{n.target}{where}"
        fn = n.target
        name = getattr(fn, "__name__", None) or repr(fn)
        mod = getattr(fn, "__module__", None) or ""
        return f"function {mod + '.' if mod else ''}{name}{where}"

    def _data_inputs(self, n: fx.Node) -> list[fx.Node]:
        return [d for d in _node_args((n.args, n.kwargs)) if d not in self.meta_fx]

    def _emit(self, n: fx.Node, kind: str, inputs: Sequence[fx.Node], params: dict[str, Any] | None = None,
              base: str | None = None) -> None:
        name = self._unique(base or n.name)
        node = Node(name=name, kind=kind, inputs=tuple(self._operand(i) for i in inputs), params=params or {},
                    source=self._source(n) if n.op not in ("placeholder", "get_attr") else str(n.target),
                    meta={"fx": n.name})
        self.nodes.append(node)
        self.ir_of[n] = name

    def _closure(self, n: fx.Node) -> Callable[[Tensor], Tensor]:
        """Re-apply ``n``'s op to one tensor, every other argument a constant."""
        rest, kwargs = n.args[1:], dict(n.kwargs)
        if _has_node((rest, kwargs)):
            raise UnmappedOp("its arguments depend on other values of the graph")
        if n.op == "call_method":
            method = n.target
            return lambda t: getattr(t, method)(*rest, **kwargs)
        if n.op == "call_module":
            return self.modules[n.target]
        target = n.target
        return lambda t: target(t, *rest, **kwargs)

    # mapping -----------------------------------------------------------------------------------
    def build(self) -> Graph:
        inputs: list[str] = []
        output: Optional[str] = None
        for n in self.gm.graph.nodes:
            if n.op == "output":
                out = n.args[0]
                if not isinstance(out, fx.Node) or out not in self.ir_of:
                    raise UnsupportedOperation("output", "the model's return value", RULES,
                                               "the model must return one tensor")
                if out in self.inert:
                    raise UnsupportedOperation("output", "the model's return value", RULES,
                                               "the explained output must be a tensor computed from the float "
                                               "inputs or from embedding lookups of token ids (values of integer "
                                               "inputs alone carry no relevance)")
                output = self.ir_of[out]
                continue
            if n.op == "placeholder":
                self._emit(n, "input", [], base=str(n.target).lstrip("*"))   # the argument's name
                inputs.append(self.ir_of[n])
                if self.ir_of[n] in self.integer_inputs:
                    self.origin[n] = self.ir_of[n]
                    self.index_path.add(n)
                    self.inert.add(n)
                else:
                    self.live.add(n)
                continue
            if self._is_meta(n):
                self.meta_fx.add(n)
                continue
            if n.op == "get_attr":
                self._emit(n, "constant", [], {"value": self._attr(n.target)})
                continue
            self._walk(n)
        assert output is not None
        return Graph(nodes=self.nodes, inputs=tuple(inputs), output=output)

    def _walk(self, n: fx.Node) -> None:
        """Map one call: live when it reads a live value (or looks up ids), else a value of the
        integer inputs alone (an index move of the ids, or ``"aux"``), else (computed from
        constants) mapped as it is."""
        data = self._data_inputs(n)
        lookup = n.op == "call_module" and isinstance(self.modules[n.target], _LOOKUP_MODULES)
        from_ints = [d for d in data if d in self.origin]
        if any(d in self.live for d in data) or (lookup and data and data[0] in self.origin):
            self.live.add(n)
        elif from_ints:
            self.origin[n] = self.origin[from_ints[0]]
            first = n.args[0] if n.args else None
            if first in self.index_path and _is_index_move(n, self.modules):
                self.index_path.add(n)
            elif self._is_weight_op(n):
                self._map(n)
                node = self.nodes[-1]
                name = self.origin[n]
                raise integer_input_error(name, self.integer_inputs[name], node.name, node.kind, node.source)
            else:
                self._emit(n, "aux", [])
                self.inert.add(n)
                return
            self.inert.add(n)
        self.reading_live = n in self.live and not lookup     # a lookup hands its relevance to the ids
        try:
            self._map(n)
        finally:
            self.reading_live = False

    def _map(self, n: fx.Node) -> None:
        try:
            if n.op == "call_module":
                self._map_module(n)
            else:
                self._map_call(n)
        except UnmappedOp as exc:
            raise UnsupportedOperation(n.name, self._source(n), RULES, str(exc)) from None

    def _is_weight_op(self, n: fx.Node) -> bool:
        if n.op == "call_module":
            return isinstance(self.modules[n.target], _WEIGHT_MODULES)
        return n.op == "call_function" and n.target in _WEIGHT_FUNCTIONS

    def _map_module(self, n: fx.Node) -> None:
        mod = self.modules[n.target]
        data = self._data_inputs(n)
        base = str(n.target)
        t = type(mod)
        if isinstance(mod, nn.Linear):
            self._emit(n, "linear", data[:1], _dense_params(mod.weight, mod.bias), base)
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            if mod.padding_mode != "zeros":
                raise UnmappedOp(f"padding_mode {mod.padding_mode!r} (only 'zeros' is supported)")
            dims = 1 if isinstance(mod, nn.Conv1d) else 2
            self._emit(n, f"conv{dims}d", data[:1],
                       _conv_params(mod.weight, mod.bias, dims, mod.stride, mod.padding, mod.dilation, mod.groups),
                       base)
        elif isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
            dims = 1 if isinstance(mod, nn.ConvTranspose1d) else 2
            self._emit(n, f"conv_transpose{dims}d", data[:1], {"module": mod}, base)
        elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            self._emit(n, "batch_norm", data[:1], _bn_params(mod), base)
        elif t in _ACTIVATION_MODULES:
            self._emit(n, _ACTIVATION_MODULES[t], data[:1], {}, base)
        elif isinstance(mod, _IDENTITY_MODULES):
            self._emit(n, "dropout" if isinstance(mod, nn.modules.dropout._DropoutNd) else "identity",
                       data[:1], {}, base)
        elif isinstance(mod, _RESHAPE_MODULES):
            self._emit(n, "reshape", data[:1], {}, base)
        elif t in _PROPORTIONAL_MODULES:
            self._emit(n, _PROPORTIONAL_MODULES[t], data[:1], {"fn": mod}, base)
        elif isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d)):
            if mod.return_indices:
                raise UnmappedOp("return_indices=True")
            dims = 1 if isinstance(mod, nn.MaxPool1d) else 2
            self._emit(n, f"max_pool{dims}d", data[:1], _maxpool_params(dims, mod.kernel_size, mod.stride,
                                                                         mod.padding, mod.dilation, mod.ceil_mode),
                       base)
        elif isinstance(mod, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
            if mod.return_indices:
                raise UnmappedOp("return_indices=True")
            dims = 1 if isinstance(mod, nn.AdaptiveMaxPool1d) else 2
            self._emit(n, f"adaptive_max_pool{dims}d", data[:1], {"fn": mod}, base)
        elif isinstance(mod, _PAD_MODULES):
            if getattr(mod, "value", 0.0) != 0.0:
                raise UnmappedOp("padding with a non-zero constant")
            self._emit(n, "index_map", data[:1], {"fn": mod}, base)
        elif isinstance(mod, nn.Embedding):
            self._emit(n, "embedding", data, {"module": mod}, base)
        elif isinstance(mod, nn.EmbeddingBag):
            self._emit(n, "embedding_bag", data, {"module": mod}, base)
        elif isinstance(mod, nn.LSTM):
            self._emit(n, "lstm", data, {"module": mod}, base)
        elif isinstance(mod, nn.LayerNorm):
            self._emit(n, "layer_norm", data[:1], {"module": mod}, base)
        elif isinstance(mod, nn.GroupNorm):
            self._emit(n, "group_norm", data[:1], {"module": mod}, base)
        elif isinstance(mod, (nn.InstanceNorm1d, nn.InstanceNorm2d)):
            self._emit(n, "instance_norm", data[:1], {"module": mod}, base)
        elif isinstance(mod, nn.Upsample):
            if mod.mode not in _INTERPOLATE_MODES:
                raise UnmappedOp(f"upsampling mode {mod.mode!r} (supported: {', '.join(_INTERPOLATE_MODES)})")
            self._emit(n, "interpolate", data[:1], {"fn": mod}, base)
        else:
            raise UnmappedOp("no rule for this module type")

    def _weight_owner(self, w: Any) -> Optional[str]:
        if isinstance(w, fx.Node) and w.op == "get_attr":
            return str(w.target).rsplit(".", 1)[0] if "." in str(w.target) else str(w.target)
        return None

    def _const(self, v: Any) -> Optional[Tensor]:
        if v is None:
            return None
        if isinstance(v, fx.Node):
            if v.op != "get_attr":
                raise UnmappedOp("weights must be parameters or buffers of the model")
            return self._attr(v.target)
        return v

    def _map_call(self, n: fx.Node) -> None:
        fn, data = n.target, self._data_inputs(n)
        is_method = n.op == "call_method"
        first = n.args[0] if n.args else None

        def emit(kind: str, inputs: Sequence[fx.Node] = data[:1], params: dict | None = None,
                 base: str | None = None) -> None:
            self._emit(n, kind, inputs, params, base)

        if not is_method and fn in (F.conv1d, F.conv2d):
            a = _bind(n.args, n.kwargs, ["input", "weight", "bias", "stride", "padding", "dilation", "groups"],
                      {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
            if _has_node((a["stride"], a["padding"], a["dilation"], a["groups"])):
                raise UnmappedOp("convolution hyper-parameters must be constants")
            dims = 1 if fn is F.conv1d else 2
            emit(f"conv{dims}d", [a["input"]], _conv_params(self._const(a["weight"]), self._const(a["bias"]), dims,
                                                            a["stride"], a["padding"], a["dilation"], a["groups"]),
                 self._weight_owner(a["weight"]))
        elif not is_method and fn is F.linear:
            a = _bind(n.args, n.kwargs, ["input", "weight", "bias"], {"bias": None})
            emit("linear", [a["input"]], _dense_params(self._const(a["weight"]), self._const(a["bias"])),
                 self._weight_owner(a["weight"]))
        elif not is_method and fn in (F.max_pool1d, F.max_pool2d):
            a = _bind(n.args, n.kwargs, ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                         "return_indices"],
                      {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False})
            if a["return_indices"] or _has_node([v for k, v in a.items() if k != "input"]):
                raise UnmappedOp("pooling arguments must be constants and return_indices False")
            dims = 1 if fn is F.max_pool1d else 2
            emit(f"max_pool{dims}d", [a["input"]], _maxpool_params(dims, a["kernel_size"], a["stride"],
                                                                   a["padding"], a["dilation"], a["ceil_mode"]))
        elif not is_method and fn in (F.adaptive_max_pool1d, F.adaptive_max_pool2d):
            dims = 1 if fn is F.adaptive_max_pool1d else 2
            emit(f"adaptive_max_pool{dims}d", data[:1], {"fn": self._closure(n)})
        elif not is_method and fn in _PROPORTIONAL_FUNCTIONS:
            emit(_PROPORTIONAL_FUNCTIONS[fn], data[:1], {"fn": self._closure(n)})
        elif (not is_method and fn in _ACTIVATION_FUNCTIONS) or (is_method and fn in _ACTIVATION_METHODS):
            emit(_ACTIVATION_FUNCTIONS[fn] if not is_method else _ACTIVATION_METHODS[fn])
        elif is_method and fn in _ID_CASTS and n in self.index_path:
            emit("identity")
        elif (not is_method and fn in _IDENTITY_FUNCTIONS) or (is_method and fn in _IDENTITY_METHODS):
            emit("dropout" if not is_method else "identity")
        elif (not is_method and fn in _RESHAPE_FUNCTIONS) or (is_method and fn in _RESHAPE_METHODS):
            emit("reshape")
        elif (not is_method and fn in _INDEX_FUNCTIONS) or (is_method and fn in _INDEX_METHODS):
            if fn is F.pad:
                a = _bind(n.args, n.kwargs, ["input", "pad", "mode", "value"], {"mode": "constant", "value": 0.0})
                if a["mode"] != "constant" or a["value"] not in (0, 0.0, None):
                    raise UnmappedOp("only zero padding is supported")
            emit("index_map", data[:1], {"fn": self._closure(n)})
        elif (not is_method and fn in _REDUCTION_FUNCTIONS) or (is_method and fn in _REDUCTION_METHODS):
            kind = _REDUCTION_FUNCTIONS[fn] if not is_method else _REDUCTION_METHODS[fn]
            emit(kind, data[:1], {"fn": self._closure(n)})
        elif not is_method and fn is F.interpolate:
            a = _bind(n.args, n.kwargs, ["input", "size", "scale_factor", "mode"], {"mode": "nearest"})
            if a["mode"] not in _INTERPOLATE_MODES:
                raise UnmappedOp(f"interpolation mode {a['mode']!r} (supported: {', '.join(_INTERPOLATE_MODES)})")
            emit("interpolate", data[:1], {"fn": self._closure(n)})
        elif not is_method and fn in (torch.cat, torch.concat):
            tensors = n.args[0] if n.args else n.kwargs["tensors"]
            dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
            emit("cat", [t for t in tensors], {"dim": int(dim)})
        elif (not is_method and fn in (torch.split, torch.chunk, torch.unbind)) or (
                is_method and fn in ("split", "chunk", "unbind")):
            name = fn if is_method else fn.__name__
            dims_at = {"split": 2, "chunk": 2, "unbind": 1}[name]
            dim = n.args[dims_at] if len(n.args) > dims_at else n.kwargs.get("dim", 0)
            emit("split", data[:1], {"dim": int(dim), "stack": name == "unbind"})
        elif not is_method and fn is operator.getitem:
            if _has_node(n.args[1]):
                raise UnmappedOp("index depends on other values of the graph")
            emit("getitem", [first], {"index": n.args[1]})
        elif (not is_method and fn in _ADD_FUNCTIONS | _SUB_FUNCTIONS) or (
                is_method and fn in ("add", "add_", "sub", "sub_")):
            if n.kwargs.get("alpha", 1) != 1:
                raise UnmappedOp("add/sub with alpha != 1")
            operands = list(n.args[:2])
            sub = fn in _SUB_FUNCTIONS or fn in ("sub", "sub_")
            tensors = [o for o in operands if isinstance(o, fx.Node) and o not in self.meta_fx]
            signs = tuple(-1 if (sub and i == 1) else 1 for i, o in enumerate(operands)
                          if isinstance(o, fx.Node) and o not in self.meta_fx)
            consts = [o for o in operands if not (isinstance(o, fx.Node) and o not in self.meta_fx)]
            if any(isinstance(c, fx.Node) for c in consts):
                raise UnmappedOp("adds a value computed from shapes")
            constant = sum((-1 if (sub and operands.index(c) == 1) else 1) * float(c) for c in consts)
            emit("add", tensors, {"signs": signs, "constant": constant})
        elif (not is_method and fn in _MUL_FUNCTIONS) or (is_method and fn in ("mul", "mul_")):
            tensors = [o for o in n.args[:2] if isinstance(o, fx.Node) and o not in self.meta_fx]
            live = [t for t in tensors if not self._is_constant(t) and t not in self.inert]
            if len(live) == 2:
                emit("mul", live)
            elif len(live) == 1:
                emit("scale", live + [t for t in tensors if t is not live[0]])
            else:
                raise UnmappedOp("multiplies constants only")
        elif (not is_method and fn in _DIV_FUNCTIONS) or (is_method and fn in ("div", "div_")):
            divisor = n.args[1] if len(n.args) > 1 else None
            if (isinstance(divisor, fx.Node) and divisor not in self.meta_fx and not self._is_constant(divisor)
                    and divisor not in self.inert):
                raise UnmappedOp("division by a tensor computed from the input")
            emit("scale", [first] + ([divisor] if isinstance(divisor, fx.Node) and divisor not in self.meta_fx
                                     else []))
        elif (not is_method and fn in (operator.neg, torch.neg)) or (is_method and fn == "neg"):
            emit("scale")
        elif not is_method and fn is torch.where and len(n.args) == 3 and not n.kwargs:
            cond, a, b = n.args
            if cond not in self.inert or not all(isinstance(t, fx.Node) for t in (a, b)):
                raise UnmappedOp("where needs a condition computed from integer inputs alone and two tensors")
            emit("where", [cond, a, b])
        elif (not is_method and fn is torch.masked_fill) or (is_method and fn in ("masked_fill", "masked_fill_")):
            a = _bind(n.args, n.kwargs, ["input", "mask", "value"], {})
            if a["mask"] not in self.inert or _has_node(a["value"]):
                raise UnmappedOp("masked_fill needs a mask computed from integer inputs alone and a number")
            emit("masked_fill", [a["input"], a["mask"]])
        else:
            raise UnmappedOp("no rule for this operation")

    def _is_constant(self, n: fx.Node) -> bool:
        name = self.ir_of.get(n)
        return name is not None and any(x.name == name and x.kind == "constant" for x in self.nodes)


# --- parameters -------------------------------------------------------------------------------

def _dense_params(weight: Tensor, bias: Optional[Tensor]) -> dict[str, Any]:
    w = weight.detach().clone()
    b = None if bias is None else bias.detach().clone()
    return {"weight": w, "bias": b, "abs_weight": w.abs()}


def _conv_params(weight: Tensor, bias: Optional[Tensor], dims: int, stride: Any, padding: Any, dilation: Any,
                 groups: int) -> dict[str, Any]:
    p = _dense_params(weight, bias)
    stride, dilation = _tuple(stride, dims), _tuple(dilation, dims)
    pre_pad = None
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * dims
        elif padding == "same":
            totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
            if all(t % 2 == 0 for t in totals):
                padding = tuple(t // 2 for t in totals)
            else:
                pre_pad = []
                for t in reversed(totals):
                    pre_pad += [t // 2, t - t // 2]
                padding = (0,) * dims
        else:
            raise UnmappedOp(f"padding {padding!r}")
    p.update(dims=dims, stride=stride, padding=_tuple(padding, dims), dilation=dilation, groups=int(groups),
             pre_pad=pre_pad)
    return p


def _maxpool_params(dims: int, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool) -> dict:
    kernel = _tuple(kernel, dims)
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else _tuple(
        stride, dims)
    return {"dims": dims, "kernel_size": kernel, "stride": stride, "padding": _tuple(padding, dims),
            "dilation": _tuple(dilation, dims), "ceil_mode": bool(ceil_mode)}


def _bn_affine(mod: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    if mod.running_mean is None or mod.running_var is None:
        raise UnmappedOp("BatchNorm without running statistics")
    scale = torch.rsqrt(mod.running_var.detach() + mod.eps)
    if mod.weight is not None:
        scale = scale * mod.weight.detach()
    shift = -mod.running_mean.detach() * scale
    if mod.bias is not None:
        shift = shift + mod.bias.detach()
    return scale, shift


def _bn_params(mod: nn.modules.batchnorm._BatchNorm) -> dict[str, Any]:
    scale, shift = _bn_affine(mod)
    return {"scale_vec": scale, "shift_vec": shift, "module": mod}


# --- graph passes -----------------------------------------------------------------------------

_FOLDABLE = ("linear", "conv1d", "conv2d")
_TRANSPARENT = ("identity", "dropout")
_ACTIVATION_AFTER = ("linear", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "batch_norm")


def _consumers(nodes: Sequence[Node]) -> dict[str, list[Node]]:
    out: dict[str, list[Node]] = {n.name: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            out.setdefault(i, []).append(n)
    return out


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold each BatchNorm whose input is a linear/conv used only by it into that layer."""
    users = _consumers(graph.nodes)
    by_name = {n.name: n for n in graph.nodes}
    removed: dict[str, str] = {}
    for bn in graph.nodes:
        if bn.kind != "batch_norm":
            continue
        prev = by_name.get(bn.inputs[0])
        if prev is None or prev.kind not in _FOLDABLE or len(users[prev.name]) != 1:
            continue
        scale, shift = bn.params["scale_vec"], bn.params["shift_vec"]
        w = prev.params["weight"]
        if w.shape[0] != scale.shape[0]:
            continue
        shape = (-1,) + (1,) * (w.dim() - 1)
        w = w * scale.reshape(shape).to(w.dtype)
        b = prev.params["bias"]
        b = shift.to(w.dtype) if b is None else b * scale.to(w.dtype) + shift.to(w.dtype)
        prev.params.update(weight=w, bias=b, abs_weight=w.abs())
        prev.meta["fx"] = bn.meta["fx"]
        prev.meta["folded"] = bn.name
        removed[bn.name] = prev.name
    nodes = []
    for n in graph.nodes:
        if n.name in removed:
            continue
        n.inputs = tuple(removed.get(i, i) for i in n.inputs)
        nodes.append(n)
    return Graph(nodes=nodes, inputs=graph.inputs, output=removed.get(graph.output, graph.output))


def mark_activations(graph: Graph) -> None:
    """Record on each linear/conv node the activation that consumes its output (sole consumer,
    possibly through Dropout/Identity), which selects its saturation bounds."""
    users = _consumers(graph.nodes)
    for n in graph.nodes:
        if n.kind not in _ACTIVATION_AFTER:
            continue
        cur = n
        while len(users[cur.name]) == 1 and users[cur.name][0].kind in _TRANSPARENT:
            cur = users[cur.name][0]
        nxt = users[cur.name]
        if len(nxt) == 1 and nxt[0].kind in ACTIVATION_KINDS:
            n.meta["activation"] = nxt[0].kind


def check_supported(graph: Graph) -> None:
    for n in graph.nodes:
        if n.kind not in ("input", "constant") and n.kind not in RULES:
            raise UnsupportedOperation(n.name, n.source, RULES, f"op kind {n.kind!r} has no registered rule")


def _layout_free_views(gm: fx.GraphModule) -> None:
    """Turn ``x.view(shape)`` / ``x.view_as(y)`` into ``reshape`` / ``reshape_as`` in the traced copy.

    The same values, but they also work on channels-last tensors, which the engine runs 4-D
    inputs in (faster convolutions and pooling on CPU). A dtype view (``x.view(torch.half)``)
    is left alone.
    """
    renamed = {"view": "reshape", "view_as": "reshape_as"}
    changed = False
    for n in gm.graph.nodes:
        if n.op == "call_method" and n.target in renamed and not any(isinstance(a, torch.dtype) for a in n.args):
            n.target = renamed[n.target]
            changed = True
    if changed:
        gm.recompile()


def trace(model: nn.Module, fold: bool = True, integer_inputs: Optional[dict[str, Any]] = None
          ) -> tuple[Graph, fx.GraphModule]:
    """Trace ``model`` (which the caller owns: parameters are cloned, nothing is modified);
    ``integer_inputs`` (name -> dtype): inputs besides the token ids known to be integer/bool."""
    if isinstance(model, fx.GraphModule) and model.meta.get("backtrace_frontend"):
        return _graph_of(model, fold, integer_inputs), model    # a graph another front end built (Keras)
    try:
        gm = fx.GraphModule(model, fx.Tracer().trace(model))
    except Exception as exc:  # symbolic tracing failed: data-dependent control flow etc.
        raise UnsupportedOperation("<trace>", f"model {type(model).__name__}", RULES,
                                   f"torch.fx could not trace it: {exc}".replace("\n", " ")) from exc
    return _graph_of(gm, fold, integer_inputs), gm


def _graph_of(gm: fx.GraphModule, fold: bool, integer_inputs: Optional[dict[str, Any]] = None) -> Graph:
    graph = _Builder(gm, integer_inputs).build()
    _layout_free_views(gm)
    if fold:
        graph = fold_batchnorm(graph)
    mark_activations(graph)
    check_supported(graph)
    return graph


def module_attr(root: nn.Module, target: str) -> Any:
    """The attribute a ``get_attr`` node names (a dotted path below ``root``)."""
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


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


def lower(model: nn.Module, fold: bool = True, integer_inputs: Optional[dict[str, Any]] = None
          ) -> tuple[Graph, Callable[[Sequence[Any], set], dict], fx.GraphModule]:
    """The front-end interface: ``(graph, runner, traced module)``; ``runner(inputs, wanted)``
    runs the traced copy and returns ``{IR name: value}`` for the IR nodes in ``wanted``
    (and any other node that shares a recorded value, e.g. a layer with its folded BatchNorm).
    The graph knows the token-id inputs an embedding reads and ``integer_inputs``;
    :func:`lower_for` builds it for other integer inputs."""
    graph, gm = trace(model, fold=fold, integer_inputs=integer_inputs)
    return graph, runner(graph, gm), gm


def lower_for(gm: fx.GraphModule, fold: bool, integer_inputs: dict[str, Any]
              ) -> tuple[Graph, Callable[[Sequence[Any], set], dict]]:
    """The graph and runner of a traced module for inputs of which ``integer_inputs`` (name ->
    dtype) are integer/bool tensors."""
    graph = _graph_of(gm, fold, integer_inputs)
    return graph, runner(graph, gm)


def runner(graph: Graph, gm: fx.GraphModule) -> Callable[[Sequence[Any], set], dict]:
    def run(inputs: Sequence[Any], wanted: set) -> dict:
        fx_names = {n.meta["fx"] for n in graph.nodes if n.name in wanted and n.kind != "constant"}
        rec = _Recorder(gm, fx_names)
        rec.run(*inputs)
        outs: dict[str, Any] = {}
        for node in graph.nodes:
            if node.kind != "constant" and node.meta["fx"] in rec.kept:
                outs[node.name] = rec.kept[node.meta["fx"]]
        return outs

    return run
