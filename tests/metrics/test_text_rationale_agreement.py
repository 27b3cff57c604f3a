"""Agreement with a rationale and the class-sensitivity check, worked out by hand: every method is
scored on magnitudes |a| there, R-precision (k = the rationale's size) differs from ERASER's hard
token F1 (k from a fixed fraction of the tokens), and average precision from the trapezoid area
under the precision-recall curve (ERASER's auprc)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from baselines.base import ExplainContext, Explainer
from experiments.zoo.text_models import TextClassifier
from metrics.text import (TextClassSensitivity, TextRandomisation, TokenAUPRCTrapezoid, TokenAveragePrecision,
                          TokenHardF1, TokenRPrecision, trapezoid_pr_auc)

PAD, CLS, SEP, MASK = 0, 1, 2, 3
# logit_c = sum of W[c][id] over the real tokens; words are ids 4..9
W = torch.tensor([[0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 4.0, 3.0, 0.0, 0.0],
                  [0.0, 5.0, -3.0, 0.5, 1.0, 4.0, 2.0, 3.0, -1.0, 0.0]])


class BagOfWords(TextClassifier):
    kind = "bow"

    def __init__(self) -> None:
        super().__init__(PAD, MASK, [PAD, CLS, SEP, MASK])
        self.weight = torch.nn.Parameter(W.T.contiguous())

    def forward(self, input_ids):
        real = self.attention_mask(input_ids).unsqueeze(-1).float()
        return (self.weight[input_ids] * real).sum(1)


class Difference(Explainer):
    """A signed map: W[target][id] - W[other][id] per feature token, so the other class's map is
    this one negated (what gradient x input gives on a two-class softmax)."""

    name = "difference"
    model_kinds = ("bow",)

    def explain(self, inputs, targets):
        w = self.model.weight.detach()
        return (w[inputs, targets[:, None]] - w[inputs, 1 - targets[:, None]]) * self.model.feature_mask(inputs)


def bow() -> BagOfWords:
    return BagOfWords().eval()


def row(*values: float) -> torch.Tensor:
    return torch.tensor([list(values)])


Y = torch.tensor([1])
# [CLS] then ten feature tokens then [SEP]; the rationale is positions 1, 2 and 3
IDS = torch.tensor([[CLS, 4, 5, 6, 7, 8, 9, 4, 5, 6, 7, SEP]])
GT = torch.tensor([[0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]])
# magnitudes rank position 4 (10), 1 (9), 3 (8), 10 (7), 9 (6), 8, 7, 6, 5, 2 (1); [CLS]/[SEP] never count
A = row(99.0, 9.0, 1.0, 8.0, 10.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 99.0)
SHORT = torch.tensor([[CLS, 4, 5, 6, 7, SEP]])     # four feature tokens


# -- magnitudes ------------------------------------------------------------------------------------

def test_a_signed_map_is_scored_on_its_magnitudes():
    ids, gt = SHORT, torch.tensor([[0, 0, 1, 1, 0, 0]])
    signed = row(0.0, 1.0, -4.0, 3.0, 0.5, 0.0)
    # by |a|: token 2 (4), token 3 (3), 1, 4: both rationale tokens first. As given, token 2
    # (-4) would rank last: AP (1 + 2/4) / 2 = 0.75 and R-precision 1/2.
    assert average_precision_score([0, 1, 1, 0], [1.0, -4.0, 3.0, 0.5]) == pytest.approx(0.75)
    for metric in (TokenAveragePrecision(), TokenAUPRCTrapezoid(), TokenRPrecision(), TokenHardF1(fraction=0.5)):
        np.testing.assert_allclose(metric(bow(), ids, Y, signed, ground_truth=gt), [1.0], err_msg=metric.info.name)
        np.testing.assert_allclose(metric(bow(), ids, Y, -signed, ground_truth=gt), [1.0], err_msg=metric.info.name)
        assert metric.info.attributions == "absolute"


def test_class_sensitivity_compares_magnitudes_so_a_map_that_only_flips_sign_scores_one():
    explainer = Difference(bow(), ExplainContext(modality="text", model_kind="bow", n_classes=2))
    ids = SHORT
    a = explainer(ids, Y).values    # over 4, 5, 6, 7: -1, 3, -2, 0; the other class's map: 1, -3, 2, 0
    np.testing.assert_allclose(a[0, 1:5], [-1.0, 3.0, -2.0, 0.0])
    # signed, the two maps would correlate at -1; their magnitudes are the same map: +1
    np.testing.assert_allclose(TextClassSensitivity()(explainer.model, ids, Y, a, explainer=explainer), [1.0])
    assert TextClassSensitivity.info.attributions == "absolute" == TextRandomisation.info.attributions


def test_the_maps_option_is_gone_and_refused_in_one_line():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['maps'\] for metric 'text_class_sensitivity'; "
                                         r"valid: .*max_samples"):
        TextClassSensitivity(maps="given")


# -- R-precision and ERASER's hard token F1 ---------------------------------------------------------

def test_r_precision_takes_k_from_the_gold_rationale():
    # k = 3: positions 4, 1, 3 -> two hits
    np.testing.assert_allclose(TokenRPrecision()(bow(), IDS, Y, A, ground_truth=GT), [2 / 3])
    # a fourth rationale token (position 5) makes k = 4: positions 4, 1, 3, 10 -> still two hits
    gt4 = GT.clone()
    gt4[0, 5] = 1
    np.testing.assert_allclose(TokenRPrecision()(bow(), IDS, Y, A, ground_truth=gt4), [2 / 4])


def test_hard_f1_takes_k_from_a_fixed_fraction_of_the_tokens():
    # fraction 0.2 of 10 tokens: k = 2, positions 4 and 1: one hit; P = 1/2, R = 1/3, F1 = 2PR/(P+R) = 0.4
    np.testing.assert_allclose(TokenHardF1(fraction=0.2)(bow(), IDS, Y, A, ground_truth=GT), [0.4])
    # fraction 0.5: k = 5, positions 4, 1, 3, 10, 9: two hits; P = 2/5, R = 2/3, F1 = 0.5
    np.testing.assert_allclose(TokenHardF1(fraction=0.5)(bow(), IDS, Y, A, ground_truth=GT), [0.5])
    # the selection does not read the rationale: a larger rationale keeps k = 2 and the one hit;
    # P = 1/2, R = 1/4, F1 = 1/3
    gt4 = GT.clone()
    gt4[0, 5] = 1
    np.testing.assert_allclose(TokenHardF1(fraction=0.2)(bow(), IDS, Y, A, ground_truth=gt4), [1 / 3])
    # no hit: F1 = 0 (k = ceil(0.05 x 10) = 1: position 4); no rationale: NaN
    np.testing.assert_allclose(TokenHardF1(fraction=0.05)(bow(), IDS, Y, A, ground_truth=GT * 0 + GT), [0.0])
    assert np.isnan(TokenHardF1()(bow(), IDS, Y, A, ground_truth=GT * 0)[0])
    assert TokenHardF1().params["fraction"] == 0.1


def test_hard_f1_counts_its_tokens_in_exact_arithmetic():
    # 100 feature tokens, rationale the first 7; |a| falls along the sentence. fraction 0.07 selects
    # ceil(0.07 x 100) = 7 tokens (100 * 0.07 is 7.000000000000001 in floats, whose ceiling is 8):
    # all seven hits, F1 = 1
    ids = torch.tensor([[CLS] + [4] * 100 + [SEP]])
    gt = torch.zeros_like(ids)
    gt[0, 1:8] = 1
    a = torch.cat([torch.zeros(1), torch.arange(100, 0, -1).float(), torch.zeros(1)])[None]
    np.testing.assert_allclose(TokenHardF1(fraction=0.07)(bow(), ids, Y, a, ground_truth=gt), [1.0])


@pytest.mark.parametrize("bad", [0, 1.5, -0.1, True, "a tenth"])
def test_a_bad_fraction_is_refused_in_one_line(bad):
    with pytest.raises(ValueError, match=r"bad fraction .* for metric 'token_hard_f1'; use a number in \(0, 1\]"):
        TokenHardF1(fraction=bad)


# -- average precision and the trapezoid area -----------------------------------------------------

def test_average_precision_and_the_trapezoid_area_by_hand():
    ids, gt = SHORT, torch.tensor([[0, 1, 0, 1, 0, 0]])
    a = row(0.0, 4.0, 3.0, 2.0, 1.0, 0.0)     # ranking: hit, miss, hit, miss
    # AP: precision at each hit, 1 and 2/3: 5/6
    np.testing.assert_allclose(TokenAveragePrecision()(bow(), ids, Y, a, ground_truth=gt), [5 / 6])
    # the curve's points (recall, precision): (0, 1), (1/2, 1), (1/2, 1/2), (1, 2/3); trapezoids:
    # 1/2 x 1 + 0 + 1/2 x (1/2 + 2/3) / 2 = 19/24
    np.testing.assert_allclose(TokenAUPRCTrapezoid()(bow(), ids, Y, a, ground_truth=gt), [19 / 24])
    # all scores tied: AP is the rationale's share (1/2), the trapezoid from (0, 1) to (1, 1/2) is 3/4
    flat = row(0.0, 1.0, 1.0, 1.0, 1.0, 0.0)
    np.testing.assert_allclose(TokenAveragePrecision()(bow(), ids, Y, flat, ground_truth=gt), [0.5])
    np.testing.assert_allclose(TokenAUPRCTrapezoid()(bow(), ids, Y, flat, ground_truth=gt), [0.75])
    assert trapezoid_pr_auc(np.array([1, 0, 1, 0]), np.array([4.0, 3.0, 2.0, 1.0])) == pytest.approx(19 / 24)


@pytest.mark.parametrize("old,new", [("token_f1", "token_r_precision"), ("token_auprc", "token_average_precision")])
def test_an_old_metric_name_is_refused_with_its_new_names(old, new):
    from experiments.run.config import ConfigError, check_choice, group_options

    with pytest.raises(ConfigError, match=rf"^metric '{old}' was renamed: use {new} .*; valid choices: .*token_hard_f1"):
        check_choice("metric", old, group_options("metric"))
