"""The Keras layer table: each Keras layer type to the torch modules and functions that compute it.

One mapper per layer type adds the layer's computation to a :class:`~backtrace.frontends.keras_mirror.Mirror`
(weights copied, kernels transposed to torch's layouts, a ``permute`` first where the layer
needs another layout); :data:`LAYERS` is the table, and the supported layers are read from it.
A Keras activation (an ``activation=`` argument or an ``Activation`` layer) maps through
:data:`ACTIVATIONS`.
"""
from __future__ import annotations

import math
import operator
from typing import Any, Callable, Optional

import keras
import numpy as np
import torch
import torch.fx as fx
from torch import nn

from backtrace.frontends.keras_mirror import (CAT, FLATTEN, Mapper, Mirror, Unmapped, Value, array, ints, param,
                                              same_pads, supported_layers, zero_pad)

# Keras activation (function name) -> a torch module computing the same values
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
    "silu": nn.SiLU, "swish": nn.SiLU, "elu": nn.ELU, "softplus": nn.Softplus, "mish": nn.Mish,
    "leaky_relu": lambda: nn.LeakyReLU(0.2), "hard_sigmoid": nn.Hardsigmoid, "hard_silu": nn.Hardswish,
    "hard_swish": nn.Hardswish,
}


def _activation(m: Mirror, layer: Any, fn: Any, v: Value) -> Value:
    """Apply a Keras activation function (an ``activation=`` argument or layer)."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    if name == "linear":
        return v
    if name == "softmax":
        dim = v.perm.index(v.rank - 1)
        target = m.module(layer, lambda: nn.Softmax(dim=dim), "softmax")
    elif name in ACTIVATIONS:
        target = m.module(layer, ACTIVATIONS[name], name)
    else:
        raise Unmapped(f"activation {name!r} has no rule; supported: linear, softmax, "
                        f"{', '.join(sorted(ACTIVATIONS))}")
    return Value(m.call_module(target, v.node), v.perm, v.shape)

# --- layers -----------------------------------------------------------------------------------

def _dense(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    perm = tuple(range(v.rank))                   # Dense works on the last Keras axis

    def make() -> nn.Module:
        kernel = array(layer.kernel)
        mod = nn.Linear(kernel.shape[0], kernel.shape[1], bias=layer.use_bias)
        mod.weight = param(kernel.T)
        if layer.use_bias:
            mod.bias = param(array(layer.bias))
        return mod
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise Unmapped("LoRA or quantized Dense layers are not supported")
    out = Value(m.call_module(m.module(layer, make), m.view(v, perm)), perm, out_shape)
    return _activation(m, layer, layer.activation, out)


def _conv(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    dims = len(layer.kernel_size)
    kernel_size, stride = ints(layer.kernel_size, dims), ints(layer.strides, dims)
    dilation = ints(layer.dilation_rate, dims)
    groups = int(getattr(layer, "groups", 1))
    padding = layer.padding
    pre: Optional[list[tuple[int, int]]] = None
    if padding == "valid":
        sym: tuple[int, ...] = (0,) * dims
    elif padding == "same":
        pads = same_pads(m.spatial_sizes(layer, v), kernel_size, stride, dilation)
        if all(b == a for b, a in pads):
            sym = tuple(b for b, _ in pads)
        else:
            pre, sym = pads, (0,) * dims
    elif padding == "causal" and dims == 1:
        pre, sym = [(dilation[0] * (kernel_size[0] - 1), 0)], (0,)
    else:
        raise Unmapped(f"padding {padding!r}; supported: valid, same (and causal for Conv1D)")
    perm = m.spatial_perm(layer, v.rank)
    x = m.view(v, perm)
    if pre is not None:
        x = m.call_module(m.module(layer, lambda: zero_pad(dims, pre), "pad"), x)

    def make() -> nn.Module:
        kernel = array(layer.kernel)                  # (*k, in / groups, out)
        in_ch = kernel.shape[-2] * groups
        cls = nn.Conv1d if dims == 1 else nn.Conv2d
        mod = cls(in_ch, kernel.shape[-1], kernel_size, stride=stride, padding=sym, dilation=dilation,
                  groups=groups, bias=layer.use_bias)
        mod.weight = param(np.transpose(kernel, (dims + 1, dims) + tuple(range(dims))))
        if layer.use_bias:
            mod.bias = param(array(layer.bias))
        return mod
    out = Value(m.call_module(m.module(layer, make), x), perm, out_shape)
    return _activation(m, layer, layer.activation, out)


def _conv_transpose(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    dims = len(layer.kernel_size)
    kernel_size, stride = ints(layer.kernel_size, dims), ints(layer.strides, dims)
    dilation = ints(layer.dilation_rate, dims)
    if getattr(layer, "output_padding", None) is not None:
        raise Unmapped("output_padding is not supported")
    if layer.padding not in ("valid", "same"):
        raise Unmapped(f"padding {layer.padding!r}; supported: valid, same")
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
        kernel = array(layer.kernel)                  # (*k, out, in)
        cls = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
        mod = cls(kernel.shape[-1], kernel.shape[-2], kernel_size, stride=stride, padding=tuple(padding),
                  output_padding=tuple(out_pad), dilation=dilation, bias=layer.use_bias)
        mod.weight = param(np.transpose(kernel, (dims + 1, dims) + tuple(range(dims))))
        if layer.use_bias:
            mod.bias = param(array(layer.bias))
        return mod
    x = m.call_module(m.module(layer, make), m.view(v, perm))
    if any(crop):                                    # the odd element of 'same' cropping falls after
        index = (slice(None), slice(None)) + tuple(slice(0, -1) if c else slice(None) for c in crop)
        x = m.call(operator.getitem, (x, index), f"{layer.name}_crop")
    return _activation(m, layer, layer.activation, Value(x, perm, out_shape))


def _pool(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    dims = len(layer.pool_size)
    kernel, stride = ints(layer.pool_size, dims), ints(layer.strides, dims)
    is_max = "Max" in type(layer).__name__
    perm = m.spatial_perm(layer, v.rank)
    if layer.padding == "valid":
        padding, ceil = (0,) * dims, False
    elif layer.padding == "same":
        # TensorFlow pads (total // 2, rest) and ignores the padding: torch's symmetric
        # padding of total // 2 with ceil mode gives the same windows and counts
        sizes = m.spatial_sizes(layer, v)
        pads = same_pads(sizes, kernel, stride, (1,) * dims)
        padding, ceil = tuple(b for b, _ in pads), True
        for n, k, s, p in zip(sizes, kernel, stride, padding):
            if n is None:
                raise Unmapped("'same' pooling needs a known spatial size (give keras.Input a shape)")
            torch_out = math.ceil((n + 2 * p - k) / s) + 1
            if (torch_out - 1) * s >= n + p:
                torch_out -= 1
            if torch_out != math.ceil(n / s):
                raise Unmapped(f"'same' pooling of size {n} with pool {k}, stride {s} has no torch equivalent")
    else:
        raise Unmapped(f"padding {layer.padding!r}; supported: valid, same")
    if is_max:
        cls: Any = nn.MaxPool1d if dims == 1 else nn.MaxPool2d
        make = lambda: cls(kernel, stride, padding=padding, ceil_mode=ceil)  # noqa: E731
    else:
        cls = nn.AvgPool1d if dims == 1 else nn.AvgPool2d
        make = lambda: cls(kernel, stride, padding=padding, ceil_mode=ceil, count_include_pad=False)  # noqa: E731
    return Value(m.call_module(m.module(layer, make), m.view(v, perm)), perm, out_shape)


def _global_pool(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    dims = v.rank - 2
    is_max = "Max" in type(layer).__name__
    cls: Any = {(True, 1): nn.AdaptiveMaxPool1d, (True, 2): nn.AdaptiveMaxPool2d,
                (False, 1): nn.AdaptiveAvgPool1d, (False, 2): nn.AdaptiveAvgPool2d}[(is_max, dims)]
    perm = m.spatial_perm(layer, v.rank)
    x = m.call_module(m.module(layer, lambda: cls(1)), m.view(v, perm))
    if getattr(layer, "keepdims", False):
        return Value(x, perm, out_shape)
    return Value(m.call(FLATTEN, (x, 1), f"{layer.name}_flatten"), (0, 1), out_shape)


def _flatten(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    if getattr(layer, "data_format", "channels_last") == "channels_first" and v.rank > 2:
        raise Unmapped("Flatten(data_format='channels_first') is not supported")
    x = m.view(v, tuple(range(v.rank)))
    return Value(m.call(FLATTEN, (x, 1), layer.name), (0, 1), out_shape)


def _reshape(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    if any(d is None for d in out_shape[1:]):
        raise Unmapped("Reshape to a shape that is not fully known")
    x = m.view(v, tuple(range(v.rank)))
    node = m.graph.create_node("call_method", "reshape", (x, (-1,) + tuple(int(d) for d in out_shape[1:])), {},
                               name=m.unique_name(layer.name))
    return Value(node, tuple(range(len(out_shape))), out_shape)


def _permute(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    """No op: the mirror's values stay where they are, only the bookkeeping changes."""
    v = ins[0]
    order = (0,) + tuple(int(d) for d in layer.dims)      # Keras axis i of the output = axis order[i] of the input
    return Value(v.node, tuple(order.index(p) for p in v.perm), out_shape, {})


