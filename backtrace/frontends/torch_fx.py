"""The torch.fx front end: any traceable ``nn.Module`` to a :class:`~backtrace.ir.Graph`.

Module calls and functional calls map onto the same op kinds (``nn.ReLU``, ``F.relu``,
``torch.relu`` and ``x.relu()`` are all ``"relu"``: one line of :data:`TABLE`). Module-call
nodes are named by the module's qualified name (``"layer1.0.conv1"``; a module called again
gets ``":1"``, ``":2"``...); functional convolutions/linears whose weight is a parameter are
named by the module owning the weight. Values that are not tensors (``x.size(0)``, shapes) are
not nodes: :class:`~backtrace.engine.Backtrace` runs the traced module itself, so they are
computed as the model computes them.

Each IR node records in ``meta["fx"]`` the fx node whose value is its output. BatchNorm that
directly follows a linear/conv (its sole consumer) is folded into it: the layer's parameters
become the folded ones and its value is read from the BatchNorm's output. The model itself is
never modified (parameters are cloned).

Integer inputs (see :mod:`backtrace.frontends.lowering`): an input whose values reach an
``nn.Embedding``/``nn.EmbeddingBag`` as its indices (possibly through reshapes and index
moves) holds token ids; so does any input the caller passes as an integer/bool tensor
(:func:`lower` builds the graph for the dtypes given; without them it knows only the ids an
embedding reads). Every value computed from integer inputs alone (a padding mask
``ids.ne(pad)``, its casts, sums and clamps, position ids) is an ``"aux"`` node, so
``x * mask`` is a scale of ``x`` and ``s / mask.sum(1)`` a division by a constant. Values
computed from constants alone are mapped as they are.
"""
from __future__ import annotations

import operator
from typing import Any, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from backtrace.errors import UnsupportedOperation
from backtrace.frontends.lowering import (Handler, Lowering, Runner, Unmapped, add, by_target, cat, check_supported,
                                          conv_params, dense_params, fold_batchnorm, getitem, handler,
                                          mark_activations, maxpool_params, node_args, runner, same, split,
                                          unlowered, with_fn)
from backtrace.ir import Graph
from backtrace.rules import RULES

_INTERPOLATE_MODES = ("nearest", "linear", "bilinear")
_META_METHODS = {"size", "dim", "numel"}
_META_ATTRIBUTES = ("shape", "dtype", "device", "ndim")


def _bind(args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str], defaults: dict[str, Any]) -> dict:
    out = dict(defaults)
    out.update(zip(names, args))
    out.update(kwargs)
    return out


def _weight_owner(w: Any) -> Optional[str]:
    """The module a ``get_attr`` weight belongs to: the name of a functional layer's node."""
    if isinstance(w, fx.Node) and w.op == "get_attr":
        return str(w.target).rsplit(".", 1)[0] if "." in str(w.target) else str(w.target)
    return None


# --- handlers: modules ----------------------------------------------------------------------------

@handler("linear")
def _linear_module(b: Lowering, n: fx.Node, ins: list) -> None:
    mod = b.gm.get_submodule(n.target)
    b.emit(n, "linear", ins[:1], dense_params(mod.weight, mod.bias))


@handler("conv1d", "conv2d")
def _conv_module(b: Lowering, n: fx.Node, ins: list) -> None:
    mod = b.gm.get_submodule(n.target)
    if mod.padding_mode != "zeros":
        raise Unmapped(f"padding_mode {mod.padding_mode!r} (only 'zeros' is supported)")
    dims = 1 if isinstance(mod, nn.Conv1d) else 2
    b.emit(n, f"conv{dims}d", ins[:1],
           conv_params(mod.weight, mod.bias, dims, mod.stride, mod.padding, mod.dilation, mod.groups))


@handler("conv_transpose1d", "conv_transpose2d")
def _conv_transpose_module(b: Lowering, n: fx.Node, ins: list) -> None:
    mod = b.gm.get_submodule(n.target)
    b.emit(n, f"conv_transpose{1 if isinstance(mod, nn.ConvTranspose1d) else 2}d", ins[:1], {"module": mod})


