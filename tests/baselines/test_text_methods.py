"""Every method on token ids: a random-init BERT (``bert_tiny``'s shape) and an LSTM classifier
with the benchmark's tokenizer. Per-token attributions, zero on [CLS], [SEP] and padding; batch and
padding invariance; attention rollout on a hand-computed two-layer case; which token a method
finds on a model whose decisive token is known; the refusals; declared budgets and absent values."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from baselines import METHODS, ExplainContext, Explainer, IncompatibleMethodError
from baselines.attention_methods import rollout
from baselines.text_inputs import hide_tokens
from experiments.data.tokenizer import load_tokenizer, tokenizer_spec
from experiments.run.config import method_config
from experiments.zoo.text_models import BertClassifier, LSTMClassifier, TextClassifier

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL: dict[str, dict[str, Any]] = {
    "ig": {"n_steps": 8},
    "smoothgrad": {"nt_samples": 4},
    "shap_partition": {"max_evals": 40},
    "lime": {"num_samples": 60},
}
TEXT_METHODS = sorted(name for name, cls in METHODS.items() if "text" in cls.modalities)
SENTENCES = ["a good movie, really!", "not bad at all", "the plot was dull and slow"]
TRAIN = SENTENCES + ["the movie was good", "the plot was good, the movie was good"]   # what rarity counts
TARGETS = torch.tensor([1, 0, 1])


def spec_kw() -> dict[str, Any]:
    spec = tokenizer_spec()
    return {k: spec[k] for k in ("vocab_size", "pad_token_id", "mask_token_id", "special_token_ids")}


@pytest.fixture(scope="module")
def models() -> dict[str, TextClassifier]:
    torch.manual_seed(0)
    bert = BertClassifier(2, **spec_kw()).eval()
    torch.manual_seed(1)
    lstm = LSTMClassifier(2, **spec_kw()).eval()
    return {"transformer": bert, "recurrent": lstm}


def token_ids(sentences: list[str] = SENTENCES, length: int | None = None) -> Tensor:
    tok = load_tokenizer()
    if length is None:
        return tok(sentences, padding=True, return_tensors="pt")["input_ids"]
    return tok(sentences, padding="max_length", max_length=length, return_tensors="pt")["input_ids"]


def build(name: str, model: nn.Module, seed: int = 0, **over: Any) -> Explainer:
    """As the harness builds a method: its yaml through hydra.utils.instantiate."""
    params = {**SMALL.get(name, {}), **over}
    cfg = method_config(name, params.pop("output", "softmax"), **params)
    ctx = ExplainContext(modality="text", model_kind=model.kind, n_classes=2, seed=seed,
                         extras={"tokenizer": load_tokenizer()}, x_train=token_ids(TRAIN))
    return instantiate(cfg, model=model, context=ctx)


def allowed(name: str, kind: str) -> bool:
    return kind in METHODS[name].model_kinds


def case(name: str, kind: str) -> Any:
    marks = []
    if name == "shap_partition":
        marks.append(pytest.mark.slow)   # shap's partition explainer compiles numba kernels on first use
    return pytest.param(name, kind, marks=marks)


CASES = [case(n, k) for n in TEXT_METHODS for k in ("transformer", "recurrent") if allowed(n, k)]
DETERMINISTIC = [c for c in CASES if METHODS[c.values[0]].deterministic]


# -- every method: per-token, finite, zero off the features ---------------------------------


@pytest.mark.parametrize("name,kind", CASES)
def test_text_method_gives_one_finite_value_per_token_zero_off_features(models, name, kind):
    model = models[kind]
    ids = token_ids()
    values = build(name, model)(ids, TARGETS).values
    features = model.feature_mask(ids)
    assert values.shape == ids.shape and values.dtype.is_floating_point
    assert torch.isfinite(values).all()
    assert (values[~features] == 0).all()
    assert ((values != 0) & features).any(1).all()   # every sample gets something on its tokens


def test_text_methods_cover_the_issue_list():
    assert set(TEXT_METHODS) >= {"backtrace", "backtrace_contrastive", "attention_rollout", "attention_last", "lime",
                                 "shap_partition", "ig", "smoothgrad", "saliency", "gradxinput", "random"}


@pytest.mark.parametrize("name,kind", DETERMINISTIC)
def test_deterministic_text_methods_are_batch_invariant(models, name, kind):
    model = models[kind]
    ids = token_ids()
    together = build(name, model)(ids, TARGETS).values
    method = build(name, model)
    alone = torch.cat([method(ids[i:i + 1], TARGETS[i:i + 1]).values for i in range(len(ids))])
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-4 * float(together.abs().max()))


@pytest.mark.parametrize("name,kind", DETERMINISTIC)
def test_deterministic_text_methods_are_padding_invariant(models, name, kind):
    """The same sentences padded further: the same attributions on their tokens, zero on the pads."""
    model = models[kind]
    ids = token_ids()
    longer = token_ids(length=ids.shape[1] + 5)
    assert torch.equal(longer[:, :ids.shape[1]], ids)
    short = build(name, model)(ids, TARGETS).values
    long = build(name, model)(longer, TARGETS).values
    torch.testing.assert_close(long[:, :ids.shape[1]], short, rtol=1e-4, atol=1e-4 * float(short.abs().max()))
    assert (long[:, ids.shape[1]:] == 0).all()


def test_text_inputs_must_be_token_ids(models):
    method = build("saliency", models["transformer"])
    with pytest.raises(ValueError, match=r"^text inputs must be int64 token ids of shape \(N, L\); got dtype torch.float32"):
        method(token_ids().float(), TARGETS)


# -- attention rollout --------------------------------------------------------------------


class StubAttention(TextClassifier):
    """A 'transformer' whose attention probabilities are given: two layers, two heads, over
    [CLS] good movie [PAD], with some mass left on the pad column (which must be ignored)."""

    kind = "transformer"

    def __init__(self, pooling: str = "cls") -> None:
        spec = spec_kw()
        super().__init__(spec["pad_token_id"], spec["mask_token_id"], spec["special_token_ids"])
        self.pooling = pooling
        self.embedding = nn.Embedding(spec["vocab_size"], 2)
        layer1 = torch.tensor([
            [[0.4, 0.4, 0.0, 0.2], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.3, 0.3, 0.4, 0.0]],   # head a
            [[0.5, 0.0, 0.5, 0.0], [0.0, 0.8, 0.0, 0.2], [0.0, 0.0, 1.0, 0.0], [0.3, 0.3, 0.4, 0.0]],   # head b
        ])
        layer2 = torch.tensor([
            [[0.0, 0.9, 0.0, 0.1], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.3, 0.3, 0.4, 0.0]],
            [[0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5], [0.3, 0.3, 0.4, 0.0]],
        ])
        self.layers = (layer1.unsqueeze(0), layer2.unsqueeze(0))

    def embedding_layer(self) -> nn.Embedding:
        return self.embedding

    def attentions(self, input_ids: Tensor) -> tuple[Tensor, ...]:
        return tuple(a.expand(len(input_ids), -1, -1, -1) for a in self.layers)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.embedding(input_ids).sum(1)


STUB_IDS = torch.tensor([[101, 2204, 3185, 0]])   # [CLS] good movie [PAD]


def test_rollout_two_layers_by_hand():
    """Head means (pad column dropped, rows renormalised): A1 = [[.5,.25,.25],[0,1,0],[0,0,1]],
    A2 = [[0,1,0],[0,1,0],[0,0,1]]. With the residual, A1' = [[.75,.125,.125],[0,1,0],[0,0,1]],
    A2' = [[.5,.5,0],[0,1,0],[0,0,1]]; row 0 of A2' A1' = .5 * (.75,.125,.125) + .5 * (0,1,0)
    = (.375, .5625, .0625)."""
    stub = StubAttention()
    real = stub.attention_mask(STUB_IDS).bool()
    result = rollout(stub.attentions(STUB_IDS), real)[0]
    expected = torch.tensor([[0.375, 0.5625, 0.0625, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0] * 4])
    torch.testing.assert_close(result, expected)


@pytest.mark.parametrize("pooling,expected", [
    ("cls", [0.0, 0.5625, 0.0625, 0.0]),
    ("mean", [0.0, (0.5625 + 1.0) / 3, (0.0625 + 1.0) / 3, 0.0]),   # mean of the three real rows
])
def test_attention_rollout_reads_the_classifier_token(pooling, expected):
    stub = StubAttention(pooling)
    method = METHODS["attention_rollout"](stub, ExplainContext(modality="text", model_kind="transformer", n_classes=2))
    torch.testing.assert_close(method(STUB_IDS, torch.tensor([0])).values, torch.tensor([expected]))


def test_attention_last_is_the_last_layer_head_mean():
    """Layer 2's head mean, pad column dropped: row 0 = (0, 1, 0); [CLS] is not a feature."""
    stub = StubAttention()
    method = METHODS["attention_last"](stub, ExplainContext(modality="text", model_kind="transformer", n_classes=2))
    torch.testing.assert_close(method(STUB_IDS, torch.tensor([0])).values, torch.tensor([[0.0, 1.0, 0.0, 0.0]]))


