"""``attnlrp`` (LXT's rules through the transformers 5 patch maps): padding gets nothing and
changes nothing, relevance is conserved up to AttnLRP's softmax terms (BERT, Llama, GPT-2), the
rules are undone after each call, and what has no rules is refused in one line."""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import Tensor, nn

from baselines import METHODS, ExplainContext, IncompatibleMethodError
from baselines.attnlrp import attnlrp_rules, family_of, next_token_relevance
from baselines.lrp_methods import AttnLRPMethod
from experiments.data.tokenizer import load_tokenizer, tokenizer_spec
from experiments.zoo.text_models import BertClassifier, LSTMClassifier, TextClassifier

SENTENCES = ["a good movie, really!", "not bad at all", "the plot was dull and slow"]
TARGETS = torch.tensor([1, 0, 1])
# The accounting identity below is exact in float64 up to rounding.
IDENTITY_RTOL = 1e-9


def spec_kw() -> dict[str, Any]:
    spec = tokenizer_spec()
    return {k: spec[k] for k in ("vocab_size", "pad_token_id", "mask_token_id", "special_token_ids")}


def tiny_bert(seed: int = 0, **kw: Any) -> BertClassifier:
    """bert_tiny's shape (hidden 64, 2 layers, 2 heads), random weights at a scale where attention
    is far from uniform."""
    torch.manual_seed(seed)
    model = BertClassifier(2, **spec_kw(), hidden=64, layers=2, heads=2, intermediate=128, **kw)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 2:
                p.normal_(0.0, 0.15)
    return model.eval()


def ids(sentences: list[str] = SENTENCES, length: int | None = None) -> Tensor:
    tok = load_tokenizer()
    if length is None:
        return tok(sentences, padding=True, return_tensors="pt")["input_ids"]
    return tok(sentences, padding="max_length", max_length=length, return_tensors="pt")["input_ids"]


def attnlrp(model: nn.Module, output: str = "softmax") -> AttnLRPMethod:
    return AttnLRPMethod(model, ExplainContext("text", "transformer", 2), output=output)


# -- padding --------------------------------------------------------------------------------------


def test_padding_gets_exactly_zero_before_any_feature_mask():
    model = tiny_bert()
    x = ids(length=16)
    raw = attnlrp(model).explain(x, TARGETS)     # the method's own output, before Explainer zeroes specials
    pad = x.eq(model.pad_token_id)
    assert pad.any() and (raw[pad] == 0).all()
    assert (raw[~pad] != 0).all()


def test_padding_does_not_change_the_real_tokens_relevance():
    model = tiny_bert()
    method = attnlrp(model)
    short = ids()                        # padded to the longest sentence
    long = ids(length=short.shape[1] + 9)
    alone = [method.explain(ids([s]), TARGETS[i:i + 1])[0] for i, s in enumerate(SENTENCES)]
    for batch in (method.explain(short, TARGETS), method.explain(long, TARGETS)):
        for i, own in enumerate(alone):
            torch.testing.assert_close(batch[i, : len(own)], own, rtol=1e-5, atol=1e-7)


# -- conservation, up to the softmax terms ---------------------------------------------------------


class SoftmaxLedger:
    """Records every softmax call's input and output, to account for the relevance AttnLRP's
    softmax rule does not conserve. In gradient x input form that is ``sum(out * dout) -
    sum(in * din)`` per sample, halved: the uniform rule gives the attention weights half of the
    attention output's relevance, a factor LXT applies at the query and key (their gradients / 4
    = / 2 for the weights' half, / 2 for the query-key product), so the gradients seen at the
    softmax are twice the relevance that passes through it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Tensor, Tensor]] = []
        self.original: Callable[..., Tensor] = torch.nn.functional.softmax

    def __call__(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        x.retain_grad()
        out = self.original(x, *args, **kwargs)
        out.retain_grad()
        self.calls.append((x, out))
        return out

    def leak(self) -> Tensor:
        total = 0
        for x, out in self.calls:
            x_grad, out_grad, x, out = x.grad, out.grad, x.detach(), out.detach()
            finite = torch.isfinite(x) & (x > torch.finfo(x.dtype).min / 2)   # masked scores carry no relevance
            inner = torch.where(finite, x * x_grad, torch.zeros_like(x))
            total = total + (out * out_grad).flatten(1).sum(1) - inner.flatten(1).sum(1)
        return total / 2


def zero_biases(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return model


def bert_totals(model: BertClassifier, x: Tensor, target: int, monkeypatch: Any, rules: bool = True
                ) -> tuple[float, float, float]:
    """(total input relevance of the word, position and token-type embeddings, the softmax leak,
    the target logit) for one sentence ``x`` (1, L), gradient x input with or without the rules."""
    emb = model.encoder.embeddings
    outputs: dict[str, Tensor] = {}
    def keep(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            output.retain_grad()
            outputs[name] = output
        return hook

    hooks = [m.register_forward_hook(keep(k))
             for k, m in (("word", emb.word_embeddings), ("position", emb.position_embeddings),
                          ("type", emb.token_type_embeddings))]
    ledger = SoftmaxLedger()
    monkeypatch.setattr(torch.nn.functional, "softmax", ledger)
    try:
        context = attnlrp_rules(model, "bert") if rules else torch.enable_grad()
        with context:
            logit = model(x)[0, target]
            logit.backward()   # fills the embeddings' and the ledger's retained gradients
    finally:
        for h in hooks:
            h.remove()
        monkeypatch.undo()
    total = sum(float((o * o.grad).sum().detach()) for o in outputs.values())
    return total, float(ledger.leak()), float(logit.detach())


def test_bert_conserves_relevance_up_to_the_softmax_terms(monkeypatch):
    """On a bias-free BERT every AttnLRP rule but the softmax's conserves relevance: the
    embeddings' total plus what the attention softmaxes leak equals the target logit."""
    model = zero_biases(tiny_bert(1)).double()
    for i, s in enumerate(SENTENCES):
        total, leak, logit = bert_totals(model, ids([s]), int(TARGETS[i]), monkeypatch)
        assert total + leak == pytest.approx(logit, rel=IDENTITY_RTOL)
        assert abs(leak) > 1e-3 * abs(logit)   # the softmax terms are real, not a rounding error


