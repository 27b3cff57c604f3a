"""Embedding and EmbeddingBag: relevance of looked-up vectors becomes relevance per token.

Kinds and what the front end must put in ``node.params``:

- ``"embedding"``: ``params["module"]`` = the ``nn.Embedding`` (optional; nothing is read
  from it). Inputs ``(indices,)`` of any shape ``S``; output ``S + (E,)``. The index input
  gets the token relevance, shape ``S``: the mean over the embedding dimension (the
  reference) or the sum (``EvalOptions.embedding_reduction="sum"``, conservative).
- ``"embedding_bag"``: ``params["module"]`` = the ``nn.EmbeddingBag`` (weight, mode,
  padding_idx and include_last_offset are read from it). Inputs ``(indices[, offsets[,
  per_sample_weights]])``; indices 2-D ``(B, L)`` (one bag per row) or 1-D with offsets.
  A bag's output is a sum (or mean) of token vectors, so each embedding unit's relevance is
  split over the bag's tokens with the add rule (in proportion to ``|w_t * E[idx_t]|``); in
  ``max`` mode it goes to the token(s) holding the maximum, split equally among ties. Then
  the per-token relevance is reduced over the embedding dimension as for ``"embedding"``.
  Offsets and per-sample weights take no relevance (``None``).

Contrastive mode applies the same reduction to both maps.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from backtrace.ir import Node
from backtrace.rules.base import EvalOptions, PairRelevance, Relevance, Rule, register

_REDUCTIONS = ("mean", "sum")


def reduce_embedding_dim(relevance: Tensor, reduction: str) -> Tensor:
    """Per-token relevance from per-unit relevance (last dimension)."""
    if reduction == "mean":
        return relevance.mean(dim=-1)
    if reduction == "sum":
        return relevance.sum(dim=-1)
    raise ValueError(f"unknown embedding_reduction {reduction!r}; choose one of: {', '.join(_REDUCTIONS)}")


@register("embedding")
class EmbeddingRule(Rule):
    """A lookup has one input per output row: the token takes its row's relevance, reduced."""

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        return [reduce_embedding_dim(relevance, opts.embedding_reduction)] + [None] * (len(inputs) - 1)

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        rp, rn = (reduce_embedding_dim(r, opts.embedding_reduction) for r in relevance)
        return [(rp, rn)] + [None] * (len(inputs) - 1)


def _bag_layout(indices: Tensor, offsets: Tensor | None, include_last_offset: bool) -> tuple[Tensor, Tensor, int]:
    """Flat token indices, the bag each token belongs to, and the number of bags."""
    if indices.dim() == 2:
        n_bags, length = indices.shape
        bag = torch.arange(n_bags, device=indices.device).repeat_interleave(length)
        return indices.reshape(-1), bag, n_bags
    if indices.dim() != 1 or offsets is None:
        raise ValueError(f"EmbeddingBag input must be 2-D (bags, length) or 1-D with offsets; got shape "
                         f"{tuple(indices.shape)} with offsets={'None' if offsets is None else 'given'}")
    starts = offsets[:-1] if include_last_offset else offsets
    positions = torch.arange(indices.numel(), device=indices.device)
    bag = torch.bucketize(positions, starts, right=True) - 1
    return indices, bag, starts.numel()


def _token_unit_relevance(module: nn.EmbeddingBag, inputs: Sequence[Tensor], relevance: Tensor) -> Tensor:
    """Relevance of each (token, embedding unit): shape ``(n_tokens, E)`` for the flat tokens."""
    indices = inputs[0]
    offsets = inputs[1] if len(inputs) > 1 else None
    psw = inputs[2] if len(inputs) > 2 else None
    flat, bag, n_bags = _bag_layout(indices, offsets, module.include_last_offset)
    weight = module.weight.detach().to(relevance.dtype)
    vectors = weight[flat]                                              # (T, E)
    valid = torch.ones_like(flat, dtype=torch.bool)
    if module.padding_idx is not None:
        valid = flat != module.padding_idx
    vectors = vectors * valid.unsqueeze(1)
    rel_bag = relevance.reshape(n_bags, -1)[bag]                        # (T, E)
    if module.mode == "max":
        bag_max = torch.full((n_bags, weight.shape[1]), float("-inf"), dtype=weight.dtype, device=weight.device)
        masked = vectors.masked_fill(~valid.unsqueeze(1), float("-inf"))
        bag_max = bag_max.scatter_reduce(0, bag.unsqueeze(1).expand_as(masked), masked, "amax")
        hit = (masked == bag_max[bag]) & valid.unsqueeze(1)
        share = hit.to(relevance.dtype)
    else:
        if psw is not None:
            vectors = vectors * psw.reshape(-1, 1).to(relevance.dtype)
        share = vectors.abs()
    total = torch.zeros((n_bags, share.shape[1]), dtype=share.dtype, device=share.device)
    total = total.index_add(0, bag, share)[bag]
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, share / safe, torch.zeros_like(share)) * rel_bag


@register("embedding_bag")
class EmbeddingBagRule(Rule):
    """A bag is a (weighted) sum, mean or max of looked-up rows: the add rule (or argmax) per
    embedding unit, then the per-token reduction of the plain embedding."""

    @staticmethod
    def _module(node: Node) -> nn.EmbeddingBag:
        module = node.params.get("module")
        if not isinstance(module, nn.EmbeddingBag):
            raise ValueError(f"node {node.name!r}: embedding_bag needs params['module'] = the nn.EmbeddingBag")
        return module

    def _per_token(self, node: Node, inputs: Sequence[Tensor], relevance: Tensor, opts: EvalOptions) -> Tensor:
        token_units = _token_unit_relevance(self._module(node), inputs, relevance)
        return reduce_embedding_dim(token_units, opts.embedding_reduction).reshape(inputs[0].shape)

    def default(self, node: Node, inputs: Sequence[Tensor], output: Tensor, relevance: Tensor,
                opts: EvalOptions) -> list[Relevance]:
        return [self._per_token(node, inputs, relevance, opts)] + [None] * (len(inputs) - 1)

    def contrastive(self, node: Node, inputs: Sequence[Tensor], output: Tensor,
                    relevance: tuple[Tensor, Tensor], opts: EvalOptions) -> list[PairRelevance]:
        rp, rn = (self._per_token(node, inputs, r, opts) for r in relevance)
        return [(rp, rn)] + [None] * (len(inputs) - 1)
