"""The text metric set on a bag-of-words model whose logits are a sum of per-id weights, so every
score can be worked out by hand; then the same metrics on the real text classifiers (random
init) for padding and batch invariance and for the randomisation of the top layers."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from baselines.base import ExplainContext, Explainer
from experiments.zoo.text_models import BertClassifier, LSTMClassifier, TextClassifier
from metrics.text import (
    TEXT_METRICS, TextClassSensitivity, TextComprehensiveness, TextLeRFAUC, TextMoRFAUC, TextRandomisation,
    TextSufficiency, TokenAveragePrecision, TokenRPrecision, bin_sizes, delete_tokens, randomised_copy, top_layers,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread beats two contended ones

PAD, CLS, SEP, MASK = 0, 1, 2, 3
# Per-id weights of class 1's and class 0's logit. [CLS] weighs 5 and [SEP] -3: deleting either
# would show. [MASK] weighs 0.5, so masking a token differs from removing it. Words are ids 4..9.
W1 = [0.0, 5.0, -3.0, 0.5, 1.0, 4.0, 2.0, 3.0, -1.0, 0.0]
W0 = [0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 4.0, 3.0, 0.0, 0.0]
RANDOMISED_W1 = [0.0, 5.0, -3.0, 0.5, 4.0, 3.0, 2.0, 1.0, 0.0, 0.0]


class Table(nn.Module):
    """The per-id weights; its "re-initialisation" writes a known table, so the randomisation
    check can be worked out by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([W0, W1]).T.contiguous())

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight[:, 1] = torch.tensor(RANDOMISED_W1)


class BagOfWords(TextClassifier):
    """logit_c = sum of W_c[id] over the real tokens (padding contributes nothing)."""

    kind = "bow"

    def __init__(self) -> None:
        super().__init__(PAD, MASK, [PAD, CLS, SEP, MASK])
        self.table = Table()

    def top_layers(self) -> list[str]:
        return ["table"]

    def forward(self, input_ids):
        real = self.attention_mask(input_ids).unsqueeze(-1).float()
        return (self.table.weight[input_ids] * real).sum(1)


class ExactContributions(Explainer):
    """Each feature token's contribution W_target[id] to the target logit (0 on special tokens)."""

    name = "exact_contributions"
    model_kinds = ("bow",)

    def explain(self, inputs, targets):
        w = self.model.table.weight.detach()[inputs, targets[:, None]]
        return w * self.model.feature_mask(inputs)


class Occlusion(Explainer):
    """Target logit drop when one feature token is masked, for the real text classifiers."""

    name = "occlusion"

    def explain(self, inputs, targets):
        n, length = inputs.shape
        eye = torch.eye(length, dtype=torch.bool)
        masked = torch.where(eye[None], self.model.mask_token_id, inputs[:, None, :]).reshape(-1, length)
        with torch.no_grad():
            full = self.model(inputs).gather(1, targets[:, None])
            part = self.model(masked).gather(1, targets.repeat_interleave(length)[:, None]).reshape(n, length)
        return (full - part) * self.model.feature_mask(inputs)


def bow() -> BagOfWords:
    return BagOfWords().eval()


def context(kind: str = "bow", n_classes: int = 2) -> ExplainContext:
    return ExplainContext(modality="text", model_kind=kind, n_classes=n_classes)


# Sample 0: [CLS] 4 5 6 7 [SEP] pad pad -> class-1 logit 5 + (1 + 4 + 2 + 3) - 3 = 12.
IDS = torch.tensor([[CLS, 4, 5, 6, 7, SEP, PAD, PAD]])
# The exact contributions, with a huge attribution on [CLS] and [SEP] that must be ignored.
A = torch.tensor([[100.0, 1.0, 4.0, 2.0, 3.0, 50.0, 0.0, 0.0]])
Y = torch.tensor([1])


def padded(ids: torch.Tensor, a: torch.Tensor, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.nn.functional.pad(ids, (0, extra), value=PAD), torch.nn.functional.pad(a, (0, extra)))


# -- helpers ---------------------------------------------------------------------------------

