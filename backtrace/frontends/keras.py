"""The Keras 3 front end: a Keras model to a torch mirror, then to the same IR as torch models.

Each Keras layer becomes the torch module or function that computes the same values, with the
Keras weights copied (kernels transposed to torch's layouts), wired into a ``torch.fx`` graph
in the Keras model's own order. The torch.fx front end then turns that graph into the IR, so
the relevance rules, BatchNorm folding and the activation bookkeeping (saturation bounds) are
exactly those of a torch model: a Keras model and the torch model written the same way get
the same relevance.

Layouts: Keras convolutions and pools are channels-last, torch's channels-first. Every value
of the mirror is the Keras value with its axes permuted (``perm``: mirror axis i is Keras axis
``perm[i]``); a layer that needs another layout gets a ``permute`` node first (an index map in
the IR, through which relevance passes exactly). So a CNN runs channels-first from its first
convolution to its ``Flatten``, where one permute restores Keras's flattening order; Keras
``Permute`` layers only change the bookkeeping. The mirror takes the inputs as Keras does
(channels-last), so the input relevance has the shape the user gave.

IR nodes carry the Keras layer names (``"conv2d_1"``; an ``activation=`` argument adds a node
``"<layer>_<activation>"``). Any layer or argument without an exact mapping raises
:class:`~backtrace.errors.UnsupportedOperation` naming the layer.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np
import torch
import torch.fx as fx
from torch import Tensor, nn

from backtrace.errors import UnsupportedOperation

# what the mirror's fx graph calls are recognised as by the torch.fx front end
_PERMUTE, _FLATTEN, _CAT = torch.permute, torch.flatten, torch.cat

SUPPORTED_LAYERS = (
    "InputLayer", "Dense", "Conv1D", "Conv2D", "Conv1DTranspose", "Conv2DTranspose", "MaxPooling1D",
    "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "Flatten", "Reshape", "Permute", "ZeroPadding1D",
    "ZeroPadding2D", "Concatenate", "Add", "Subtract", "Multiply", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "GaussianDropout", "GaussianNoise", "BatchNormalization", "LayerNormalization",
    "Embedding", "LSTM", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Functional", "Sequential",
)

# Keras activation (function name) -> a torch module computing the same values
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
    "silu": nn.SiLU, "swish": nn.SiLU, "elu": nn.ELU, "softplus": nn.Softplus, "mish": nn.Mish,
    "leaky_relu": lambda: nn.LeakyReLU(0.2), "hard_sigmoid": nn.Hardsigmoid, "hard_silu": nn.Hardswish,
    "hard_swish": nn.Hardswish,
}


class _Unmapped(Exception):
    """Raised while mapping one layer; turned into :class:`UnsupportedOperation` naming it."""


@dataclass
class _Value:
    """A Keras tensor in the mirror: the fx node holding it with its axes in order ``perm``
    (mirror axis i is Keras axis ``perm[i]``), and its Keras shape (batch first, ``None`` where
    unknown). ``views`` caches the permuted copies already made."""

    node: fx.Node
    perm: tuple[int, ...]
    shape: tuple[Optional[int], ...]
    views: dict[tuple[int, ...], fx.Node] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return len(self.shape)


def _channels_first(rank: int) -> tuple[int, ...]:
    """The perm that puts a channels-last tensor's last axis second (NHWC -> NCHW)."""
    return (0, rank - 1) + tuple(range(1, rank - 1))


def _np(v: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float32)


def _param(v: Any) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.ascontiguousarray(v)), requires_grad=False)


def _ints(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v),) * n


