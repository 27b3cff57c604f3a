"""Seeds for language models: the next token, or a continuation of several tokens.

``task="generation"`` explains a language model's logits ``(batch, positions, vocabulary)``. The
target is one token per sample (default: the argmax) read at one position per sample, or a
*continuation*: ``T`` token ids per sample, a ``(batch, T)`` tensor or one list per sample. A
continuation is explained as the model scores it when it reads it (teacher forcing): the inputs
hold the prompt followed by the continuation, and token ``t`` of the continuation is predicted
at the position before it. By default those are the ``T`` positions before the last ``T`` real
tokens (the continuation ends the row); ``position`` may give them as ``(batch, T)``.

What is explained per token (``score``): its logit (``"logit"``, the default for one token) or
its log-probability under the softmax over the vocabulary (``"log_prob"``, the default for a
continuation: the continuation's log-likelihood is the sum of its tokens' log-probabilities,
while a sum of logits depends on each position's arbitrary offset). The value goes on the
token's logit, as a softmax head's probability does; every other entry of the row gets none
(contrastive mode: the row's other entries, scored the same way, start the negative map).

Default-mode rules are linear in the relevance, so one walk from all ``T`` seeds at once gives
the sum of the ``T`` per-token maps (contrastive mode walks the summed seeds once).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

SCORES = ("logit", "log_prob")


def as_continuation(target: Any) -> Optional[Tensor]:
    """``target`` as ``(batch, T)`` int64 ids when it is a continuation (a 2-D tensor or array,
    or a sequence of sequences), else None (one token per sample, or none)."""
    if target is None or isinstance(target, (int, float)):
        return None
    if isinstance(target, Tensor):
        return target.long() if target.dim() == 2 else None
    if hasattr(target, "ndim") and hasattr(target, "shape"):       # NumPy
        return torch.as_tensor(target).long() if target.ndim == 2 else None
    if isinstance(target, Sequence) and target and all(isinstance(t, (Sequence, Tensor)) and not isinstance(t, str)
                                                      for t in target):
        lengths = {len(t) for t in target}
        if len(lengths) != 1:
            raise ValueError(f"a continuation target needs the same number of tokens per sample; got lengths "
                             f"{sorted(lengths)} (pad the rows' prompts instead: the continuation ends each row)")
        return torch.as_tensor([[int(v) for v in t] for t in target], dtype=torch.long)
    return None


def last_real(names: Sequence[str], values: Sequence[Any], batch: int, length: int,
              device: torch.device) -> Tensor:
    """Per sample, the index of its last real token by the ``attention_mask`` input (the last
    nonzero entry), else the last position."""
    if "attention_mask" in names:
        mask = values[list(names).index("attention_mask")]
        steps = torch.arange(mask.shape[1], device=mask.device)
        return (mask.ne(0).long() * (steps + 1)).argmax(dim=1).to(device)
    return torch.full((batch,), length - 1, dtype=torch.long, device=device)


def continuation_positions(names: Sequence[str], values: Sequence[Any], primary: str, target: Tensor,
                           position: Any = None) -> Tensor:
    """``(batch, T)`` positions whose next-token logits predict the continuation ``target``,
    checked against the inputs: where the primary input holds token ids, the token after each
    position must be the continuation's token there (the continuation has to be in the inputs)."""
    ids = values[list(names).index(primary)]
    batch, length = int(ids.shape[0]), int(ids.shape[1])
    if target.shape[0] != batch:
        raise ValueError(f"a continuation target needs one row of token ids per sample ({batch}); got "
                         f"{target.shape[0]} rows")
    steps = target.shape[1]
    if position is None:
        last = last_real(names, values, batch, length, ids.device)
        pos = last[:, None] - steps + torch.arange(steps, device=ids.device)[None, :]
        short = (pos[:, 0] < 0).nonzero()
        if len(short):
            b = int(short[0])
            raise ValueError(f"the continuation has {steps} tokens but sample {b} has {int(last[b]) + 1} real tokens; "
                             f"the inputs hold the prompt followed by the continuation")
    else:
        pos = torch.as_tensor(position, device=ids.device).long()
        if pos.shape != target.shape:
            raise ValueError(f"position for a continuation must be (batch, T) = {tuple(target.shape)}, one per "
                             f"token; got shape {tuple(pos.shape)}")
        if bool(((pos < 0) | (pos >= length)).any()):
            raise ValueError(f"continuation positions must lie in [0, {length}); got {pos.tolist()}")
    if not ids.is_floating_point():
        target = target.to(ids.device)
        nxt = pos + 1
        inside = nxt < length
        read = torch.where(inside, ids.gather(1, nxt.clamp(max=length - 1)), torch.full_like(nxt, -1))
        wrong = (read != target).nonzero()
        if len(wrong):
            b, t = (int(i) for i in wrong[0])
            where = (f"position {int(nxt[b, t])} holds {int(read[b, t])}" if bool(inside[b, t])
                     else f"position {int(nxt[b, t])} is past the end")
            raise ValueError(f"continuation token {t} of sample {b} is {int(target[b, t])} but {primary} {where}; "
                             f"the inputs must hold the prompt followed by the continuation (the model reads each "
                             f"token to predict the next)")
    return pos


