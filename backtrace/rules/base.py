"""The rule interface and registry: one rule class per op kind of the catalogue
(:mod:`backtrace.ops`), registered with ``@register``.

Conventions every rule can rely on (the engine guarantees them):

- Tensors are batch first; a rule works on the whole batch at once (no loop over samples).
- ``inputs`` are the values of ``node.inputs`` (in that order) as recorded by
  ``Backtrace.predict``; ``output`` is the node's own value.
- Structured outputs: a node whose output is a tuple (``nn.LSTM`` returns
  ``(output, (h_n, c_n))``) is one node; ``getitem`` nodes select parts of it. The engine
  accumulates the relevance arriving at each part into a structure that mirrors the output
  exactly, with zero tensors for parts where none arrived, and hands that structure to the
  rule as ``relevance`` (contrastive mode: a pair ``(structure_pos, structure_neg)``). A rule
  whose *input* is a structure returns a mirroring structure for it (see :func:`tree_zeros_like`).
- A rule may return ``None`` for an input that takes no relevance (constants, indices).
- A rule that never reads its input values or its output value sets ``reads_inputs`` /
  ``reads_output`` to False; it is then handed ``None`` in their place by :func:`explain`.
- The activation that follows a linear/conv-like node (its sole consumer, possibly through
  Dropout/Identity, after BatchNorm folding) is in ``node.meta["activation"]`` (an op kind
  such as ``"relu"``, ``"tanh"``; absent when none); :func:`saturation_bounds` turns it into
  the reference's saturation bounds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from backtrace.ir import Node
from backtrace.ops import CATALOGUE, OpKind, declare


@dataclass(frozen=True)
class EvalOptions:
    mode: str = "default"                    # "default" | "contrastive"
    task: str = "multi-class classification"
    multiplier: float = 100.0
    scaler: Optional[float] = None
    thresholding: float = 0.5
    embedding_reduction: str = "mean"        # "mean" (reference) | "sum" (conservative)
    eps: float = 1e-12


Relevance = Optional[Tensor]
PairRelevance = Optional[tuple[Tensor, Tensor]]


class Rule:
    """Redistributes the relevance of one node's output onto its inputs, for a whole batch.

    ``inputs`` are the node's input values and ``output`` its output value (batch first).
    ``default`` returns one relevance tensor per input (``None`` for inputs that take none,
    e.g. constants); ``contrastive`` returns one ``(R+, R-)`` pair per input.
    """

    kinds: tuple[str, ...] = ()
    # Which recorded values the rule reads: :func:`backtrace.explain` records only those (the
    # others are freed during the forward pass). Rules that ignore them say so.
    reads_inputs: bool = True
    reads_output: bool = True
    # The rule divides by a product of two activations (attention scores ``Q K^T``, ``A V``) and
    # splits it in proportion to its terms: where the product nearly cancels, the rounding of its
    # inputs is amplified by the ratio of the terms to their sum. Float32 forward values differ
    # by rounding with the batch's shape, so in float32 such a rule makes relevance depend on
    # batch composition and padding; :func:`backtrace.explain` evaluates graphs holding one in
    # float64 unless given a ``dtype``.
    ill_conditioned: bool = False

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        raise NotImplementedError

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        raise NotImplementedError


class LinearInRelevanceRule(Rule):
    """A rule whose default redistribution is linear in the relevance (shape ops, pooling to
    the argmax, gates): contrastive mode applies it to each map separately."""

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        pos = self.default(node, inputs, output, relevance[0], opts)
        neg = self.default(node, inputs, output, relevance[1], opts)
        return [None if p is None else (p, n) for p, n in zip(pos, neg)]


RULES: dict[str, Rule] = {}


def register(*kinds: str | OpKind) -> Callable[[type[Rule]], type[Rule]]:
    """Class decorator: one instance of the rule serves every listed op kind: a name from the
    catalogue, or a new :class:`~backtrace.ops.OpKind`, which this adds to the catalogue."""

    def deco(cls: type[Rule]) -> type[Rule]:
        names = tuple(k.name if isinstance(k, OpKind) else k for k in kinds)
        for k in names:
            if k in RULES:
                raise ValueError(f"rule for op kind {k!r} registered twice")
        for k in kinds:
            if isinstance(k, OpKind):
                declare(k)
            elif k not in CATALOGUE:
                raise ValueError(f"op kind {k!r} is not in the catalogue (backtrace.ops); "
                                 f"register it as an OpKind to add it")
        inst = cls()
        cls.kinds = names
        for k in names:
            RULES[k] = inst
        return cls

    return deco


# Saturation bounds (L, U) of the activation that follows a layer, as the reference uses them.
# The reference tests bounds by truthiness, so a bound of 0 (ReLU's lower one) never applies:
# it is stored as None here. Activations not listed have no bounds.
SATURATION_BOUNDS: dict[str, tuple[Optional[float], Optional[float]]] = {
    "tanh": (-2.0, 2.0),
    "sigmoid": (-4.0, 4.0),
    "softmax": (-1.0, 2.0),
}


def saturation_bounds(node: Node) -> tuple[Optional[float], Optional[float]]:
    """``(L, U)`` for the activation recorded on ``node`` (``(None, None)`` when none apply)."""
    return SATURATION_BOUNDS.get(node.meta.get("activation") or "", (None, None))


def safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den != 0``, else 0: a unit with nothing to share gives nothing."""
    # one division and one in-place clean-up: x/0 gives inf or nan, both become 0 here
    return torch.div(num, den).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def safe_div_into(num: Tensor, den: Tensor) -> Tensor:
    """:func:`safe_div` written into ``den`` (a temporary the caller no longer needs): two
    passes and no new allocation. ``den`` must have the broadcast shape of both operands."""
    return torch.div(num, den, out=den).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def tree_map(fn: Callable[[Tensor], Any], tree: Any) -> Any:
    """Apply ``fn`` to every tensor of a nested tuple/list structure."""
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_map(fn, t) for t in tree)
    return fn(tree)


def tree_zeros_like(tree: Any) -> Any:
    """A structure mirroring ``tree`` with zero tensors (non-tensors become zero scalars)."""
    return tree_map(lambda t: torch.zeros_like(t) if isinstance(t, Tensor) else t, tree)


def tree_add(a: Any, b: Any) -> Any:
    """Elementwise sum of two mirroring structures."""
    if isinstance(a, (tuple, list)):
        return type(a)(tree_add(x, y) for x, y in zip(a, b))
    return a + b
