"""What every text method shares: which tokens are features, how a token is hidden, and how a
gradient method sees the token embeddings as its input.

Text inputs are right-padded int64 token ids ``(N, L)``; a text model (``experiments.zoo.text_models``)
says which of them are features (:meth:`feature_mask`: real, non-special tokens). Methods that hide
tokens (lime, shap, the IG baseline) hide only features, never ``[CLS]``, ``[SEP]`` or padding.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .vocabulary import check_choice

# How a hidden token is taken out of a sentence: replaced by the tokenizer's [MASK] id, or
# removed (the later tokens move up and the row is padded at the end, as the tokenizer pads).
TEXT_MASKS = ("mask_token", "remove")
# The token whose embedding stands for "absent" in Integrated Gradients: [MASK], or [PAD] (whose
# BERT and LSTM embedding is the zero vector: padding_idx rows are zero and get no gradient).
TOKEN_BASELINES = ("mask", "pad")
# Gradient methods attribute to every hidden unit of a token's embedding; a token's attribution is
# the sum over its hidden units, the same for every method (as ``channel_reduction: sum`` does for
# image channels).
HIDDEN_REDUCTION = "sum"


def text_model_check(model: nn.Module) -> None:
    """A text method needs the text model's contract (``feature_mask``, ``embedding_layer``, the
    pad and mask ids); anything else is refused in one line."""
    missing = [a for a in ("feature_mask", "embedding_layer", "pad_token_id", "mask_token_id") if not hasattr(model, a)]
    if missing:
        raise TypeError(f"text methods need a text model (experiments.zoo.text_models.TextClassifier); "
                        f"{type(model).__name__} lacks {', '.join(missing)}")


def feature_mask(model: nn.Module, ids: Tensor) -> Tensor:
    """True on the tokens that are features (the model's own definition)."""
    text_model_check(model)
    return model.feature_mask(ids).to(torch.bool)


def unpadded(model: nn.Module, row: Tensor) -> Tensor:
    """One right-padded row without its padding. The perturbation methods call the model on
    hundreds of copies of one sentence: padding changes nothing in a text model's output (its
    attention mask hides it) but costs the same as real tokens, and a batch is padded to its
    longest sentence."""
    return row[: int(row.ne(int(model.pad_token_id)).sum())]


def hide_tokens(ids: Tensor, keep: Tensor, how: str, mask_token_id: int, pad_token_id: int) -> Tensor:
    """Copies of the rows ``ids`` ``(M, L)`` with the tokens where ``keep`` ``(M, L)`` is False
    hidden: replaced by ``mask_token_id`` (``mask_token``) or removed, the row closed up and padded
    with ``pad_token_id`` at the end (``remove``). Vectorised over the rows."""
    if how == "mask_token":
        return torch.where(keep, ids, torch.full_like(ids, mask_token_id))
    check_choice("text mask", how, TEXT_MASKS)
    # a stable sort on "hidden" moves the kept tokens to the front in their order
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    moved = torch.gather(ids, 1, order)
    n_kept = keep.sum(1, keepdim=True)
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return torch.where(positions < n_kept, moved, torch.full_like(ids, pad_token_id))


def baseline_ids(model: nn.Module, ids: Tensor, token: str) -> Tensor:
    """``ids`` with every feature token replaced by the baseline token (``mask`` or ``pad``);
    ``[CLS]``, ``[SEP]`` and padding stay, so the baseline is the same sentence frame, empty."""
    check_choice("token baseline", token, TOKEN_BASELINES)
    fill = model.mask_token_id if token == "mask" else model.pad_token_id
    return torch.where(feature_mask(model, ids), torch.full_like(ids, fill), ids)


class EmbeddingsAsInput(nn.Module):
    """``model`` as a function of its token embeddings: ``forward(embeddings, ids)`` runs
    ``model(ids)`` with the output of ``layer`` (the token embedding) replaced by ``embeddings``.

    captum's NoiseTunnel adds its noise to the explained method's *inputs*, which for text are
    integer ids; SmoothGrad on text needs the noise on the embeddings, so the embeddings are made
    the input (the attention mask still comes from the ids)."""

    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, embeddings: Tensor, ids: Tensor) -> Tensor:
        handle = self.layer.register_forward_hook(lambda _m, _i, _o: embeddings)
        try:
            return self.model(ids)
        finally:
            handle.remove()


def embedding_layer(model: nn.Module) -> nn.Module:
    text_model_check(model)
    return model.embedding_layer()


def reduce_hidden(values: Any) -> Tensor:
    """Per-hidden-unit attributions ``(N, L, H)`` -> per token ``(N, L)`` (:data:`HIDDEN_REDUCTION`)."""
    values = values[0] if isinstance(values, (tuple, list)) else values
    return values.sum(-1)