def _zero_padding(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    dims = v.rank - 2
    pads = layer.padding
    pads = [tuple(int(p) for p in pads)] if dims == 1 else [tuple(int(p) for p in ax) for ax in pads]
    perm = m.spatial_perm(layer, v.rank)
    return Value(m.call_module(m.module(layer, lambda: zero_pad(dims, pads)), m.view(v, perm)), perm, out_shape)


def _common_perm(m: Mirror, ins: list[Value]) -> tuple[tuple[int, ...], list[fx.Node]]:
    if len({v.rank for v in ins}) != 1:
        raise Unmapped("inputs of different ranks")
    perm = ins[0].perm
    return perm, [m.view(v, perm) for v in ins]


def _concatenate(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    perm, nodes = _common_perm(m, ins)
    dim = perm.index(int(layer.axis) % len(perm))
    return Value(m.call(CAT, (nodes, dim), layer.name), perm, out_shape)


def _merge(fn: Any) -> Callable[..., Value]:
    def mapper(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
        perm, nodes = _common_perm(m, ins)
        if fn is operator.sub and len(nodes) != 2:
            raise Unmapped("Subtract takes two inputs")
        x = nodes[0]
        for k, y in enumerate(nodes[1:], start=1):
            x = m.call(fn, (x, y), layer.name if k == len(nodes) - 1 else f"{layer.name}_{k}")
        return Value(x, perm, out_shape)
    return mapper


def _dropout(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    return Value(m.call_module(m.module(layer, nn.Dropout), v.node), v.perm, out_shape)


def _batch_norm(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    axis = int(layer.axis) % v.rank
    if v.rank > 4:
        raise Unmapped("BatchNormalization of tensors above rank 4")
    perm = (0, axis) + tuple(a for a in range(1, v.rank) if a != axis)

    def make() -> nn.Module:
        mean = array(layer.moving_mean)
        mod = (nn.BatchNorm1d if v.rank <= 3 else nn.BatchNorm2d)(mean.shape[0], eps=float(layer.epsilon))
        mod.running_mean.copy_(torch.from_numpy(mean))
        mod.running_var.copy_(torch.from_numpy(array(layer.moving_variance)))
        if layer.scale:
            mod.weight = param(array(layer.gamma))
        if layer.center:
            mod.bias = param(array(layer.beta))
        return mod.eval()
    return Value(m.call_module(m.module(layer, make), m.view(v, perm)), perm, out_shape)


def _layer_norm(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    if getattr(layer, "rms_scaling", False):
        raise Unmapped("rms_scaling=True is not supported")
    axes = sorted(int(a) % v.rank for a in (layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]))
    if axes != list(range(v.rank - len(axes), v.rank)):
        raise Unmapped(f"normalising over axes {axes}: only trailing axes are supported")
    shape = tuple(int(v.shape[a]) for a in axes)

    def make() -> nn.Module:
        mod = nn.LayerNorm(shape, eps=float(layer.epsilon))
        if layer.scale:
            mod.weight = param(array(layer.gamma).reshape(shape))
        if layer.center:
            mod.bias = param(array(layer.beta).reshape(shape))
        return mod
    perm = tuple(range(v.rank))
    return Value(m.call_module(m.module(layer, make), m.view(v, perm)), perm, out_shape)


def _embedding(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    if getattr(layer, "mask_zero", False):
        raise Unmapped("mask_zero=True is not supported")
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise Unmapped("LoRA or quantized embeddings are not supported")

    def make() -> nn.Module:
        table = array(layer.embeddings)
        mod = nn.Embedding(*table.shape)
        mod.weight = param(table)
        return mod
    perm = tuple(range(v.rank))
    return Value(m.call_module(m.module(layer, make), m.view(v, perm)), perm + (v.rank,), out_shape)


def _lstm(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    cell = layer.cell
    act = getattr(cell.activation, "__name__", "")
    rec = getattr(cell.recurrent_activation, "__name__", "")
    if act != "tanh" or rec != "sigmoid":
        raise Unmapped(f"activation {act!r} / recurrent_activation {rec!r}; supported: tanh / sigmoid")
    for flag in ("go_backwards", "return_state", "stateful"):
        if getattr(layer, flag, False):
            raise Unmapped(f"{flag}=True is not supported")
    if len(ins) != 1:
        raise Unmapped("an initial state is not supported")

    def make() -> nn.Module:
        kernel, recurrent = array(cell.kernel), array(cell.recurrent_kernel)      # gates i, f, c, o as torch's
        units = recurrent.shape[0]
        mod = nn.LSTM(kernel.shape[0], units, batch_first=True, bias=cell.use_bias)
        mod.weight_ih_l0 = param(kernel.T)
        mod.weight_hh_l0 = param(recurrent.T)
        if cell.use_bias:
            mod.bias_ih_l0 = param(array(cell.bias))
            mod.bias_hh_l0 = param(np.zeros(4 * units, dtype=np.float32))
        return mod
    out = m.call_module(m.module(layer, make), m.view(v, tuple(range(v.rank))))
    seq = m.call(operator.getitem, (out, 0), f"{layer.name}_sequence")
    if not layer.return_sequences:
        seq = m.call(operator.getitem, (seq, (slice(None), -1)), f"{layer.name}_last")
    return Value(seq, tuple(range(len(out_shape))), out_shape)


def _activation_layer(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    return _activation(m, layer, layer.activation, ins[0])


def _relu_layer(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    slope, top, threshold = float(layer.negative_slope), layer.max_value, float(layer.threshold)
    if threshold != 0.0:
        raise Unmapped("ReLU with a threshold")
    if slope == 0.0 and top is None:
        make: Callable[[], nn.Module] = nn.ReLU
    elif slope == 0.0 and float(top) == 6.0:
        make = nn.ReLU6
    elif top is None:
        make = lambda: nn.LeakyReLU(slope)  # noqa: E731
    else:
        raise Unmapped("ReLU with both max_value and negative_slope")
    return Value(m.call_module(m.module(layer, make), v.node), v.perm, out_shape)


def _leaky_relu_layer(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    slope = float(layer.negative_slope)
    return Value(m.call_module(m.module(layer, lambda: nn.LeakyReLU(slope)), v.node), v.perm, out_shape)


def _elu_layer(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    alpha = float(layer.alpha)
    return Value(m.call_module(m.module(layer, lambda: nn.ELU(alpha)), v.node), v.perm, out_shape)


def _softmax_layer(m: Mirror, layer: Any, ins: list[Value], out_shape: tuple) -> Value:
    v = ins[0]
    axis = layer.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise Unmapped("softmax over several axes")
        axis = axis[0]
    dim = v.perm.index(int(axis) % v.rank)
    return Value(m.call_module(m.module(layer, lambda: nn.Softmax(dim=dim)), v.node), v.perm, out_shape)


L = keras.layers
LAYERS: dict[type, Mapper] = {
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
SUPPORTED_LAYERS = supported_layers(LAYERS)
