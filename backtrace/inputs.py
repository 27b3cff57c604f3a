"""Inputs as users hold them (a tensor, a tuple, a tokenizer's mapping) and the engine's input
policy: non-finite floats are refused; integer inputs (token ids, masks) take relevance only
through lookups, and the values a model computes from them alone (masks, counts, position ids)
take none; an integer value fed to a layer that needs floats is refused by name."""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from backtrace.ir import Graph
from backtrace.ops import kinds

# the input explain() returns by default, for a mapping of keyword inputs
PRIMARY_INPUTS = ("input_ids", "inputs_embeds", "pixel_values")


def normalise_inputs(model: nn.Module, inputs: Any, graph: Optional[Graph]
                     ) -> tuple[tuple[str, ...], tuple[Any, ...], bool]:
    """``(names, values, keywords)``: a mapping gives its keys (in the graph's order when the
    graph is known); a tuple or one tensor gives the graph's input names (or the forward's
    parameter names)."""
    if isinstance(inputs, Mapping):
        items = {str(k): v for k, v in inputs.items() if v is not None}
        if graph is not None:
            unknown = sorted(set(items) - set(graph.inputs))
            missing = [n for n in graph.inputs if n not in items]
            if unknown or missing:
                raise ValueError(f"the model takes input(s) {', '.join(graph.inputs)}; got "
                                 f"{', '.join(items) or 'none'}")
            return tuple(graph.inputs), tuple(items[n] for n in graph.inputs), True
        return tuple(items), tuple(items.values()), True
    values = tuple(inputs) if isinstance(inputs, tuple) else (inputs,)
    if graph is not None and len(values) == len(graph.inputs):
        return tuple(graph.inputs), values, False
    return tuple(input_names(model, len(values))), values, False


def input_names(model: nn.Module, n: int) -> list[str]:
    """Names for ``n`` positional inputs: the forward's parameter names where it has them."""
    try:
        params = [p.name for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"input_{i}" for i in range(n)]


def integer_inputs(model: Any, inputs: Any) -> dict[str, Any]:
    """``{name: dtype}`` of the integer/bool tensors among a torch model's inputs (as
    :func:`normalise_inputs` names them); empty for other models."""
    if not isinstance(model, nn.Module):
        return {}
    names, values, _ = normalise_inputs(model, inputs, None)
    return {name: v.dtype for name, v in zip(names, values)
            if isinstance(v, Tensor) and not (v.is_floating_point() or v.is_complex())}


def primary_name(names: Sequence[str]) -> str:
    """``input_ids``, ``inputs_embeds`` or ``pixel_values`` where given, else the first input."""
    for name in PRIMARY_INPUTS:
        if name in names:
            return name
    return names[0]


def integer_input_error(name: str, dtype: Any, node: str, kind: str, source: str) -> ValueError:
    """The one-line error for an integer/bool input (or a value computed from it alone) fed to an
    op that needs floating-point values; both front ends raise it."""
    return ValueError(f"input {name!r} is {dtype} (integer/bool) but feeds node {node!r} ({kind}, {source}), "
                      f"which needs floating-point values; pass {name}.float(), or token ids to an embedding")


def check_inputs(names: Sequence[str], values: Sequence[Any], graph: Optional[Graph]) -> None:
    """Refuse non-finite float inputs (naming the first bad sample) and integer/bool inputs
    that feed an op needing floats (with a graph to look at)."""
    check_finite(names, values)
    if graph is not None:
        check_integer(names, values, graph)


def check_finite(names: Sequence[str], values: Sequence[Any]) -> None:
    """Refuse non-finite float inputs, naming the input and the first bad sample."""
    for name, v in zip(names, values):
        if not isinstance(v, Tensor):
            continue
        if v.is_floating_point() or v.is_complex():
            finite = torch.isfinite(v)
            if not bool(finite.all()):
                bad = (~finite.reshape(v.shape[0], -1).all(dim=1)).nonzero() if v.dim() > 0 else None
                where = f"sample {int(bad[0])}" if bad is not None and bad.numel() else "a value"
                raise ValueError(f"input {name!r} {where} holds NaN/inf; relevance of a non-finite input is "
                                 f"undefined: clean or drop that sample")


def check_integer(names: Sequence[str], values: Sequence[Any], graph: Graph) -> None:
    """Refuse an integer/bool input that ``graph`` feeds to an op other than a lookup, an index
    move or an ``aux`` computation (the catalogue's index-like kinds)."""
    index_like = kinds("index_like")
    for name, v in zip(names, values):
        if not isinstance(v, Tensor) or v.is_floating_point() or v.is_complex():
            continue
        if name in graph.inputs:
            for user in graph.nodes:
                if name in user.inputs and user.kind not in index_like:
                    raise integer_input_error(name, v.dtype, user.name, user.kind, user.source)
