"""The torch mirror of a Keras model under construction: its values and how layers are wired.

A :class:`Mirror` holds an ``fx.Graph`` and the torch modules made for the Keras layers; each
Keras tensor is a :class:`Value` (an fx node whose axes are the Keras axes permuted). The
layer mappers (:mod:`backtrace.frontends.keras_layers`) add nodes to it through the table the
mirror is given.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np
import torch
import torch.fx as fx
from torch import nn

from backtrace.errors import UnsupportedOperation

# what the mirror's fx graph calls are recognised as by the torch.fx front end
PERMUTE, FLATTEN, CAT = torch.permute, torch.flatten, torch.cat
# the model containers, mapped by walking their own layer graphs
CONTAINERS = ("InputLayer", "Functional", "Sequential")
Mapper = Callable[..., "Value"]


def supported_layers(table: dict[type, Mapper]) -> tuple[str, ...]:
    """The names of the Keras layer types a table maps, with the containers."""
    return CONTAINERS + tuple(cls.__name__ for cls in table)


class Unmapped(Exception):
    """Raised while mapping one layer; turned into :class:`UnsupportedOperation` naming it."""


@dataclass
class Value:
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


def channels_first(rank: int) -> tuple[int, ...]:
    """The perm that puts a channels-last tensor's last axis second (NHWC -> NCHW)."""
    return (0, rank - 1) + tuple(range(1, rank - 1))


def array(v: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float32)


def param(v: Any) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.ascontiguousarray(v)), requires_grad=False)


def ints(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v),) * n


class Mirror:
    """Builds the torch mirror of one Keras model, layer by layer."""

    def __init__(self, layers: dict[type, Mapper]) -> None:
        self.layers = layers
        self.supported = supported_layers(layers)
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.module_of: dict[tuple[int, str], str] = {}   # (id(keras layer), part) -> module name
        self.names: set[str] = set()

    # naming and emitting ---------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        """``base`` as a Python identifier no other module or node of the mirror has."""
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
            name = self.unique_name(layer.name + (f"_{suffix}" if suffix else ""))
            self.root.add_module(name, make())
            self.module_of[key] = name
        return self.module_of[key]

    def call_module(self, target: str, *args: Any) -> fx.Node:
        return self.graph.call_module(target, args)

    def call(self, fn: Any, args: tuple, name: str) -> fx.Node:
        return self.graph.create_node("call_function", fn, args, {}, name=self.unique_name(name))

    def view(self, v: Value, perm: tuple[int, ...]) -> fx.Node:
        """``v`` with its axes in the order ``perm`` (a permute node, made once)."""
        if v.perm == perm:
            return v.node
        if perm not in v.views:
            order = tuple(v.perm.index(p) for p in perm)
            v.views[perm] = self.call(PERMUTE, (v.node, order), f"{v.node.name}_permute")
        return v.views[perm]

    # the model graph -------------------------------------------------------------------------
    def run_function(self, fn: Any, inputs: Sequence[Value]) -> list[Value]:
        """Map a Keras Functional graph (a model, or a nested one) whose inputs are ``inputs``."""
        known: dict[int, Value] = {id(t): v for t, v in zip(fn.inputs, inputs)}
        for depth in sorted(fn._nodes_by_depth, reverse=True):
            for node in fn._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(id(t) not in known for t in node.input_tensors):
                    continue       # a node of another model sharing this layer
                args, kwargs = node.arguments.fill_in(known)
                ins = [a for a in keras.tree.flatten((args, kwargs)) if isinstance(a, Value)]
                outs = self.layer(node.operation, ins, [tuple(t.shape) for t in node.outputs], kwargs)
                if len(outs) != len(node.outputs):
                    raise UnsupportedOperation(node.operation.name, source(node.operation), self.supported,
                                               "layers with several outputs are not supported")
                for t, v in zip(node.outputs, outs):
                    known[id(t)] = v
        return [known[id(t)] for t in fn.outputs]

    def layer(self, layer: Any, ins: list[Value], out_shapes: list[tuple], kwargs: dict) -> list[Value]:
        try:
            if isinstance(layer, keras.Sequential):
                return self.run_function(functional_of(layer), ins)
            if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"):
                return self.run_function(layer, ins)
            if kwargs.get("mask") is not None:
                raise Unmapped("masks are not supported")
            mapper = self.layers.get(type(layer))
            if mapper is None:
                raise Unmapped("no mapping for this layer type")
            return [mapper(self, layer, ins, out_shapes[0])]
        except Unmapped as exc:
            raise UnsupportedOperation(layer.name, source(layer), self.supported, str(exc)) from None

    # pieces shared by several layers ----------------------------------------------------------
    def spatial_perm(self, layer: Any, rank: int) -> tuple[int, ...]:
        """The perm a conv/pool layer's torch module needs (channels second)."""
        fmt = getattr(layer, "data_format", "channels_last")
        return channels_first(rank) if fmt == "channels_last" else tuple(range(rank))

    def spatial_sizes(self, layer: Any, v: Value) -> list[Optional[int]]:
        fmt = getattr(layer, "data_format", "channels_last")
        return list(v.shape[1:-1] if fmt == "channels_last" else v.shape[2:])


def source(layer: Any) -> str:
    return f"Keras layer {layer.name} ({type(layer).__name__})"


def functional_of(model: Any) -> Any:
    fn = getattr(model, "_functional", None)
    if fn is None:
        raise Unmapped("the Sequential model is not built: give it a keras.Input first or call build()")
    return fn


def same_pads(sizes: Sequence[Optional[int]], kernel: Sequence[int], stride: Sequence[int],
               dilation: Sequence[int]) -> list[tuple[int, int]]:
    """TensorFlow's 'same' padding per spatial axis: (before, after), the extra one after."""
    pads = []
    for n, k, s, d in zip(sizes, kernel, stride, dilation):
        eff = d * (k - 1) + 1
        if s == 1:
            total = eff - 1
        elif n is None:
            raise Unmapped("'same' padding with strides needs a known spatial size (give keras.Input a shape)")
        else:
            total = max((math.ceil(n / s) - 1) * s + eff - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def zero_pad(dims: int, pads: Sequence[tuple[int, int]]) -> nn.Module:
    flat: list[int] = []
    for before, after in reversed(pads):          # torch lists the last axis first
        flat += [before, after]
    return nn.ZeroPad1d(tuple(flat)) if dims == 1 else nn.ZeroPad2d(tuple(flat))

