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
:class:`~backtrace.errors.UnsupportedOperation` naming the layer. The mapping is the table of
:mod:`backtrace.frontends.keras_layers` (the supported layers are read from it); the mirror's
bookkeeping is :mod:`backtrace.frontends.keras_mirror`.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
import torch
import torch.fx as fx
from torch import Tensor

from backtrace.errors import UnsupportedOperation
from backtrace.frontends.keras_layers import LAYERS, SUPPORTED_LAYERS
from backtrace.frontends.keras_mirror import Mirror, Unmapped, Value, functional_of, source


def to_torch(model: Any) -> fx.GraphModule:
    """The torch mirror of a Keras model: an ``fx.GraphModule`` taking the model's inputs in
    Keras's layout and computing its output, one submodule per Keras layer."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    try:
        fn = functional_of(model) if isinstance(model, keras.Sequential) else model
    except Unmapped as exc:
        raise UnsupportedOperation(model.name, source(model), SUPPORTED_LAYERS, str(exc)) from None
    if not hasattr(fn, "_nodes_by_depth"):
        raise UnsupportedOperation(model.name, source(model), SUPPORTED_LAYERS,
                                   "subclassed models have no layer graph; build the model with the "
                                   "Sequential or functional API")
    if len(fn.outputs) != 1:
        raise UnsupportedOperation(model.name, source(model), SUPPORTED_LAYERS,
                                   f"the model must have one output; it has {len(fn.outputs)}")
    m = Mirror(LAYERS)
    inputs = []
    for t in fn.inputs:
        history = getattr(t, "_keras_history", None)
        name = m.unique_name(history.operation.name if history is not None else "input")
        shape = tuple(t.shape)
        inputs.append(Value(m.graph.placeholder(name), tuple(range(len(shape))), shape))
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