class _Mirror:
    """Builds the torch mirror of one Keras model, layer by layer."""

    def __init__(self) -> None:
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.module_of: dict[tuple[int, str], str] = {}   # (id(keras layer), part) -> module name
        self.names: set[str] = set()

    # naming and emitting ---------------------------------------------------------------------
    def _name(self, base: str) -> str:
        name = re.sub(r"\W", "_", base) or "layer"
        if name[0].isdigit():
            name = "_" + name
        unique, k = name, 0
        while unique in self.names or hasattr(nn.Module, unique):
            k += 1
            unique = f"{name}_{k}"
        self.names.add(unique)
        return unique

    def module(self, layer: Any, make: Callable[[], nn.Module], suffix: str = "") -> str:
        """The module computing ``layer`` (made once, so a shared layer is one module)."""
        key = (id(layer), suffix)
        if key not in self.module_of:
            name = self._name(layer.name + (f"_{suffix}" if suffix else ""))
            self.root.add_module(name, make())
            self.module_of[key] = name
        return self.module_of[key]

    def call_module(self, target: str, *args: Any) -> fx.Node:
        return self.graph.call_module(target, args)

    def call(self, fn: Any, args: tuple, name: str) -> fx.Node:
        return self.graph.create_node("call_function", fn, args, {}, name=self._name(name))

    def view(self, v: _Value, perm: tuple[int, ...]) -> fx.Node:
        """``v`` with its axes in the order ``perm`` (a permute node, made once)."""
        if v.perm == perm:
            return v.node
        if perm not in v.views:
            order = tuple(v.perm.index(p) for p in perm)
            v.views[perm] = self.call(_PERMUTE, (v.node, order), f"{v.node.name}_permute")
        return v.views[perm]

    # the model graph -------------------------------------------------------------------------
    def run_function(self, fn: Any, inputs: Sequence[_Value]) -> list[_Value]:
        """Map a Keras Functional graph (a model, or a nested one) whose inputs are ``inputs``."""
        known: dict[int, _Value] = {id(t): v for t, v in zip(fn.inputs, inputs)}
        for depth in sorted(fn._nodes_by_depth, reverse=True):
            for node in fn._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(id(t) not in known for t in node.input_tensors):
                    continue       # a node of another model sharing this layer
                args, kwargs = node.arguments.fill_in(known)
                ins = [a for a in keras.tree.flatten((args, kwargs)) if isinstance(a, _Value)]
                outs = self.layer(node.operation, ins, [tuple(t.shape) for t in node.outputs], kwargs)
                if len(outs) != len(node.outputs):
                    raise UnsupportedOperation(node.operation.name, _source(node.operation), SUPPORTED_LAYERS,
                                               "layers with several outputs are not supported")
                for t, v in zip(node.outputs, outs):
                    known[id(t)] = v
        return [known[id(t)] for t in fn.outputs]

    def layer(self, layer: Any, ins: list[_Value], out_shapes: list[tuple], kwargs: dict) -> list[_Value]:
        kind = type(layer).__name__
        try:
            if isinstance(layer, keras.Sequential):
                return self.run_function(_functional_of(layer), ins)
            if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"):
                return self.run_function(layer, ins)
            if kwargs.get("mask") is not None:
                raise _Unmapped("masks are not supported")
            mapper = _LAYERS.get(type(layer))
            if mapper is None:
                raise _Unmapped("no mapping for this layer type")
            return [mapper(self, layer, ins, out_shapes[0])]
        except _Unmapped as exc:
            raise UnsupportedOperation(layer.name, _source(layer), SUPPORTED_LAYERS, str(exc)) from None

    # pieces shared by several layers ----------------------------------------------------------
    def activation(self, layer: Any, fn: Any, v: _Value) -> _Value:
        """Apply a Keras activation function (an ``activation=`` argument or layer)."""
        name = getattr(fn, "__name__", None) or type(fn).__name__
        if name == "linear":
            return v
        if name == "softmax":
            dim = v.perm.index(v.rank - 1)
            target = self.module(layer, lambda: nn.Softmax(dim=dim), "softmax")
        elif name in _ACTIVATIONS:
            target = self.module(layer, _ACTIVATIONS[name], name)
        else:
            raise _Unmapped(f"activation {name!r} has no rule; supported: linear, softmax, "
                            f"{', '.join(sorted(_ACTIVATIONS))}")
        return _Value(self.call_module(target, v.node), v.perm, v.shape)

    def spatial_perm(self, layer: Any, rank: int) -> tuple[int, ...]:
        """The perm a conv/pool layer's torch module needs (channels second)."""
        fmt = getattr(layer, "data_format", "channels_last")
        return _channels_first(rank) if fmt == "channels_last" else tuple(range(rank))

    def spatial_sizes(self, layer: Any, v: _Value) -> list[Optional[int]]:
        fmt = getattr(layer, "data_format", "channels_last")
        return list(v.shape[1:-1] if fmt == "channels_last" else v.shape[2:])