def test_rollout_on_bert_matches_a_float64_loop(models):
    """The vectorised rollout against the definition, layer by layer, sample by sample."""
    model = models["transformer"]
    ids = token_ids()
    values = build("attention_rollout", model)(ids, TARGETS).values
    atts = model.attentions(ids)
    for i in range(len(ids)):
        n = int(model.attention_mask(ids[i:i + 1]).sum())
        r = torch.eye(n, dtype=torch.float64)
        for a in atts:
            a = a[i, :, :n, :n].double().mean(0) + torch.eye(n, dtype=torch.float64)
            r = (a / a.sum(-1, keepdim=True)) @ r
        want = r[0] * model.feature_mask(ids[i, :n]).double()
        torch.testing.assert_close(values[i, :n].double(), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["attention_rollout", "attention_last"])
def test_attention_methods_refuse_the_lstm(models, name):
    ctx = ExplainContext(modality="text", model_kind="recurrent", n_classes=2)
    with pytest.raises(IncompatibleMethodError,
                       match=rf"^method '{name}' does not support 'recurrent' models; it supports: transformer$"):
        METHODS[name](models["recurrent"], ctx)


# -- which token a method finds ---------------------------------------------------------------


class OneWordModel(TextClassifier):
    """Class 1's logit is 3 per occurrence of "good" (an embedding of width 1, zero elsewhere);
    class 0's is 0. The decisive token is known, wherever it sits."""

    kind = "recurrent"

    def __init__(self) -> None:
        spec = spec_kw()
        super().__init__(spec["pad_token_id"], spec["mask_token_id"], spec["special_token_ids"])
        self.embedding = nn.Embedding(spec["vocab_size"], 1)
        with torch.no_grad():
            self.embedding.weight.zero_()
            self.embedding.weight[load_tokenizer().convert_tokens_to_ids("good")] = 3.0

    def embedding_layer(self) -> nn.Embedding:
        return self.embedding

    def forward(self, input_ids: Tensor) -> Tensor:
        score = self.embedding(input_ids).squeeze(-1).sum(1, keepdim=True)
        return torch.cat([torch.zeros_like(score), score], 1)