def test_bins_round_up_with_at_least_one_token_in_exact_arithmetic():
    sizes = bin_sizes([1, 5, 10, 20, 50], torch.tensor([4, 30, 1, 0]))
    # 10 % of 30 is 3 (0.1 * 30 in floats is 3.0000000000000004, whose ceiling would be 4)
    assert sizes.tolist() == [[1, 1, 1, 1, 2], [1, 2, 3, 6, 15], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]


def test_deletion_by_mask_and_by_removal():
    ids = torch.tensor([[CLS, 4, 5, 6, SEP, PAD]])
    drop = torch.tensor([[False, True, False, True, False, False]])
    assert delete_tokens(ids, drop, "mask", MASK, PAD).tolist() == [[CLS, MASK, 5, MASK, SEP, PAD]]
    assert delete_tokens(ids, drop, "remove", MASK, PAD).tolist() == [[CLS, 5, SEP, PAD, PAD, PAD]]
    with pytest.raises(ValueError, match="unknown deletion 'drop'; valid choices: mask, remove"):
        delete_tokens(ids, drop, "drop", MASK, PAD)


# -- ERASER ------------------------------------------------------------------------------------

def test_comprehensiveness_by_hand_with_mask_and_with_removal():
    # top 25 %: token 5 (weight 4); top 50 %: tokens 5 and 7 (4 + 3). A [MASK] adds 0.5 back.
    metric = TextComprehensiveness(output="logits", percentages=[25, 50])
    np.testing.assert_allclose(metric(bow(), IDS, Y, A), [(3.5 + 6.0) / 2])
    np.testing.assert_allclose(metric.last_bins, [[3.5, 6.0]])
    assert metric.describe()["per_bin"] == {"25": 3.5, "50": 6.0}
    removed = TextComprehensiveness(output="logits", percentages=[25, 50], deletion="remove")
    np.testing.assert_allclose(removed(bow(), IDS, Y, A), [(4.0 + 7.0) / 2])


def test_comprehensiveness_default_bins_on_four_tokens():
    # k = ceil(p/100 * 4) = 1, 1, 1, 1, 2: AOPC = (4 * 3.5 + 6) / 5
    np.testing.assert_allclose(TextComprehensiveness(output="logits")(bow(), IDS, Y, A), [4.0])


def test_comprehensiveness_on_softmax_reads_the_target_probability():
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731  class 0's logit is 1 + 4 + 2 + 3 = 10 here
    metric = TextComprehensiveness(percentages=[25])  # output: softmax by default
    # masking token 5 moves the class-1 logit 12 -> 8.5 and the class-0 logit 10 -> 9
    expected = sig(12 - 10) - sig(8.5 - 9)
    np.testing.assert_allclose(metric(bow(), IDS, Y, A), [expected], rtol=1e-6)  # a float32 model


def test_sufficiency_by_hand_with_mask_and_with_removal():
    # keep 5: delete 4, 6, 7 (1 + 2 + 3 = 6), three masks add 1.5; keep 5, 7: delete 4, 6 (3), +1.
    metric = TextSufficiency(output="logits", percentages=[25, 50])
    np.testing.assert_allclose(metric(bow(), IDS, Y, A), [(4.5 + 2.0) / 2])
    removed = TextSufficiency(output="logits", percentages=[25, 50], deletion="remove")
    np.testing.assert_allclose(removed(bow(), IDS, Y, A), [(6.0 + 3.0) / 2])
    # keeping every feature token deletes nothing
    np.testing.assert_allclose(TextSufficiency(output="logits", percentages=[100])(bow(), IDS, Y, A), [0.0])


# -- deletion curves ---------------------------------------------------------------------------

def test_morf_and_lerf_by_hand():
    # MoRF deletes 5, 7, 6, 4: curve 12, 8.5, 6, 4.5, 4 over x = 0, 1/4, ..., 1
    np.testing.assert_allclose(TextMoRFAUC(output="logits")(bow(), IDS, Y, A),
                               [0.25 * (10.25 + 7.25 + 5.25 + 4.25)])
    # LeRF deletes 4, 6, 7, 5: curve 12, 11.5, 10, 7.5, 4
    np.testing.assert_allclose(TextLeRFAUC(output="logits")(bow(), IDS, Y, A),
                               [0.25 * (11.75 + 10.75 + 8.75 + 5.75)])
    # removal: curve 12, 8, 5, 3, 2
    np.testing.assert_allclose(TextMoRFAUC(output="logits", deletion="remove")(bow(), IDS, Y, A),
                               [0.25 * (10.0 + 6.5 + 4.0 + 2.5)])