@handler("batch_norm")
def _batch_norm_module(b: Lowering, n: fx.Node, ins: list) -> None:
    mod = b.gm.get_submodule(n.target)
    if mod.running_mean is None or mod.running_var is None:
        raise Unmapped("BatchNorm without running statistics")
    scale = torch.rsqrt(mod.running_var.detach() + mod.eps)
    if mod.weight is not None:
        scale = scale * mod.weight.detach()
    shift = -mod.running_mean.detach() * scale
    if mod.bias is not None:
        shift = shift + mod.bias.detach()
    b.emit(n, "batch_norm", ins[:1], {"scale_vec": scale, "shift_vec": shift})


@handler("max_pool1d", "max_pool2d")
def _max_pool_module(b: Lowering, n: fx.Node, ins: list) -> None:
    mod = b.gm.get_submodule(n.target)
    if mod.return_indices:
        raise Unmapped("return_indices=True")
    dims = 1 if isinstance(mod, nn.MaxPool1d) else 2
    b.emit(n, f"max_pool{dims}d", ins[:1],
           maxpool_params(dims, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode))


@handler("adaptive_max_pool1d", "adaptive_max_pool2d")
def _adaptive_max_pool(b: Lowering, n: fx.Node, ins: list) -> None:
    if n.op == "call_module" and b.gm.get_submodule(n.target).return_indices:
        raise Unmapped("return_indices=True")
    one_d = (isinstance(b.gm.get_submodule(n.target), nn.AdaptiveMaxPool1d) if n.op == "call_module"
             else n.target is F.adaptive_max_pool1d)
    b.emit(n, f"adaptive_max_pool{1 if one_d else 2}d", ins[:1], {"fn": b.closure(n)})


@handler("index_map")
def _constant_pad_module(b: Lowering, n: fx.Node, ins: list) -> None:
    if getattr(b.gm.get_submodule(n.target), "value", 0.0) != 0.0:
        raise Unmapped("padding with a non-zero constant")
    b.emit(n, "index_map", ins[:1], {"fn": b.closure(n)})


@handler("interpolate")
def _upsample_module(b: Lowering, n: fx.Node, ins: list) -> None:
    mode = b.gm.get_submodule(n.target).mode
    if mode not in _INTERPOLATE_MODES:
        raise Unmapped(f"upsampling mode {mode!r} (supported: {', '.join(_INTERPOLATE_MODES)})")
    b.emit(n, "interpolate", ins[:1], {"fn": b.closure(n)})


def _with_module(kind: str) -> Handler:
    """``kind`` of all the data inputs; the rule reads the module itself (``params["module"]``)."""
    return Handler((kind,), lambda b, n, ins: b.emit(n, kind, ins, {"module": b.gm.get_submodule(n.target)}))


# --- handlers: functions and tensor methods -------------------------------------------------------

