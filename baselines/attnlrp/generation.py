"""AttnLRP for a decoder: the relevance of each input token for one next-token logit.

What a generation table needs from AttnLRP, kept next to the rules so a test can check the decoder
maps (Llama, GPT-2) on tiny random models: gradient x input at the token embeddings, with the
model under :func:`~baselines.attnlrp.patch_maps.attnlrp_rules`, summed over the hidden size.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .patch_maps import attnlrp_rules, family_of


def next_token_relevance(model: nn.Module, input_ids: Tensor, attention_mask: Optional[Tensor] = None,
                         target: Optional[Tensor] = None, position: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """``(relevance (N, L), explained logit (N,))`` of a causal language model (Hugging Face,
    ``.logits`` output): the logit of ``target`` (default: the argmax token) at ``position``
    (default: the last real token by ``attention_mask``, else the last position)."""
    family = family_of(model)
    if family is None:
        raise ValueError(f"AttnLRP has no rules for {type(model).__name__}'s attention; it has rules for "
                         f"BERT, Llama and GPT-2 attention")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if position is None:
        steps = torch.arange(input_ids.shape[1], device=input_ids.device)
        position = (attention_mask.ne(0).long() * (steps + 1)).argmax(dim=1)
    rows = torch.arange(len(input_ids), device=input_ids.device)
    model.eval()
    with attnlrp_rules(model, family):
        embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, attention_mask=attention_mask).logits[rows, position]
        if target is None:
            target = logits.argmax(dim=1)
        chosen = logits[rows, target]
        (grad,) = torch.autograd.grad(chosen.sum(), embeds)
    return (embeds * grad).sum(-1).detach(), chosen.detach()
