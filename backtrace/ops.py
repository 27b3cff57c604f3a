"""The catalogue of op kinds: every kind a graph node may have, its parameters and its traits.

A front end lowers a model's ops onto these kinds; the engine applies the rule registered for
each (:mod:`backtrace.rules`, one rule per kind). Every group of kinds the code needs (the
activations, the kinds an integer input may feed, the layers BatchNorm folds into, ...) is read
from the traits here. ``params`` names what a front end may put in ``node.params`` for the kind
(what its rule reads); every front end fills them alike.

Adding a layer or an op:

1. its kind: a line below (name, params, traits); a kind defined outside the package is
   declared by registering its rule with an :class:`OpKind` instead of a name;
2. its rule: a :class:`~backtrace.rules.base.Rule` with ``@register("kind")`` in
   ``backtrace/rules/<family>.py`` (a new module is added to the imports of
   ``backtrace/rules/__init__.py``). An activation needs none: the pass-through rule serves
   every kind with the ``activation`` trait (its saturation bounds, if the reference gives it
   any, go in ``backtrace.rules.base.SATURATION_BOUNDS``);
3. one line in the table of each front end that can produce it: ``torch_fx.TABLE`` (the
   module class, functions and tensor method names in one tuple), ``torch_export.TABLE`` (the
   ATen ops), and for Keras ``keras_layers.LAYERS`` (layer type -> mapper) or
   ``keras_layers.ACTIVATIONS`` (activation name -> the torch module computing it).
"""
from __future__ import annotations

from dataclasses import dataclass

# graph nodes that are not ops: the model's inputs and its parameters/buffers (no rule)
STRUCTURAL = ("input", "constant")


@dataclass(frozen=True)
class OpKind:
    """One op kind. Traits:

    - ``activation``: an activation function; the layer it follows records it in
      ``meta["activation"]`` (saturation bounds); its rule hands relevance on unchanged.
    - ``elementwise``: arithmetic or an activation applied elementwise: a chain of them over one
      tensor is one ``"pointwise"`` function of it (torch.export's decomposed GELU).
    - ``moves``: copies or moves elements of its first input without computing new values, so
      token ids may pass through it on their way to a lookup.
    - ``index_like``: an integer/bool input may feed it (lookups, index moves, ``aux``).
    - ``lookup``: reads token ids and hands their relevance back to them.
    - ``weights``: a layer with weights: it needs floating-point values that carry relevance.
    - ``foldable``: a BatchNorm that directly follows it is folded into its weights.
    - ``records_activation``: the activation that consumes its output is recorded on it.
    - ``transparent``: the activation bookkeeping looks through it (Dropout, Identity).
    """

    name: str
    params: tuple[str, ...] = ()
    activation: bool = False
    elementwise: bool = False
    moves: bool = False
    index_like: bool = False
    lookup: bool = False
    weights: bool = False
    foldable: bool = False
    records_activation: bool = False
    transparent: bool = False


_DENSE = ("weight", "bias", "abs_weight")
_CONV = _DENSE + ("dims", "stride", "padding", "dilation", "groups", "pre_pad")
_CONV_T = ("module", "weight", "bias", "stride", "padding", "output_padding", "dilation", "groups")
_MAX_POOL = ("dims", "kernel_size", "stride", "padding", "dilation", "ceil_mode")


def _activation(name: str, elementwise: bool = True) -> OpKind:
    return OpKind(name, activation=True, elementwise=elementwise)


CATALOGUE: dict[str, OpKind] = {k.name: k for k in (
    # layers with weights
    OpKind("linear", _DENSE, weights=True, foldable=True, records_activation=True),
    OpKind("conv1d", _CONV, weights=True, foldable=True, records_activation=True),
    OpKind("conv2d", _CONV, weights=True, foldable=True, records_activation=True),
    OpKind("conv_transpose1d", _CONV_T, weights=True, records_activation=True),
    OpKind("conv_transpose2d", _CONV_T, weights=True, records_activation=True),
    OpKind("conv_transpose3d", _CONV_T, weights=True, records_activation=True),
    OpKind("batch_norm", ("scale_vec", "shift_vec"), weights=True, records_activation=True),
    OpKind("layer_norm", weights=True),
    OpKind("rms_norm", weights=True),
    OpKind("group_norm", weights=True),
    OpKind("instance_norm", weights=True),
    OpKind("lstm", ("module",), weights=True),
    # lookups of token ids
    OpKind("embedding", index_like=True, lookup=True),
    OpKind("embedding_bag", ("module",), index_like=True, lookup=True),
    # activations
    _activation("relu"), _activation("relu6"), _activation("leaky_relu"), _activation("elu"),
    _activation("gelu"), _activation("silu"), _activation("mish"), _activation("softplus"),
    _activation("hardtanh"), _activation("hardswish"), _activation("hardsigmoid"), _activation("tanh"),
    _activation("sigmoid"), _activation("softmax", elementwise=False),
    # pooling and reductions (``fn`` re-applies the op to one tensor)
    OpKind("avg_pool1d", ("fn",)),
    OpKind("avg_pool2d", ("fn",)),
    OpKind("adaptive_avg_pool1d", ("fn",)),
    OpKind("adaptive_avg_pool2d", ("fn",)),
    OpKind("mean", ("fn",)),
    OpKind("sum", ("fn",)),
    OpKind("max_pool1d", _MAX_POOL),
    OpKind("max_pool2d", _MAX_POOL),
    OpKind("adaptive_max_pool1d", ("fn",)),
    OpKind("adaptive_max_pool2d", ("fn",)),
    # moving values around
    OpKind("identity", elementwise=True, moves=True, index_like=True, transparent=True),
    OpKind("dropout", elementwise=True, moves=True, transparent=True),
    OpKind("reshape", moves=True, index_like=True),
    OpKind("index_map", ("fn",), moves=True, index_like=True),
    OpKind("getitem", ("index",), moves=True, index_like=True),
    OpKind("cat", ("dim",), index_like=True),
    OpKind("split", ("dim", "stack"), index_like=True),
    OpKind("interpolate", ("fn",)),
    # arithmetic
    OpKind("add", ("signs", "constant"), elementwise=True),
    OpKind("mul", elementwise=True),
    OpKind("scale", elementwise=True),
    OpKind("pointwise", elementwise=True),
    # attention and masks
    OpKind("matmul", ("recompute",)),
    OpKind("attention", ("is_causal", "scale", "enable_gqa")),
    OpKind("where"),
    OpKind("masked_fill"),
    # values of integer inputs alone (masks, counts, position ids): read by rules, no relevance
    OpKind("aux", index_like=True),
)}


def declare(kind: OpKind) -> OpKind:
    """Add a kind to the catalogue (a rule registered with an :class:`OpKind` does this)."""
    if kind.name in CATALOGUE or kind.name in STRUCTURAL:
        raise ValueError(f"op kind {kind.name!r} is declared twice")
    CATALOGUE[kind.name] = kind
    return kind


def kinds(trait: str) -> tuple[str, ...]:
    """The kinds with ``trait`` (a boolean field of :class:`OpKind`), in catalogue order."""
    if trait not in _TRAITS:
        raise ValueError(f"unknown trait {trait!r}; choose one of: {', '.join(_TRAITS)}")
    return tuple(name for name, k in CATALOGUE.items() if getattr(k, trait))


def has(kind: str, trait: str) -> bool:
    """Whether ``kind`` is in the catalogue and has ``trait``."""
    k = CATALOGUE.get(kind)
    return k is not None and bool(getattr(k, trait))


_TRAITS = tuple(f for f in OpKind.__dataclass_fields__ if f not in ("name", "params"))