@handler("conv1d", "conv2d")
def _conv_function(b: Lowering, n: fx.Node, ins: list) -> None:
    a = _bind(n.args, n.kwargs, ["input", "weight", "bias", "stride", "padding", "dilation", "groups"],
              {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
    if node_args((a["stride"], a["padding"], a["dilation"], a["groups"])):
        raise Unmapped("convolution hyper-parameters must be constants")
    dims = 1 if n.target is F.conv1d else 2
    b.emit(n, f"conv{dims}d", [a["input"]], conv_params(b.const(a["weight"]), b.const(a["bias"]), dims,
                                                         a["stride"], a["padding"], a["dilation"], a["groups"]),
           _weight_owner(a["weight"]))


@handler("linear")
def _linear_function(b: Lowering, n: fx.Node, ins: list) -> None:
    a = _bind(n.args, n.kwargs, ["input", "weight", "bias"], {"bias": None})
    b.emit(n, "linear", [a["input"]], dense_params(b.const(a["weight"]), b.const(a["bias"])),
           _weight_owner(a["weight"]))


@handler("max_pool1d", "max_pool2d")
def _max_pool_function(b: Lowering, n: fx.Node, ins: list) -> None:
    a = _bind(n.args, n.kwargs, ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                 "return_indices"],
              {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False})
    if a["return_indices"] or node_args([v for k, v in a.items() if k != "input"]):
        raise Unmapped("pooling arguments must be constants and return_indices False")
    dims = 1 if n.target is F.max_pool1d else 2
    b.emit(n, f"max_pool{dims}d", [a["input"]],
           maxpool_params(dims, a["kernel_size"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"]))


@handler("identity")
def _id_cast(b: Lowering, n: fx.Node, ins: list) -> None:
    """``ids.long()``, ``ids.int()``: an index move of token ids on their way to a lookup."""
    if n not in b.index_path:
        raise Unmapped(b.no_rule(n))
    b.emit(n, "identity", ins[:1])


@handler("index_map")
def _pad_function(b: Lowering, n: fx.Node, ins: list) -> None:
    a = _bind(n.args, n.kwargs, ["input", "pad", "mode", "value"], {"mode": "constant", "value": 0.0})
    if a["mode"] != "constant" or a["value"] not in (0, 0.0, None):
        raise Unmapped("only zero padding is supported")
    b.emit(n, "index_map", ins[:1], {"fn": b.closure(n)})


@handler("interpolate")
def _interpolate_function(b: Lowering, n: fx.Node, ins: list) -> None:
    a = _bind(n.args, n.kwargs, ["input", "size", "scale_factor", "mode"], {"mode": "nearest"})
    if a["mode"] not in _INTERPOLATE_MODES:
        raise Unmapped(f"interpolation mode {a['mode']!r} (supported: {', '.join(_INTERPOLATE_MODES)})")
    b.emit(n, "interpolate", ins[:1], {"fn": b.closure(n)})


def _is_constant(b: Lowering, n: fx.Node) -> bool:
    name = b.ir_of.get(n)
    return name is not None and any(x.name == name and x.kind == "constant" for x in b.nodes)


@handler("mul", "scale")
def _mul(b: Lowering, n: fx.Node, ins: list) -> None:
    tensors = [o for o in n.args[:2] if isinstance(o, fx.Node) and o in b.ir_of]
    live = [t for t in tensors if not _is_constant(b, t) and t not in b.inert]
    if len(live) == 2:
        b.emit(n, "mul", live)
    elif len(live) == 1:
        b.emit(n, "scale", live + [t for t in tensors if t is not live[0]])
    else:
        raise Unmapped("multiplies constants only")


@handler("scale")
def _div(b: Lowering, n: fx.Node, ins: list) -> None:
    divisor = n.args[1] if len(n.args) > 1 else None
    tensor = isinstance(divisor, fx.Node) and divisor in b.ir_of
    if tensor and not _is_constant(b, divisor) and divisor not in b.inert:
        raise Unmapped("division by a tensor computed from the input")
    b.emit(n, "scale", [n.args[0]] + ([divisor] if tensor else []))


@handler("where")
def _where(b: Lowering, n: fx.Node, ins: list) -> None:
    if len(n.args) != 3 or n.kwargs:
        raise Unmapped(b.no_rule(n))
    cond, x, y = n.args
    if cond not in b.inert or not all(isinstance(t, fx.Node) for t in (x, y)):
        raise Unmapped("where needs a condition computed from integer inputs alone and two tensors")
    b.emit(n, "where", [cond, x, y])


@handler("masked_fill")
def _masked_fill(b: Lowering, n: fx.Node, ins: list) -> None:
    a = _bind(n.args, n.kwargs, ["input", "mask", "value"], {})
    if a["mask"] not in b.inert or node_args(a["value"]):
        raise Unmapped("masked_fill needs a mask computed from integer inputs alone and a number")
    b.emit(n, "masked_fill", [a["input"], a["mask"]])


# --- the table: module classes (and their subclasses), functions, tensor method names ----------

_BN = nn.modules.batchnorm
TABLE: dict[Any, Handler] = by_target({
    # layers with weights and lookups
    nn.Linear: _linear_module, F.linear: _linear_function,
    (nn.Conv1d, nn.Conv2d): _conv_module, (F.conv1d, F.conv2d): _conv_function,
    (nn.ConvTranspose1d, nn.ConvTranspose2d): _conv_transpose_module,
    (nn.BatchNorm1d, nn.BatchNorm2d): _batch_norm_module,
    _BN._BatchNorm: unlowered("batch_norm", "no rule for this module type"),
    nn.LayerNorm: same("layer_norm"), nn.GroupNorm: same("group_norm"),
    (nn.InstanceNorm1d, nn.InstanceNorm2d): same("instance_norm"),
    nn.LSTM: _with_module("lstm"),
    nn.Embedding: Handler(("embedding",), lambda b, n, ins: b.emit(n, "embedding", ins)),
    nn.EmbeddingBag: _with_module("embedding_bag"),
    # activations
    (nn.ReLU, F.relu, torch.relu, "relu"): same("relu"),
    (nn.ReLU6, F.relu6): same("relu6"),
    (nn.LeakyReLU, F.leaky_relu): same("leaky_relu"),
    (nn.ELU, F.elu): same("elu"),
    (nn.GELU, F.gelu): same("gelu"),
    (nn.SiLU, F.silu): same("silu"),
    (nn.Mish, F.mish): same("mish"),
    (nn.Softplus, F.softplus): same("softplus"),
    (nn.Hardtanh, F.hardtanh): same("hardtanh"),
    (nn.Hardswish, F.hardswish): same("hardswish"),
    (nn.Hardsigmoid, F.hardsigmoid): same("hardsigmoid"),
    (nn.Tanh, torch.tanh, F.tanh, "tanh"): same("tanh"),
    (nn.Sigmoid, torch.sigmoid, F.sigmoid, "sigmoid"): same("sigmoid"),
    (nn.Softmax, torch.softmax, F.softmax, "softmax"): same("softmax"),
    # pooling and reductions
    (nn.AvgPool1d, F.avg_pool1d): with_fn("avg_pool1d"),
    (nn.AvgPool2d, F.avg_pool2d): with_fn("avg_pool2d"),
    (nn.AdaptiveAvgPool1d, F.adaptive_avg_pool1d): with_fn("adaptive_avg_pool1d"),
    (nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d): with_fn("adaptive_avg_pool2d"),
    (nn.MaxPool1d, nn.MaxPool2d): _max_pool_module, (F.max_pool1d, F.max_pool2d): _max_pool_function,
    (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d): _adaptive_max_pool,
    (torch.mean, "mean"): with_fn("mean"),
    (torch.sum, "sum"): with_fn("sum"),
    # moving values around
    (nn.Identity, "contiguous", "clone", "detach", "float", "double", "to", "type_as"): same("identity"),
    ("long", "int"): _id_cast,
    (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, F.dropout, F.dropout1d, F.dropout2d,
     F.alpha_dropout): same("dropout"),
    (nn.Flatten, nn.Unflatten, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, "view", "reshape",
     "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"): same("reshape"),
    (torch.permute, torch.transpose, torch.t, torch.movedim, torch.flip, torch.roll, torch.narrow, torch.select,
     "permute", "transpose", "t", "movedim", "flip", "roll", "narrow", "select", "expand", "expand_as", "repeat",
     "mT"): with_fn("index_map"),
    (nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d): _constant_pad_module,
    F.pad: _pad_function,
    operator.getitem: getitem,
    (torch.cat, torch.concat): cat,
    (torch.split, torch.chunk, "split", "chunk"): split(2),
    (torch.unbind, "unbind"): split(1, stack=True),
    nn.Upsample: _upsample_module, F.interpolate: _interpolate_function,
    # arithmetic and masks
    (operator.add, operator.iadd, torch.add, "add", "add_"): add(sub=False),
    (operator.sub, operator.isub, torch.sub, "sub", "sub_"): add(sub=True),
    (operator.mul, operator.imul, torch.mul, "mul", "mul_"): _mul,
    (operator.truediv, operator.itruediv, torch.div, "div", "div_"): _div,
    (operator.neg, torch.neg, "neg"): same("scale"),
    torch.where: _where,
    (torch.masked_fill, "masked_fill", "masked_fill_"): _masked_fill,
})
del _BN


class FxLowering(Lowering):
    """The torch.fx graph of a traced module: module calls are looked up by class (the nearest
    class of the table in the module's MRO), functions by identity, methods by name."""

    def __init__(self, gm: fx.GraphModule, integer_inputs: Optional[dict[str, Any]] = None) -> None:
        super().__init__(gm, {name: "token ids" for name in token_id_inputs(gm)})
        self.integer.update(integer_inputs or {})
        self.meta_fx: set[fx.Node] = set()        # non-tensor values (sizes, shapes)

    def handler_of(self, n: fx.Node) -> Optional[Handler]:
        return handler_of(self.gm, n)

    def no_rule(self, n: fx.Node) -> str:
        return "no rule for this module type" if n.op == "call_module" else "no rule for this operation"

    def skip(self, n: fx.Node) -> bool:
        if n.op == "call_method" and n.target in _META_METHODS:
            meta = True
        elif n.op == "call_function" and n.target is getattr and len(n.args) > 1 and n.args[1] in _META_ATTRIBUTES:
            meta = True
        else:
            deps = node_args((n.args, n.kwargs))
            meta = n.op in ("call_function", "call_method") and bool(deps) and all(d in self.meta_fx for d in deps)
        if meta:
            self.meta_fx.add(n)
        return meta

    def input_name(self, n: fx.Node) -> str:
        return str(n.target).lstrip("*")          # the argument's name

    def name_of(self, n: fx.Node) -> str:
        return str(n.target) if n.op == "call_module" else n.name

    def lookup_indices(self, n: fx.Node) -> Optional[fx.Node]:
        return _lookup_indices(self.gm, n)

    def source(self, n: fx.Node) -> str:
        if n.op == "call_module":
            return f"module {n.target} ({type(self.gm.get_submodule(n.target)).__name__})"
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


def handler_of(gm: fx.GraphModule, n: fx.Node) -> Optional[Handler]:
    """The table's handler for an fx call node (``None``: not in the table)."""
    if n.op == "call_module":
        for cls in type(gm.get_submodule(n.target)).__mro__:
            if cls in TABLE:
                return TABLE[cls]
        return None
    if n.op in ("call_function", "call_method"):
        try:
            return TABLE.get(n.target)
        except TypeError:                         # an unhashable target
            return None
    return None


def _lookup_indices(gm: fx.GraphModule, n: fx.Node) -> Optional[fx.Node]:
    h = handler_of(gm, n) if n.op == "call_module" else None
    return n.args[0] if h is not None and h.all("lookup") and n.args else None


def token_id_inputs(gm: fx.GraphModule) -> set[str]:
    """Names of the inputs whose values reach an embedding lookup as its indices (through index
    moves only): they hold integer token ids whatever the caller passes."""
    found: set[str] = set()
    for n in gm.graph.nodes:
        cur = _lookup_indices(gm, n)
        while isinstance(cur, fx.Node) and cur.op not in ("placeholder", "get_attr") and cur.args:
            h = handler_of(gm, cur)
            if h is None or not h.all("moves"):
                break
            cur = cur.args[0]
        if isinstance(cur, fx.Node) and cur.op == "placeholder":
            found.add(str(cur.target).lstrip("*"))
    return found


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
    graph = FxLowering(gm, integer_inputs).build()
    _layout_free_views(gm)
    if fold:
        graph = fold_batchnorm(graph)
    mark_activations(graph)
    check_supported(graph)
    return graph


def lower(model: nn.Module, fold: bool = True, integer_inputs: Optional[dict[str, Any]] = None
          ) -> tuple[Graph, Runner, fx.GraphModule]:
    """The front-end interface: ``(graph, runner, traced module)``; ``runner(inputs, wanted)``
    runs the traced copy and returns ``{IR name: value}`` for the IR nodes in ``wanted``.
    The graph knows the token-id inputs an embedding reads and ``integer_inputs``;
    :func:`lower_for` builds it for other integer inputs."""
    graph, gm = trace(model, fold=fold, integer_inputs=integer_inputs)
    return graph, runner(graph, gm), gm


def lower_for(gm: fx.GraphModule, fold: bool, integer_inputs: dict[str, Any]) -> tuple[Graph, Runner]:
    """The graph and runner of a traced module for inputs of which ``integer_inputs`` (name ->
    dtype) are integer/bool tensors."""
    graph = _graph_of(gm, fold, integer_inputs)
    return graph, runner(graph, gm)