@pytest.mark.parametrize("name,over", [
    ("lime", {}), ("lime", {"mask": "remove"}), ("ig", {}), ("ig", {"token_baseline": "pad"}),
    ("gradxinput", {}), ("smoothgrad", {}),
    pytest.param("shap_partition", {}, marks=pytest.mark.slow),
    pytest.param("shap_partition", {"mask": "remove"}, marks=pytest.mark.slow),
])
def test_text_method_finds_the_decisive_token(name, over):
    model = OneWordModel().eval()
    sentences = ["good but long and slow", "slow, long but good", "it was , frankly , good ."]
    ids = token_ids(sentences)
    good = load_tokenizer().convert_tokens_to_ids("good")
    values = build(name, model, **over)(ids, torch.ones(len(ids), dtype=torch.long)).values
    assert torch.equal(values.argmax(1), (ids == good).int().argmax(1))


def test_ig_text_is_complete(models):
    """Integrated Gradients at the embeddings sums to f(ids) - f(baseline ids) over the tokens."""
    model = models["transformer"]
    ids = token_ids()
    method = build("ig", model, n_steps=64, output="logits")
    values = method(ids, TARGETS).values.double()
    baseline = ids.masked_fill(model.feature_mask(ids), model.mask_token_id)
    with torch.no_grad():
        rows = torch.arange(len(ids))
        gap = (model(ids)[rows, TARGETS] - model(baseline)[rows, TARGETS]).double()
    torch.testing.assert_close(values.sum(1), gap, rtol=2e-2, atol=1e-4 * float(gap.abs().max()))


def test_smoothgrad_without_noise_is_gradient_times_embedding(models):
    """With stdevs 0 every noisy copy is the input: SmoothGrad x input is gradient x input, which
    checks that the noise tunnel keeps each copy with its own sentence's ids."""
    model = models["recurrent"]
    ids = token_ids()
    smooth = build("smoothgrad", model, stdevs=0.0, nt_samples=3, nt_samples_batch_size=2)(ids, TARGETS).values
    plain = build("gradxinput", model)(ids, TARGETS).values
    torch.testing.assert_close(smooth, plain, rtol=1e-4, atol=1e-6 * float(plain.abs().max()))


# -- helpers, declarations ------------------------------------------------------------------