def test_without_the_rules_the_identity_fails(monkeypatch):
    """Plain gradient x input through BERT's layer norms (scale-invariant: their gradient x input
    sums to zero) does not account for the logit: the patch map is what makes it add up."""
    model = zero_biases(tiny_bert(1)).double()
    total, leak, logit = bert_totals(model, ids(SENTENCES[:1]), int(TARGETS[0]), monkeypatch, rules=False)
    assert abs(total + leak - logit) > 0.1 * abs(logit)


def decoder(family: str) -> nn.Module:
    if family == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        torch.manual_seed(2)
        return LlamaForCausalLM(config).double().eval()
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(3)
    return zero_biases(GPT2LMHeadModel(config)).double().eval()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_decoders_conserve_relevance_up_to_the_softmax_terms(family, monkeypatch):
    """The Llama and GPT-2 maps on tiny random decoders (biases zeroed): token embeddings (and
    GPT-2's position embeddings) plus the softmax leak account for the next-token logit."""
    model = decoder(family)
    assert family_of(model) == family
    x = torch.randint(0, 97, (1, 9), generator=torch.Generator().manual_seed(4))
    relevance, logit = next_token_relevance(model, x)
    ledger = SoftmaxLedger()
    monkeypatch.setattr(torch.nn.functional, "softmax", ledger)
    positions: list[Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
        output.retain_grad()
        positions.append(output)

    if family == "gpt2":
        model.transformer.wpe.register_forward_hook(keep)
    with attnlrp_rules(model, family):
        embeds = model.get_input_embeddings()(x).detach().requires_grad_(True)
        chosen = model(inputs_embeds=embeds).logits[0, -1].max()
        chosen.backward()
    monkeypatch.undo()
    token_relevance = (embeds * embeds.grad).sum(-1)
    torch.testing.assert_close(relevance, token_relevance.detach())
    assert float(chosen.detach()) == pytest.approx(float(logit[0]), rel=1e-12)
    total = float(token_relevance.sum().detach()) + sum(float((p * p.grad).sum().detach()) for p in positions)
    # Llama's eager attention takes its softmax in float32: the identity holds to float32 rounding
    rtol = 1e-5 if family == "llama" else IDENTITY_RTOL
    assert total + float(ledger.leak()) == pytest.approx(float(chosen.detach()), rel=rtol)


# -- the rules stay inside the call ---------------------------------------------------------------


def test_rules_are_undone_after_each_call():
    model = tiny_bert()
    layer_norm_forward = nn.LayerNorm.forward
    implementation = model.encoder.config._attn_implementation
    gxi = METHODS["gradxinput"](model, ExplainContext("text", "transformer", 2), output="softmax")
    x = ids()
    before = gxi(x, TARGETS).values
    attnlrp(model)(x, TARGETS)
    assert nn.LayerNorm.forward is layer_norm_forward
    assert model.encoder.config._attn_implementation == implementation
    assert not any("forward" in vars(m) for m in model.modules())
    torch.testing.assert_close(gxi(x, TARGETS).values, before, rtol=0, atol=0)
    with attnlrp_rules(model, "bert"):
        inside = gxi(x, TARGETS).values
    assert not torch.allclose(inside, before)   # the rules do change the backward pass while on


# -- refusals -------------------------------------------------------------------------------------


class OtherTransformer(TextClassifier):
    """A text transformer without Hugging Face attention (no AttnLRP rules for it here)."""

    kind = "transformer"

    def __init__(self) -> None:
        super().__init__(**{k: v for k, v in spec_kw().items() if k != "vocab_size"})
        self.embedding = nn.Embedding(spec_kw()["vocab_size"], 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.head = nn.Linear(16, 2)

    def embedding_layer(self) -> nn.Embedding:
        return self.embedding

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.head(self.layer(self.embedding(input_ids))[:, 0])


def test_attnlrp_refuses_a_transformer_without_rules():
    with pytest.raises(IncompatibleMethodError) as err:
        attnlrp(OtherTransformer())
    assert str(err.value) == ("method 'attnlrp' cannot explain OtherTransformer: AttnLRP's rules here cover BERT, "
                              "Llama and GPT-2 attention, and the model has none of them")


@pytest.mark.parametrize("modality,kind,message", [
    ("text", "recurrent", "method 'attnlrp' does not support 'recurrent' models; it supports: transformer"),
    ("tabular", "mlp", "method 'attnlrp' does not support 'tabular' data; it supports: text"),
    ("image", "conv", "method 'attnlrp' does not support 'image' data; it supports: text"),
])
def test_attnlrp_refuses_other_models(modality, kind, message):
    with pytest.raises(IncompatibleMethodError) as err:
        METHODS["attnlrp"].check_compatible(modality, kind)
    assert str(err.value) == message


def test_attnlrp_refuses_the_lstm_when_built():
    torch.manual_seed(0)
    with pytest.raises(IncompatibleMethodError, match="^method 'attnlrp' does not support 'recurrent' models"):
        AttnLRPMethod(LSTMClassifier(2, **spec_kw()), ExplainContext("text", "recurrent", 2))
