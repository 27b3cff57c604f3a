"""The generation metrics on a bag-of-words "decoder" whose next-token logits are a sum of per-id
weights, so every score is worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.zoo.text_models import TextClassifier
from metrics.generation import GENERATION_METRICS, MoRFLeRFArea, SourceAP, SourcePointingGame
from metrics.text import TextLeRFAUC, TextMoRFAUC

pytestmark = pytest.mark.usefixtures("one_thread")

PAD, MASK, SEP = 0, 1, 2
# logit of the answer (class 1) per input id; class 0 is the other "token" of the vocabulary.
# Ids 3..7 are words; <mask> weighs 0.5, so masking differs from removing.
W1 = [0.0, 0.5, 0.0, 1.0, 4.0, 2.0, 3.0, -1.0]
W0 = [0.0, 0.0, 0.0, 2.0, 1.0, 4.0, 3.0, 0.0]


class BagOfWords(TextClassifier):
    def __init__(self) -> None:
        super().__init__(PAD, MASK, [PAD, MASK, SEP])
        self.weight = torch.nn.Parameter(torch.tensor([W0, W1]).T.contiguous())

    def forward(self, input_ids):
        real = self.attention_mask(input_ids).unsqueeze(-1).float()
        return (self.weight[input_ids] * real).sum(1)


# words 3 4 5 6, then the separator: answer logit 1 + 4 + 2 + 3 = 10
IDS = torch.tensor([[3, 4, 5, 6, SEP, PAD]])
Y = torch.tensor([1])
# the ground truth: tokens 4 and 6 (positions 1 and 3)
GT = torch.tensor([[0, 1, 0, 1, 0, 0]], dtype=torch.float32)


def model():
    return BagOfWords().eval()


def test_source_ap_ranks_by_magnitude():
    # |a| ranks positions 1 (5), 2 (4), 3 (3), 0 (1): sources at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2
    a = torch.tensor([[1.0, -5.0, 4.0, 3.0, 99.0, 0.0]])
    np.testing.assert_allclose(SourceAP()(model(), IDS, Y, a, ground_truth=GT), [(1 + 2 / 3) / 2])
    # the separator's huge attribution is not a feature's: it changes nothing
    a2 = a.clone()
    a2[0, 4] = -1e3
    np.testing.assert_allclose(SourceAP()(model(), IDS, Y, a2, ground_truth=GT), [(1 + 2 / 3) / 2])


def test_pointing_game_hits_misses_and_ties():
    game = SourcePointingGame()
    hit = torch.tensor([[1.0, -5.0, 4.0, 3.0, 99.0, 0.0]])     # top |a| at position 1: a source
    miss = torch.tensor([[1.0, 2.0, 4.0, 3.0, 0.0, 0.0]])       # top at position 2: not one
    tie = torch.tensor([[2.0, 2.0, -2.0, 1.0, 0.0, 0.0]])       # positions 0, 1, 2 tie; one is a source
    flat = torch.ones(1, 6)                                     # every feature ties: 2 sources of 4
    scores = game(model(), IDS.repeat(4, 1), Y.repeat(4), torch.cat([hit, miss, tie, flat]), ground_truth=GT.repeat(4, 1))
    np.testing.assert_allclose(scores, [1.0, 0.0, 1 / 3, 0.5])


def test_pointing_game_without_sources_is_nan():
    scores = SourcePointingGame()(model(), IDS, Y, torch.ones(1, 6), ground_truth=torch.zeros(1, 6))
    assert np.isnan(scores[0])


def test_morf_lerf_area_by_hand():
    # attributions rank 4 (weight 4), 6 (3), 5 (2), 3 (1): the exact contributions
    a = torch.tensor([[1.0, 4.0, 2.0, 3.0, 0.0, 0.0]])
    # removal, MoRF: 10, 6, 3, 1, 0; LeRF: 10, 9, 7, 4, 0 over x = 0, 1/4, ..., 1
    morf = 0.25 * ((10 + 6) / 2 + (6 + 3) / 2 + (3 + 1) / 2 + (1 + 0) / 2)
    lerf = 0.25 * ((10 + 9) / 2 + (9 + 7) / 2 + (7 + 4) / 2 + (4 + 0) / 2)
    metric = MoRFLeRFArea()
    np.testing.assert_allclose(metric(model(), IDS, Y, a), [lerf - morf])
    assert metric.describe()["lerf_auc"] == pytest.approx(lerf) and metric.describe()["morf_auc"] == pytest.approx(morf)
    # it is the difference of the two text curves on the logit
    assert lerf - morf == pytest.approx(float(TextLeRFAUC(output="logits", deletion="remove")(model(), IDS, Y, a)[0]
                                              - TextMoRFAUC(output="logits", deletion="remove")(model(), IDS, Y, a)[0]))
    # masking: each masked token adds 0.5. MoRF: 10, 6.5, 4, 2.5, 2; LeRF: 10, 9.5, 8, 5.5, 2;
    # LeRF - MoRF: 0, 3, 4, 3, 0 -> trapezoids 1.5 + 3.5 + 3.5 + 1.5 over steps of 1/4
    np.testing.assert_allclose(MoRFLeRFArea(deletion="mask")(model(), IDS, Y, a), [2.5])
    # the reverse ranking scores the negative area
    np.testing.assert_allclose(metric(model(), IDS, Y, -a), [morf - lerf])


def test_morf_lerf_area_reads_the_logit_whatever_the_run_output():
    a = torch.tensor([[1.0, 4.0, 2.0, 3.0, 0.0, 0.0]])
    on_logits = MoRFLeRFArea(output="softmax")(model(), IDS, Y, a)        # the run's output is recorded only
    np.testing.assert_allclose(on_logits, MoRFLeRFArea(output="logits")(model(), IDS, Y, a))
    on_output = MoRFLeRFArea(output="softmax", curve="output")(model(), IDS, Y, a)
    expected = (TextLeRFAUC(deletion="remove")(model(), IDS, Y, a) - TextMoRFAUC(deletion="remove")(model(), IDS, Y, a))
    np.testing.assert_allclose(on_output, expected)
    with pytest.raises(ValueError, match="unknown curve 'probability'; valid choices: logits, output"):
        MoRFLeRFArea(curve="probability")


def test_directions_and_what_each_metric_reads_are_data():
    info = {name: (cls.info.direction, cls.info.attributions, cls.info.category)
            for name, cls in GENERATION_METRICS.items()}
    assert info == {"source_ap": ("higher", "absolute", "localisation"),
                    "source_pointing_game": ("higher", "absolute", "localisation"),
                    "morf_lerf_area": ("higher", "signed", "faithfulness")}


def test_padding_changes_no_score():
    a = torch.tensor([[1.0, 4.0, 2.0, 3.0, 0.0, 0.0]])
    more_ids = torch.nn.functional.pad(IDS, (0, 4), value=PAD)
    more_a = torch.nn.functional.pad(a, (0, 4))
    more_gt = torch.nn.functional.pad(GT, (0, 4))
    for cls in GENERATION_METRICS.values():
        metric = cls()
        np.testing.assert_allclose(metric(model(), more_ids, Y, more_a, ground_truth=more_gt),
                                   metric(model(), IDS, Y, a, ground_truth=GT))