def check_score(score: Optional[str], continuation: bool) -> str:
    """The score explained: as given, else ``log_prob`` for a continuation and ``logit`` for one token."""
    if score is None:
        return "log_prob" if continuation else "logit"
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of: {', '.join(SCORES)}")
    return score


def generation_seed(output: Tensor, opts: Any, target: Any, position: Any, score: str,
                    start_relevance: Any) -> Any:
    """Seed relevance for logits ``(batch, positions, vocabulary)``: at each ``position`` (one
    index, one per sample ``(batch,)`` or several ``(batch, T)``; default the last) the
    multi-class seed of ``target`` (the same shape as ``position``, or one index, or None: the
    row's argmax) on the row scored by ``score``; every other position none. ``start_relevance``
    is the engine's multi-class seed."""
    if output.dim() != 3:
        raise ValueError(f"task 'generation' needs logits shaped (batch, positions, vocabulary); got "
                         f"{tuple(output.shape)}")
    B, T = output.shape[:2]
    pos = torch.as_tensor(T - 1 if position is None else position, device=output.device).long()
    if pos.dim() == 2:
        if pos.shape[0] != B:
            raise ValueError(f"position must be (batch, T) with batch {B}; got shape {tuple(pos.shape)}")
    else:
        pos = pos.reshape(-1)
        pos = pos.expand(B) if pos.numel() == 1 else pos
        if pos.numel() != B:
            raise ValueError(f"position must be one index or one per sample ({B}) in [-{T}, {T}); got {pos.tolist()}")
        pos = pos[:, None]
    if bool(((pos < -T) | (pos >= T)).any()):
        raise ValueError(f"position must lie in [-{T}, {T}); got {pos.tolist()}")
    pos = pos % T
    steps = pos.shape[1]
    rows = torch.arange(B, device=output.device)[:, None].expand(B, steps).reshape(-1)
    flat_pos = pos.reshape(-1)
    picked = output[rows, flat_pos]                                              # (B * steps, V)
    if score == "log_prob":
        picked = torch.log_softmax(picked, dim=-1)
    if target is not None:
        tgt = torch.as_tensor(target, device=output.device).long()
        if tgt.dim() == 2:
            if tuple(tgt.shape) != (B, steps):
                raise ValueError(f"target must be (batch, T) = {(B, steps)} like the positions; got {tuple(tgt.shape)}")
            target = tgt.reshape(-1)
        elif tgt.numel() not in (1, B):
            raise ValueError(f"target must be one token, one per sample ({B}) or (batch, T); got {tgt.numel()} values")
        elif steps > 1:
            per_sample = tgt.reshape(-1, 1) if tgt.numel() == B else tgt.reshape(1, 1)
            target = per_sample.expand(B, steps).reshape(-1)
    seed = start_relevance(picked, replace(opts, task="multi-class classification"), target)

    def place(r: Tensor) -> Tensor:
        full = torch.zeros_like(output)
        return full.index_put_((rows, flat_pos), r, accumulate=True)

    if isinstance(seed, tuple):
        return tuple(place(r) for r in seed)
    return place(seed)