def test_curves_read_at_fewer_steps():
    # steps=2 on 4 tokens: after 0, 2 and 4 deletions; MoRF curve 12, 6, 4 over x = 0, 1/2, 1
    np.testing.assert_allclose(TextMoRFAUC(output="logits", steps=2)(bow(), IDS, Y, A),
                               [0.5 * ((12 + 6) / 2 + (6 + 4) / 2)])
    # steps=3: round(4/3) = 1, round(8/3) = 3 -> after 0, 1, 3, 4 deletions: 12, 8.5, 4.5, 4
    np.testing.assert_allclose(TextMoRFAUC(output="logits", steps=3)(bow(), IDS, Y, A),
                               [0.25 * (12 + 8.5) / 2 + 0.5 * (8.5 + 4.5) / 2 + 0.25 * (4.5 + 4) / 2])
    # as many steps as tokens or more: every token
    exact = TextMoRFAUC(output="logits")(bow(), IDS, Y, A)
    np.testing.assert_allclose(TextMoRFAUC(output="logits", steps=4)(bow(), IDS, Y, A), exact)
    np.testing.assert_allclose(TextMoRFAUC(output="logits", steps=10)(bow(), IDS, Y, A), exact)
    with pytest.raises(ValueError, match="bad steps 0"):
        TextLeRFAUC(steps=0)


def test_curves_of_samples_with_different_lengths_in_one_batch():
    ids = torch.tensor([[CLS, 4, 5, 6, 7, SEP, PAD], [CLS, 5, 8, SEP, PAD, PAD, PAD]])
    a = torch.tensor([[0, 1, 4, 2, 3, 0, 0], [0, 4, -1, 0, 0, 0, 0]], dtype=torch.float)
    scores = TextMoRFAUC(output="logits")(bow(), ids, torch.tensor([1, 1]), a)
    # sample 1: logit 5 + 4 - 1 - 3 = 5; delete 5 -> 1.5; delete 8 -> 3; x = 0, 1/2, 1
    np.testing.assert_allclose(scores, [6.75, 0.5 * ((5 + 1.5) / 2 + (1.5 + 3) / 2)])
    # steps=2: sample 0 after 0, 2, 4 deletions (12, 6, 4); sample 1 (two tokens) after every one
    scores = TextMoRFAUC(output="logits", steps=2)(bow(), ids, torch.tensor([1, 1]), a)
    np.testing.assert_allclose(scores, [0.5 * (9 + 5), 0.5 * ((5 + 1.5) / 2 + (1.5 + 3) / 2)])


# -- special tokens, padding, NaN ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["text_comprehensiveness", "text_sufficiency", "text_morf_auc", "text_lerf_auc"])
@pytest.mark.parametrize("deletion", ["mask", "remove"])
def test_padding_does_not_change_a_score_and_special_tokens_are_never_deleted(name, deletion):
    metric = TEXT_METRICS[name](output="logits", deletion=deletion)
    base = metric(bow(), IDS, Y, A)
    more_ids, more_a = padded(IDS, A, 5)
    np.testing.assert_allclose(metric(bow(), more_ids, Y, more_a), base)
    # the attributions of special and pad tokens do not matter (A already ranks [CLS] and [SEP]
    # first: were they deletable, the hand-computed values above would not hold)
    other = A.clone()
    other[0, [0, 5, 6, 7]] = torch.tensor([-7.0, 99.0, 1e3, -1e3])
    np.testing.assert_allclose(metric(bow(), IDS, Y, other), base)


