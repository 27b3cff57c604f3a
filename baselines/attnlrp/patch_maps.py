"""AttnLRP's rules on the transformers 5.x module classes: patch maps in LXT's own style.

LXT's efficient AttnLRP (``lxt.efficient``) computes LRP as gradient x input with the backward
pass of a few operations changed, by patching a model's classes (its ``patch_map``: module class
-> new ``forward``). LXT 2.1's own maps were written for transformers 4.x and do not import on 5.x
(``lxt/efficient/models/bert.py`` imports ``transformers.modeling_attn_mask_utils``, removed in
5.0; ``patch_attention`` replaces a model file's ``ALL_ATTENTION_FUNCTIONS`` with a plain dict,
which 5.x calls ``.get_interface`` on). So the maps are written here for the 5.24 classes, from
LXT's own rules (``lxt.efficient.rules``) and patched forwards (``lxt.efficient.patches``):

- LayerNorm / RMSNorm: the identity rule (no gradient through the variance), LXT's
  ``layer_norm_forward`` / ``rms_norm_forward``.
- The feed-forward block's activation (GELU in BERT and GPT-2, SiLU in Llama's gated MLP): the
  identity rule via ``identity_rule_implicit``; Llama's gate product the uniform rule, LXT's
  ``gated_mlp_forward``. BERT's and GPT-2's MLP forwards are written here in the form of LXT's
  ``mlp_forward`` (their submodules have other names).
- Attention: LXT's ``wrap_attention_forward`` around each model file's own
  ``eager_attention_forward`` (the uniform rule on both matrix products: query and key
  gradients / 4, value gradients / 2; the softmax keeps its gradient, which is AttnLRP's softmax
  rule in gradient x input form). It is registered as an attention implementation of its own in
  transformers' ``AttentionInterface`` (with the eager additive mask), and a model is switched to
  it for the call, where LXT patches the model file's module globals.

Two departures from LXT's ``monkey_patch``, both to keep one process honest for every other
method: the rules are applied to one model's module *instances* (a bound ``forward`` on the
instance), not to the classes, and only inside :func:`attnlrp_rules`, which restores everything
on exit. LXT patches ``torch.nn.LayerNorm`` and ``torch.nn.Dropout`` themselves, for the whole
process: every later gradient through any layer norm (saliency, IG on the same BERT) would change,
and dropout would stop working in training. Dropout is not patched: explanations run in eval mode.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterator

from torch import Tensor, nn

from ..lrp_packages import lxt_efficient

FAMILIES = ("bert", "llama", "gpt2")


@dataclass(frozen=True)
class PatchMap:
    """One model family's AttnLRP rules: module class -> patched forward, and the model file whose
    ``eager_attention_forward`` gets the attention rule."""

    family: str
    forwards: dict[type, Callable[..., Any]]
    attention_classes: tuple[type, ...]
    modeling: ModuleType

    @property
    def attention_name(self) -> str:
        """The name the rule-wrapped eager attention is registered under."""
        return f"attnlrp_{self.family}"


def bert_intermediate_forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
    """BertIntermediate with the identity rule on its activation (as LXT's ``mlp_forward``)."""
    rules = lxt_efficient().rules
    return rules.identity_rule_implicit(self.intermediate_act_fn, self.dense(hidden_states))


def gpt2_mlp_forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
    """GPT2MLP with the identity rule on its activation (LXT's GPT-2 ``mlp_forward``; the
    dropout after ``c_proj`` is the identity in eval mode and is left out)."""
    rules = lxt_efficient().rules
    return self.c_proj(rules.identity_rule_implicit(self.act, self.c_fc(hidden_states)))


def patch_map(family: str) -> PatchMap:
    """The AttnLRP patch map of one model family on the installed transformers."""
    patches = lxt_efficient().patches
    if family == "bert":
        bert = importlib.import_module("transformers.models.bert.modeling_bert")
        return PatchMap("bert", {bert.BertIntermediate: bert_intermediate_forward,
                                 nn.LayerNorm: patches.layer_norm_forward},
                        (bert.BertSelfAttention,), bert)
    if family == "llama":
        llama = importlib.import_module("transformers.models.llama.modeling_llama")
        return PatchMap("llama", {llama.LlamaMLP: patches.gated_mlp_forward,
                                  llama.LlamaRMSNorm: patches.rms_norm_forward},
                        (llama.LlamaAttention,), llama)
    if family == "gpt2":
        gpt2 = importlib.import_module("transformers.models.gpt2.modeling_gpt2")
        return PatchMap("gpt2", {gpt2.GPT2MLP: gpt2_mlp_forward, nn.LayerNorm: patches.layer_norm_forward},
                        (gpt2.GPT2Attention,), gpt2)
    raise ValueError(f"unknown AttnLRP model family {family!r}; choose one of: {', '.join(FAMILIES)}")


def family_of(model: nn.Module) -> str | None:
    """The family whose attention modules ``model`` holds, or None (no rules for its attention)."""
    for family in FAMILIES:
        classes = patch_map(family).attention_classes
        if any(isinstance(m, classes) for m in model.modules()):
            return family
    return None


def _register_attention(pmap: PatchMap) -> str:
    """Register the rule-wrapped eager attention (and the eager mask it reads) once."""
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.modeling_utils import AttentionInterface

    name = pmap.attention_name
    if name not in AttentionInterface._global_mapping:
        wrapped = lxt_efficient().patches.wrap_attention_forward(pmap.modeling.eager_attention_forward)
        AttentionInterface.register(name, wrapped)
        AttentionMaskInterface.register(name, eager_mask)
    return name


@contextmanager
def attnlrp_rules(model: nn.Module, family: str) -> Iterator[nn.Module]:
    """``model`` with AttnLRP's rules on its modules (instances only) and its attention; all is
    restored on exit, whatever happens inside."""
    from transformers import PreTrainedModel

    pmap = patch_map(family)
    patched: list[nn.Module] = []
    switched: list[tuple[PreTrainedModel, str]] = []
    try:
        for module in model.modules():
            forward = next((fn for cls, fn in pmap.forwards.items() if isinstance(module, cls)), None)
            if forward is not None and "forward" not in vars(module):
                module.forward = forward.__get__(module)   # an instance attribute shadows the class's
                patched.append(module)
        name = _register_attention(pmap)
        for module in model.modules():
            if isinstance(module, PreTrainedModel) and module.config._attn_implementation != name:
                switched.append((module, module.config._attn_implementation))
                module.set_attn_implementation(name)
        yield model
    finally:
        for module, previous in reversed(switched):
            module.set_attn_implementation(previous)
        for module in patched:
            del module.forward