def _source(layer: Any) -> str:
    return f"Keras layer {layer.name} ({type(layer).__name__})"


def _functional_of(model: Any) -> Any:
    fn = getattr(model, "_functional", None)
    if fn is None:
        raise _Unmapped("the Sequential model is not built: give it a keras.Input first or call build()")
    return fn


def _same_pads(sizes: Sequence[Optional[int]], kernel: Sequence[int], stride: Sequence[int],
               dilation: Sequence[int]) -> list[tuple[int, int]]:
    """TensorFlow's 'same' padding per spatial axis: (before, after), the extra one after."""
    pads = []
    for n, k, s, d in zip(sizes, kernel, stride, dilation):
        eff = d * (k - 1) + 1
        if s == 1:
            total = eff - 1
        elif n is None:
            raise _Unmapped("'same' padding with strides needs a known spatial size (give keras.Input a shape)")
        else:
            total = max((math.ceil(n / s) - 1) * s + eff - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _zero_pad(dims: int, pads: Sequence[tuple[int, int]]) -> nn.Module:
    flat: list[int] = []
    for before, after in reversed(pads):          # torch lists the last axis first
        flat += [before, after]
    return nn.ZeroPad1d(tuple(flat)) if dims == 1 else nn.ZeroPad2d(tuple(flat))


# --- layers -----------------------------------------------------------------------------------

def _dense(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    perm = tuple(range(v.rank))                   # Dense works on the last Keras axis

    def make() -> nn.Module:
        kernel = _np(layer.kernel)
        mod = nn.Linear(kernel.shape[0], kernel.shape[1], bias=layer.use_bias)
        mod.weight = _param(kernel.T)
        if layer.use_bias:
            mod.bias = _param(_np(layer.bias))
        return mod
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise _Unmapped("LoRA or quantized Dense layers are not supported")
    out = _Value(m.call_module(m.module(layer, make), m.view(v, perm)), perm, out_shape)
    return m.activation(layer, layer.activation, out)


def _conv(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    dims = len(layer.kernel_size)
    kernel_size, stride = _ints(layer.kernel_size, dims), _ints(layer.strides, dims)
    dilation = _ints(layer.dilation_rate, dims)
    groups = int(getattr(layer, "groups", 1))
    padding = layer.padding
    pre: Optional[list[tuple[int, int]]] = None
    if padding == "valid":
        sym: tuple[int, ...] = (0,) * dims
    elif padding == "same":
        pads = _same_pads(m.spatial_sizes(layer, v), kernel_size, stride, dilation)
        if all(b == a for b, a in pads):
            sym = tuple(b for b, _ in pads)
        else:
            pre, sym = pads, (0,) * dims
    elif padding == "causal" and dims == 1:
        pre, sym = [(dilation[0] * (kernel_size[0] - 1), 0)], (0,)
    else:
        raise _Unmapped(f"padding {padding!r}; supported: valid, same (and causal for Conv1D)")
    perm = m.spatial_perm(layer, v.rank)
    x = m.view(v, perm)
    if pre is not None:
        x = m.call_module(m.module(layer, lambda: _zero_pad(dims, pre), "pad"), x)

    def make() -> nn.Module:
        kernel = _np(layer.kernel)                  # (*k, in / groups, out)
        in_ch = kernel.shape[-2] * groups
        cls = nn.Conv1d if dims == 1 else nn.Conv2d
        mod = cls(in_ch, kernel.shape[-1], kernel_size, stride=stride, padding=sym, dilation=dilation,
                  groups=groups, bias=layer.use_bias)
        mod.weight = _param(np.transpose(kernel, (dims + 1, dims) + tuple(range(dims))))
        if layer.use_bias:
            mod.bias = _param(_np(layer.bias))
        return mod
    out = _Value(m.call_module(m.module(layer, make), x), perm, out_shape)
    return m.activation(layer, layer.activation, out)


def _conv_transpose(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    dims = len(layer.kernel_size)
    kernel_size, stride = _ints(layer.kernel_size, dims), _ints(layer.strides, dims)
    dilation = _ints(layer.dilation_rate, dims)
    if getattr(layer, "output_padding", None) is not None:
        raise _Unmapped("output_padding is not supported")
    if layer.padding not in ("valid", "same"):
        raise _Unmapped(f"padding {layer.padding!r}; supported: valid, same")
    # torch's full transposed convolution has (n-1)s + d(k-1) + 1 positions; Keras keeps
    # max(n s, that) ('valid') or n s ('same', cropping total // 2 before and the rest after)
    padding, out_pad, crop = [], [], []
    for k, s, d in zip(kernel_size, stride, dilation):
        eff = d * (k - 1) + 1
        total = max(eff - s, 0) if layer.padding == "same" else 0
        padding.append(total // 2)
        out_pad.append(max(s - eff, 0))
        crop.append(total % 2 == 1)
    perm = m.spatial_perm(layer, v.rank)

    def make() -> nn.Module:
        kernel = _np(layer.kernel)                  # (*k, out, in)
        cls = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
        mod = cls(kernel.shape[-1], kernel.shape[-2], kernel_size, stride=stride, padding=tuple(padding),
                  output_padding=tuple(out_pad), dilation=dilation, bias=layer.use_bias)
        mod.weight = _param(np.transpose(kernel, (dims + 1, dims) + tuple(range(dims))))
        if layer.use_bias:
            mod.bias = _param(_np(layer.bias))
        return mod
    x = m.call_module(m.module(layer, make), m.view(v, perm))
    if any(crop):                                    # the odd element of 'same' cropping falls after
        index = (slice(None), slice(None)) + tuple(slice(0, -1) if c else slice(None) for c in crop)
        x = m.call(operator.getitem, (x, index), f"{layer.name}_crop")
    return m.activation(layer, layer.activation, _Value(x, perm, out_shape))


def _pool(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    dims = len(layer.pool_size)
    kernel, stride = _ints(layer.pool_size, dims), _ints(layer.strides, dims)
    is_max = "Max" in type(layer).__name__
    perm = m.spatial_perm(layer, v.rank)
    if layer.padding == "valid":
        padding, ceil = (0,) * dims, False
    elif layer.padding == "same":
        # TensorFlow pads (total // 2, rest) and ignores the padding: torch's symmetric
        # padding of total // 2 with ceil mode gives the same windows and counts
        sizes = m.spatial_sizes(layer, v)
        pads = _same_pads(sizes, kernel, stride, (1,) * dims)
        padding, ceil = tuple(b for b, _ in pads), True
        for n, k, s, p in zip(sizes, kernel, stride, padding):
            if n is None:
                raise _Unmapped("'same' pooling needs a known spatial size (give keras.Input a shape)")
            torch_out = math.ceil((n + 2 * p - k) / s) + 1
            if (torch_out - 1) * s >= n + p:
                torch_out -= 1
            if torch_out != math.ceil(n / s):
                raise _Unmapped(f"'same' pooling of size {n} with pool {k}, stride {s} has no torch equivalent")
    else:
        raise _Unmapped(f"padding {layer.padding!r}; supported: valid, same")
    if is_max:
        cls: Any = nn.MaxPool1d if dims == 1 else nn.MaxPool2d
        make = lambda: cls(kernel, stride, padding=padding, ceil_mode=ceil)  # noqa: E731
    else:
        cls = nn.AvgPool1d if dims == 1 else nn.AvgPool2d
        make = lambda: cls(kernel, stride, padding=padding, ceil_mode=ceil, count_include_pad=False)  # noqa: E731
    return _Value(m.call_module(m.module(layer, make), m.view(v, perm)), perm, out_shape)


def _global_pool(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    dims = v.rank - 2
    is_max = "Max" in type(layer).__name__
    cls: Any = {(True, 1): nn.AdaptiveMaxPool1d, (True, 2): nn.AdaptiveMaxPool2d,
                (False, 1): nn.AdaptiveAvgPool1d, (False, 2): nn.AdaptiveAvgPool2d}[(is_max, dims)]
    perm = m.spatial_perm(layer, v.rank)
    x = m.call_module(m.module(layer, lambda: cls(1)), m.view(v, perm))
    if getattr(layer, "keepdims", False):
        return _Value(x, perm, out_shape)
    return _Value(m.call(_FLATTEN, (x, 1), f"{layer.name}_flatten"), (0, 1), out_shape)


def _flatten(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    if getattr(layer, "data_format", "channels_last") == "channels_first" and v.rank > 2:
        raise _Unmapped("Flatten(data_format='channels_first') is not supported")
    x = m.view(v, tuple(range(v.rank)))
    return _Value(m.call(_FLATTEN, (x, 1), layer.name), (0, 1), out_shape)


def _reshape(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    if any(d is None for d in out_shape[1:]):
        raise _Unmapped("Reshape to a shape that is not fully known")
    x = m.view(v, tuple(range(v.rank)))
    node = m.graph.create_node("call_method", "reshape", (x, (-1,) + tuple(int(d) for d in out_shape[1:])), {},
                               name=m._name(layer.name))
    return _Value(node, tuple(range(len(out_shape))), out_shape)


def _permute(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    """No op: the mirror's values stay where they are, only the bookkeeping changes."""
    v = ins[0]
    order = (0,) + tuple(int(d) for d in layer.dims)      # Keras axis i of the output = axis order[i] of the input
    return _Value(v.node, tuple(order.index(p) for p in v.perm), out_shape, {})


def _zero_padding(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    dims = v.rank - 2
    pads = layer.padding
    pads = [tuple(int(p) for p in pads)] if dims == 1 else [tuple(int(p) for p in ax) for ax in pads]
    perm = m.spatial_perm(layer, v.rank)
    return _Value(m.call_module(m.module(layer, lambda: _zero_pad(dims, pads)), m.view(v, perm)), perm, out_shape)


def _common_perm(m: _Mirror, ins: list[_Value]) -> tuple[tuple[int, ...], list[fx.Node]]:
    if len({v.rank for v in ins}) != 1:
        raise _Unmapped("inputs of different ranks")
    perm = ins[0].perm
    return perm, [m.view(v, perm) for v in ins]


def _concatenate(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    perm, nodes = _common_perm(m, ins)
    dim = perm.index(int(layer.axis) % len(perm))
    return _Value(m.call(_CAT, (nodes, dim), layer.name), perm, out_shape)


def _merge(fn: Any) -> Callable[..., _Value]:
    def mapper(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
        perm, nodes = _common_perm(m, ins)
        if fn is operator.sub and len(nodes) != 2:
            raise _Unmapped("Subtract takes two inputs")
        x = nodes[0]
        for k, y in enumerate(nodes[1:], start=1):
            x = m.call(fn, (x, y), layer.name if k == len(nodes) - 1 else f"{layer.name}_{k}")
        return _Value(x, perm, out_shape)
    return mapper


def _dropout(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    return _Value(m.call_module(m.module(layer, nn.Dropout), v.node), v.perm, out_shape)


def _batch_norm(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    axis = int(layer.axis) % v.rank
    if v.rank > 4:
        raise _Unmapped("BatchNormalization of tensors above rank 4")
    perm = (0, axis) + tuple(a for a in range(1, v.rank) if a != axis)

    def make() -> nn.Module:
        mean = _np(layer.moving_mean)
        mod = (nn.BatchNorm1d if v.rank <= 3 else nn.BatchNorm2d)(mean.shape[0], eps=float(layer.epsilon))
        mod.running_mean.copy_(torch.from_numpy(mean))
        mod.running_var.copy_(torch.from_numpy(_np(layer.moving_variance)))
        if layer.scale:
            mod.weight = _param(_np(layer.gamma))
        if layer.center:
            mod.bias = _param(_np(layer.beta))
        return mod.eval()
    return _Value(m.call_module(m.module(layer, make), m.view(v, perm)), perm, out_shape)


def _layer_norm(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    if getattr(layer, "rms_scaling", False):
        raise _Unmapped("rms_scaling=True is not supported")
    axes = sorted(int(a) % v.rank for a in (layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]))
    if axes != list(range(v.rank - len(axes), v.rank)):
        raise _Unmapped(f"normalising over axes {axes}: only trailing axes are supported")
    shape = tuple(int(v.shape[a]) for a in axes)

    def make() -> nn.Module:
        mod = nn.LayerNorm(shape, eps=float(layer.epsilon))
        if layer.scale:
            mod.weight = _param(_np(layer.gamma).reshape(shape))
        if layer.center:
            mod.bias = _param(_np(layer.beta).reshape(shape))
        return mod
    perm = tuple(range(v.rank))
    return _Value(m.call_module(m.module(layer, make), m.view(v, perm)), perm, out_shape)


def _embedding(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    if getattr(layer, "mask_zero", False):
        raise _Unmapped("mask_zero=True is not supported")
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise _Unmapped("LoRA or quantized embeddings are not supported")

    def make() -> nn.Module:
        table = _np(layer.embeddings)
        mod = nn.Embedding(*table.shape)
        mod.weight = _param(table)
        return mod
    perm = tuple(range(v.rank))
    return _Value(m.call_module(m.module(layer, make), m.view(v, perm)), perm + (v.rank,), out_shape)


def _lstm(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    cell = layer.cell
    act = getattr(cell.activation, "__name__", "")
    rec = getattr(cell.recurrent_activation, "__name__", "")
    if act != "tanh" or rec != "sigmoid":
        raise _Unmapped(f"activation {act!r} / recurrent_activation {rec!r}; supported: tanh / sigmoid")
    for flag in ("go_backwards", "return_state", "stateful"):
        if getattr(layer, flag, False):
            raise _Unmapped(f"{flag}=True is not supported")
    if len(ins) != 1:
        raise _Unmapped("an initial state is not supported")

    def make() -> nn.Module:
        kernel, recurrent = _np(cell.kernel), _np(cell.recurrent_kernel)      # gates i, f, c, o as torch's
        units = recurrent.shape[0]
        mod = nn.LSTM(kernel.shape[0], units, batch_first=True, bias=cell.use_bias)
        mod.weight_ih_l0 = _param(kernel.T)
        mod.weight_hh_l0 = _param(recurrent.T)
        if cell.use_bias:
            mod.bias_ih_l0 = _param(_np(cell.bias))
            mod.bias_hh_l0 = _param(np.zeros(4 * units, dtype=np.float32))
        return mod
    out = m.call_module(m.module(layer, make), m.view(v, tuple(range(v.rank))))
    seq = m.call(operator.getitem, (out, 0), f"{layer.name}_sequence")
    if not layer.return_sequences:
        seq = m.call(operator.getitem, (seq, (slice(None), -1)), f"{layer.name}_last")
    return _Value(seq, tuple(range(len(out_shape))), out_shape)


def _activation_layer(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    return m.activation(layer, layer.activation, ins[0])


def _relu_layer(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    slope, top, threshold = float(layer.negative_slope), layer.max_value, float(layer.threshold)
    if threshold != 0.0:
        raise _Unmapped("ReLU with a threshold")
    if slope == 0.0 and top is None:
        make: Callable[[], nn.Module] = nn.ReLU
    elif slope == 0.0 and float(top) == 6.0:
        make = nn.ReLU6
    elif top is None:
        make = lambda: nn.LeakyReLU(slope)  # noqa: E731
    else:
        raise _Unmapped("ReLU with both max_value and negative_slope")
    return _Value(m.call_module(m.module(layer, make), v.node), v.perm, out_shape)


def _leaky_relu_layer(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    slope = float(layer.negative_slope)
    return _Value(m.call_module(m.module(layer, lambda: nn.LeakyReLU(slope)), v.node), v.perm, out_shape)


def _elu_layer(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    alpha = float(layer.alpha)
    return _Value(m.call_module(m.module(layer, lambda: nn.ELU(alpha)), v.node), v.perm, out_shape)


def _softmax_layer(m: _Mirror, layer: Any, ins: list[_Value], out_shape: tuple) -> _Value:
    v = ins[0]
    axis = layer.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise _Unmapped("softmax over several axes")
        axis = axis[0]
    dim = v.perm.index(int(axis) % v.rank)
    return _Value(m.call_module(m.module(layer, lambda: nn.Softmax(dim=dim)), v.node), v.perm, out_shape)


L = keras.layers
_LAYERS: dict[type, Callable[..., _Value]] = {
    L.Dense: _dense, L.Conv1D: _conv, L.Conv2D: _conv, L.Conv1DTranspose: _conv_transpose,
    L.Conv2DTranspose: _conv_transpose, L.MaxPooling1D: _pool, L.MaxPooling2D: _pool, L.AveragePooling1D: _pool,
    L.AveragePooling2D: _pool, L.GlobalMaxPooling1D: _global_pool, L.GlobalMaxPooling2D: _global_pool,
    L.GlobalAveragePooling1D: _global_pool, L.GlobalAveragePooling2D: _global_pool, L.Flatten: _flatten,
    L.Reshape: _reshape, L.Permute: _permute, L.ZeroPadding1D: _zero_padding, L.ZeroPadding2D: _zero_padding,
    L.Concatenate: _concatenate, L.Add: _merge(operator.add), L.Subtract: _merge(operator.sub),
    L.Multiply: _merge(operator.mul), L.Dropout: _dropout, L.SpatialDropout1D: _dropout,
    L.SpatialDropout2D: _dropout, L.GaussianDropout: _dropout, L.GaussianNoise: _dropout,
    L.BatchNormalization: _batch_norm, L.LayerNormalization: _layer_norm, L.Embedding: _embedding, L.LSTM: _lstm,
    L.Activation: _activation_layer, L.ReLU: _relu_layer, L.LeakyReLU: _leaky_relu_layer, L.ELU: _elu_layer,
    L.Softmax: _softmax_layer,
}
del L


# --- the front end ----------------------------------------------------------------------------

def to_torch(model: Any) -> fx.GraphModule:
    """The torch mirror of a Keras model: an ``fx.GraphModule`` taking the model's inputs in
    Keras's layout and computing its output, one submodule per Keras layer."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    try:
        fn = _functional_of(model) if isinstance(model, keras.Sequential) else model
    except _Unmapped as exc:
        raise UnsupportedOperation(model.name, _source(model), SUPPORTED_LAYERS, str(exc)) from None
    if not hasattr(fn, "_nodes_by_depth"):
        raise UnsupportedOperation(model.name, _source(model), SUPPORTED_LAYERS,
                                   "subclassed models have no layer graph; build the model with the "
                                   "Sequential or functional API")
    if len(fn.outputs) != 1:
        raise UnsupportedOperation(model.name, _source(model), SUPPORTED_LAYERS,
                                   f"the model must have one output; it has {len(fn.outputs)}")
    m = _Mirror()
    inputs = []
    for t in fn.inputs:
        history = getattr(t, "_keras_history", None)
        name = m._name(history.operation.name if history is not None else "input")
        shape = tuple(t.shape)
        inputs.append(_Value(m.graph.placeholder(name), tuple(range(len(shape))), shape))
    (out,) = m.run_function(fn, inputs)
    m.graph.output(m.view(out, tuple(range(out.rank))))
    gm = fx.GraphModule(m.root, m.graph)
    gm.meta["backtrace_frontend"] = "keras"     # already a graph: the torch.fx front end takes it as is
    return gm.eval()


def inputs_to_torch(x: Any) -> Any:
    """NumPy arrays, TF tensors or nested tuples of them as torch tensors (floats as float32,
    integers as int64 indices); torch tensors pass unchanged."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (tuple, list)):
        return type(x)(inputs_to_torch(v) for v in x)
    arr = np.asarray(x)
    if arr.dtype.kind in "iub":
        return torch.from_numpy(arr.astype(np.int64))
    if arr.dtype.kind != "f":
        raise TypeError(f"cannot explain an input of dtype {arr.dtype}; expected a float or integer array")
    return torch.from_numpy(np.array(arr, dtype=np.float32))          # a copy: TF arrays are read-only


def relevance_to_numpy(r: Any) -> Any:
    """Relevance as NumPy arrays (a pair stays a pair)."""
    if isinstance(r, (tuple, list)):
        return type(r)(relevance_to_numpy(v) for v in r)
    return r.detach().cpu().numpy() if isinstance(r, Tensor) else r


def fingerprint(model: Any) -> tuple:
    """Changes whenever a weight of the Keras model changes (a hash of every weight's bytes)."""
    return tuple(hash(np.asarray(keras.ops.convert_to_numpy(w)).tobytes()) for w in model.weights)