def test_a_sample_without_feature_tokens_scores_nan():
    ids = torch.tensor([[CLS, 4, 5, SEP], [CLS, SEP, PAD, PAD]])
    a = torch.tensor([[0, 1.0, 2.0, 0], [0, 0, 0, 0]])
    y = torch.tensor([1, 1])
    for name in ("text_comprehensiveness", "text_sufficiency", "text_morf_auc", "text_lerf_auc"):
        scores = TEXT_METRICS[name](output="logits")(bow(), ids, y, a)
        assert np.isfinite(scores[0]) and np.isnan(scores[1]), name


def test_ties_are_broken_by_position():
    flat = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    # MoRF with all ties deletes in position order: 4, 5, 6, 7 -> curve 12, 11.5, 8, 6.5, 4
    np.testing.assert_allclose(TextMoRFAUC(output="logits")(bow(), IDS, Y, flat),
                               [0.25 * (11.75 + 9.75 + 7.25 + 5.25)])


class Counting(BagOfWords):
    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def forward(self, input_ids):
        self.rows += len(input_ids)
        return super().forward(input_ids)


def test_each_distinct_sequence_is_run_once_and_a_run_memo_is_shared_across_metrics():
    model = Counting().eval()
    # the bins 1, 5, 10, 20 % all delete one token: the unperturbed sentence and two distinct ones
    np.testing.assert_allclose(TextComprehensiveness(output="logits")(model, IDS, Y, A), [4.0])
    assert model.rows == 3
    explainer = ExactContributions(model, context())
    explainer.memo = {}
    model.rows = 0
    morf = TextMoRFAUC(output="logits")(model, IDS, Y, A, explainer=explainer)
    assert model.rows == 5
    comprehensiveness = TextComprehensiveness(output="logits")(model, IDS, Y, A, explainer=explainer)
    assert model.rows == 5  # MoRF's steps 0, 1, 2 are the unperturbed sentence and both bins
    more_ids, more_a = padded(IDS, A, 3)
    TextLeRFAUC(output="logits")(model, more_ids, Y, more_a, explainer=explainer)
    assert model.rows == 8  # LeRF shares MoRF's first and last step, whatever the padding
    np.testing.assert_allclose(morf, [6.75])
    np.testing.assert_allclose(comprehensiveness, [4.0])


# -- agreement with the rationale ---------------------------------------------------------------

GT = torch.tensor([[1, 0, 1, 1, 0, 1, 0, 0],    # tokens 5 and 6 (and [CLS], [SEP]: ignored)
                   [1, 0, 0, 0, 0, 1, 0, 0]])   # no rationale on a feature token


def test_token_average_precision_by_hand():
    ids, a = IDS.repeat(2, 1), A.repeat(2, 1)
    scores = TokenAveragePrecision()(bow(), ids, Y.repeat(2), a, ground_truth=GT)
    # ranking 5 (hit), 7, 6 (hit), 4: AP = (1 + 2/3) / 2
    np.testing.assert_allclose(scores[0], 5 / 6)
    assert np.isnan(scores[1])


def test_token_r_precision_by_hand():
    ids, a = IDS.repeat(2, 1), A.repeat(2, 1)
    scores = TokenRPrecision()(bow(), ids, Y.repeat(2), a, ground_truth=GT)
    np.testing.assert_allclose(scores[0], 0.5)  # k = 2: picks 5 and 7, one hit
    assert np.isnan(scores[1])
    perfect = torch.tensor([[0, 0, 5.0, 4.0, 0, 0, 0, 0]])
    np.testing.assert_allclose(TokenRPrecision()(bow(), IDS, Y, perfect, ground_truth=GT[:1]), [1.0])


def test_rationale_metrics_need_a_ground_truth():
    with pytest.raises(ValueError, match="needs ground_truth"):
        TokenAveragePrecision()(bow(), IDS, Y, A)
    with pytest.raises(ValueError, match="does not match the ids"):
        TokenRPrecision()(bow(), IDS, Y, A, ground_truth=GT)


# -- class sensitivity and randomisation ---------------------------------------------------------

def test_class_sensitivity_by_hand():
    explainer = ExactContributions(bow(), context())
    # class-1 map over 4, 5, 6, 7: 1, 4, 2, 3; class-0 map: 2, 1, 4, 3 -> rank differences
    # -1, 3, -2, 0: rho = 1 - 6 * 14 / (4 * 15) = -0.4
    score = TextClassSensitivity()(explainer.model, IDS, Y, A, explainer=explainer)
    np.testing.assert_allclose(score, [-0.4])