def test_hide_tokens_by_hand():
    ids = torch.tensor([[101, 7, 8, 9, 102, 0]])
    keep = torch.tensor([[True, False, True, False, True, True]])
    assert hide_tokens(ids, keep, "mask_token", 103, 0).tolist() == [[101, 103, 8, 103, 102, 0]]
    assert hide_tokens(ids, keep, "remove", 103, 0).tolist() == [[101, 8, 102, 0, 0, 0]]
    with pytest.raises(ValueError, match=r"^unknown text mask 'blank'; valid choices: mask_token, remove$"):
        hide_tokens(ids, keep, "blank", 103, 0)


@pytest.mark.parametrize("name,declared", [
    ("ig", {"budget": {"n_steps": 8}, "absent": {"token_baseline": "mask"}, "reduction": {"hidden": "sum"}}),
    ("smoothgrad", {"budget": {"nt_samples": 4, "stdevs": 0.15}, "absent": {}, "reduction": {"hidden": "sum"}}),
    ("saliency", {"budget": {}, "absent": {}, "reduction": {"hidden": "sum"}}),
    ("gradxinput", {"budget": {}, "absent": {}, "reduction": {"hidden": "sum"}}),
    ("lime", {"budget": {"num_samples": 60}, "absent": {"mask": "mask_token"}}),
    ("shap_partition", {"budget": {"max_evals": 40}, "absent": {"mask": "mask_token"}}),
    ("attention_rollout", {"budget": {}, "absent": {}}),
])
def test_text_methods_declare_budget_and_absent_value(models, name, declared):
    assert build(name, models["transformer"]).declared() == declared


@pytest.mark.parametrize("name,key", [("lime", "mask"), ("shap_partition", "mask"), ("ig", "token_baseline")])
def test_bad_text_absent_value_is_one_line(models, name, key):
    with pytest.raises(Exception, match=rf"unknown {name} {key} 'blank'; valid choices: "):
        build(name, models["transformer"], **{key: "blank"})


def test_ig_internal_batch_size_below_the_batch_gives_no_warning(models, recwarn):
    ids = token_ids()
    build("ig", models["recurrent"], internal_batch_size=1)(ids, TARGETS)
    assert not [w for w in recwarn if "internal batch size" in str(w.message).lower()]


@pytest.mark.parametrize("name", ["attention_rollout", "attention_last"])
def test_attention_configs_build_their_class(models, name):
    assert type(build(name, models["transformer"])) is METHODS[name]


@pytest.mark.parametrize("name", ["lime", "smoothgrad", "random"])
def test_stochastic_text_methods_follow_the_run_seed(models, name):
    model = models["recurrent"]
    ids = token_ids()
    first = build(name, model, seed=3)(ids, TARGETS).values
    again = build(name, model, seed=3)(ids, TARGETS).values
    other = build(name, model, seed=4)(ids, TARGETS).values
    assert torch.equal(first, again) and not torch.equal(first, other)


# -- the rarity control ---------------------------------------------------------------------------

def test_rarity_is_each_tokens_surprisal_under_the_training_frequencies(models):
    tok = load_tokenizer()
    train = token_ids(TRAIN)
    features = models["transformer"].feature_mask(train)
    counted = train[features].tolist()
    total = len(counted)
    method = build("rarity", models["transformer"])
    ids = token_ids(["the good plot", "zebra"])
    values = method(ids, torch.tensor([0, 1])).values.double()
    for word in ("the", "good", "plot"):
        i = int((ids[0] == tok.convert_tokens_to_ids(word)).int().argmax())
        expected = np.log(total + 1) - np.log(counted.count(tok.convert_tokens_to_ids(word)) + 1)
        assert values[0, i].item() == pytest.approx(expected, rel=1e-6), word
    # "the" is commoner than "plot" in training: less surprising
    assert values[0, 1] < values[0, 3]
    # a word never seen in training is the rarest possible; special tokens and padding get 0
    assert values[1, 1].item() == pytest.approx(np.log(total + 1), rel=1e-6)
    assert (values[~models["transformer"].feature_mask(ids)] == 0).all()
    # the same map whatever the model, the target or the batch: it reads no output
    lstm = build("rarity", models["recurrent"])(ids, torch.tensor([1, 0])).values.double()
    assert torch.equal(values, lstm)
    assert not method.signed and not method.reads_output and method.deterministic


def test_rarity_needs_the_training_ids(models):
    ctx = ExplainContext(modality="text", model_kind="transformer", n_classes=2)
    with pytest.raises(ValueError, match=r"^method 'rarity' counts tokens of the training split: it needs the training "
                                         r"token ids \(ExplainContext.x_train\); none were given$"):
        METHODS["rarity"](models["transformer"], ctx)


def test_methods_that_read_no_output_say_so():
    assert {n for n, cls in METHODS.items() if not cls.reads_output} == {
        "attention_rollout", "attention_last", "random", "rarity", "sobel"}