class Recording(ExactContributions):
    calls: list = []

    def explain(self, inputs, targets):
        Recording.calls.append(targets.tolist())
        return super().explain(inputs, targets.clamp(max=1))  # the table has two classes


class ThreeClasses(BagOfWords):
    def forward(self, input_ids):
        two = super().forward(input_ids)
        return torch.cat([two, torch.full_like(two[:, :1], 100.0)], dim=1)  # class 2 is the most probable


def test_class_sensitivity_explains_the_most_probable_other_class():
    model = ThreeClasses().eval()
    Recording.calls = []
    explainer = Recording(model, context(n_classes=3))
    TextClassSensitivity()(model, IDS, torch.tensor([0]), A, explainer=explainer)
    assert Recording.calls == [[2]]


def test_randomisation_by_hand_leaves_the_model_and_the_generators_alone():
    model = bow()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explainer = ExactContributions(model, context())
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    # |map| over 4, 5, 6, 7: 1, 4, 2, 3 before and 4, 3, 2, 1 after: differences -3, 1, 0, 2 -> -0.4
    score = TextRandomisation()(model, IDS, Y, A, explainer=explainer)
    np.testing.assert_allclose(score, [-0.4])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == py_state
    assert all(np.array_equal(u, v) for u, v in zip(np.random.get_state(), np_state))
    assert explainer.model is model


def test_a_map_that_ignores_the_model_is_not_class_or_parameter_sensitive():
    class Positions(ExactContributions):
        def explain(self, inputs, targets):
            return torch.arange(inputs.shape[1], dtype=torch.float).expand(inputs.shape) * self.model.feature_mask(inputs)

    explainer = Positions(bow(), context())
    a = explainer(IDS, Y).values
    assert TextClassSensitivity()(explainer.model, IDS, Y, a, explainer=explainer).tolist() == [1.0]
    assert TextRandomisation()(explainer.model, IDS, Y, a, explainer=explainer).tolist() == [1.0]


def test_constant_maps_correlate_to_nan():
    explainer = ExactContributions(bow(), context())
    flat = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    assert np.isnan(TextClassSensitivity()(explainer.model, IDS, Y, flat, explainer=explainer)[0])


def test_re_explaining_metrics_need_an_explainer():
    with pytest.raises(ValueError, match="re-runs the explainer"):
        TextRandomisation()(bow(), IDS, Y, A)


# -- parameters, directions, bad input ------------------------------------------------------------

def test_directions_are_data():
    got = {name: cls().describe()["direction"] for name, cls in TEXT_METRICS.items()}
    assert got == {"text_comprehensiveness": "higher", "text_sufficiency": "lower", "text_morf_auc": "lower",
                   "text_lerf_auc": "higher", "token_average_precision": "higher",
                   "token_auprc_trapezoid": "higher", "token_r_precision": "higher", "token_hard_f1": "higher",
                   "text_class_sensitivity": "lower", "text_randomisation": "lower"}


def test_bad_parameters_and_inputs_are_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown deletion 'blank'; valid choices: mask, remove"):
        TextMoRFAUC(deletion="blank")
    with pytest.raises(ValueError, match="unknown output 'probability'; valid choices: softmax, logits"):
        TextMoRFAUC(output="probability")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['ks'\]"):
        TextComprehensiveness(ks=[1])
    with pytest.raises(ValueError, match="bad percentages"):
        TextComprehensiveness(percentages=[0])
    with pytest.raises(ValueError, match="takes token ids"):
        TextMoRFAUC()(bow(), IDS.float(), Y, A)
    with pytest.raises(ValueError, match="non-finite"):
        TextMoRFAUC()(bow(), IDS, Y, A * float("nan"))
    with pytest.raises(ValueError, match="2 targets for 1 samples"):
        TextMoRFAUC()(bow(), IDS, Y.repeat(2), A)


# -- the real text classifiers --------------------------------------------------------------------

SPEC = {"vocab_size": 40, "pad_token_id": PAD, "mask_token_id": MASK, "special_token_ids": [PAD, CLS, SEP, MASK]}


def real_models() -> list[TextClassifier]:
    torch.manual_seed(0)
    return [BertClassifier(2, **SPEC, hidden=16, layers=2, heads=2, intermediate=32, max_positions=32).eval(),
            LSTMClassifier(2, **SPEC, embedding_dim=8, hidden=8).eval()]


def real_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    lengths = [9, 5, 7, 3]
    ids = torch.full((len(lengths), 10), PAD)
    for i, n in enumerate(lengths):
        ids[i, 0], ids[i, n - 1] = CLS, SEP
        ids[i, 1:n - 1] = torch.randint(4, 40, (n - 2,), generator=gen)
    a = torch.randn(ids.shape, generator=gen) * (ids > SEP)
    return ids, torch.tensor([0, 1, 1, 0]), a


@pytest.mark.parametrize("model", real_models(), ids=["bert", "lstm"])
def test_real_models_scores_are_padding_and_batch_invariant(model):
    ids, y, a = real_batch()
    for name, deletion in (("text_comprehensiveness", "mask"), ("text_sufficiency", "remove"),
                           ("text_morf_auc", "remove"), ("text_lerf_auc", "mask")):
        metric = TEXT_METRICS[name](deletion=deletion, chunk_size=7)
        together = metric(model, ids, y, a)
        assert np.isfinite(together).all()
        extra_ids, extra_a = padded(ids, a, 6)
        np.testing.assert_allclose(metric(model, extra_ids, y, extra_a), together, atol=1e-6)
        # the longest sentence alone, the others without it (the batch's width changes)
        apart = np.concatenate([metric(model, ids[:1], y[:1], a[:1]), metric(model, ids[1:], y[1:], a[1:])])
        np.testing.assert_allclose(apart, together, atol=1e-6)


@pytest.mark.parametrize("model", real_models(), ids=["bert", "lstm"])
def test_mask_and_removal_differ_on_an_order_dependent_model(model):
    ids, y, a = real_batch()
    masked = TextMoRFAUC(deletion="mask")(model, ids, y, a)
    removed = TextMoRFAUC(deletion="remove")(model, ids, y, a)
    assert not np.allclose(masked, removed)


def test_top_layers_of_the_real_classifiers():
    bert, lstm = real_models()
    assert list(top_layers(bert)) == ["head", "encoder.encoder.layer.1"]
    assert list(top_layers(lstm)) == ["head", "lstm"]
    with pytest.raises(ValueError, match="no top layers known for Linear"):
        top_layers(nn.Linear(2, 2))


@pytest.mark.parametrize("model", real_models(), ids=["bert", "lstm"])
def test_randomised_copy_changes_only_the_top_layers_of_a_copy(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone, names = randomised_copy(model, seed=3)
    again, _ = randomised_copy(model, seed=3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for key, value in clone.state_dict().items():
        top = any(key.startswith(n + ".") for n in names)
        if top and value.dtype.is_floating_point and value.numel() > 1 and "LayerNorm" not in key:
            assert not torch.equal(value, before[key]), key
        elif not top:
            assert torch.equal(value, before[key]), key
        assert torch.equal(value, again.state_dict()[key]), key  # deterministic from the seed


@pytest.mark.parametrize("model", real_models(), ids=["bert", "lstm"])
def test_re_explaining_metrics_on_the_real_classifiers(model):
    ids, y, _ = real_batch()
    kind = "transformer" if isinstance(model, BertClassifier) else "recurrent"
    explainer = Occlusion(model, context(kind))
    explainer.memo = {}
    a = explainer(ids, y).values
    for metric in (TextClassSensitivity(), TextRandomisation(seed=1)):
        scores = metric(model, ids, y, a, explainer=explainer)
        assert scores.shape == (4,) and np.all(np.abs(scores[np.isfinite(scores)]) <= 1 + 1e-12)
        assert np.isfinite(scores[[0, 2]]).all()  # 7 and 5 feature tokens: a correlation exists
    assert TextRandomisation(seed=1).describe()["params"]["seed"] == 1
