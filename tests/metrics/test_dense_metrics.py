"""Metrics of dense-model explanations, on hand-computed cases: region deletion (MoRF, LeRF) of the
explained value, and the Quantus localisation, faithfulness and randomisation wrappers reading a
dense head with the object's mask or box as the ground truth."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines import ExplainContext, METHODS
from baselines.dense_heads import dense_head
from experiments.data.base import box_masks
from experiments.zoo.dense_models import UNet
from metrics.dense import DENSE_METRICS, RegionLeRF, RegionMoRF, deletion_inputs, region_ranking
from metrics.quantus_metrics import (MPRT, AttributionLocalisation, FaithfulnessCorrelation, PointingGame,
                                     RelevanceRankAccuracy, TopKIntersection)

pytestmark = pytest.mark.usefixtures("one_thread")


class WeightedPixels(nn.Module):
    """f(x) = sum over pixels of w * x: one output, linear, every pixel's share known."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1, keepdim=True)


W = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])


def test_directions_and_categories_are_data() -> None:
    assert (RegionMoRF.info.direction, RegionLeRF.info.direction) == ("lower", "higher")
    assert {m.info.category for m in DENSE_METRICS.values()} == {"faithfulness"}
    assert set(DENSE_METRICS) == {"region_morf", "region_lerf"}


def test_ranking_and_deletion_by_hand() -> None:
    a = np.array([[1.0, 5.0], [3.0, 5.0]])
    assert region_ranking(a, 1, True).tolist() == [1, 3, 2, 0]         # ties keep pixel order
    assert region_ranking(a, 1, False).tolist() == [0, 2, 1, 3]
    big = np.arange(16, dtype=float).reshape(4, 4)
    assert region_ranking(big, 2, True).tolist() == [3, 2, 1, 0]        # 2x2 squares by their sums
    x = torch.arange(1.0, 5.0).reshape(1, 2, 2)
    steps = deletion_inputs(x, np.array([1, 3, 2, 0]), 2, 1, "zero")
    torch.testing.assert_close(steps, torch.tensor([[[[1.0, 2], [3, 4]]], [[[1.0, 0], [3, 0]]], [[[0.0, 0], [0, 0]]]]))
    mean = deletion_inputs(x, np.array([1, 3, 2, 0]), 2, 1, "mean")
    torch.testing.assert_close(mean[1], torch.tensor([[[1.0, 2.5], [3, 2.5]]]))


def test_morf_and_lerf_on_a_linear_value_by_hand() -> None:
    model = WeightedPixels(W[0])
    x = torch.ones(1, 1, 2, 2)
    a = W * x                                                            # each pixel's exact share
    y = torch.zeros(1, dtype=torch.long)
    # MoRF removes 4, 3, 2, 1 of f = 10: 1, .6, .3, .1, 0 over fractions 0, .25, ..., 1
    assert RegionMoRF(steps=4)(model, x, y, a)[0] == pytest.approx(0.25 * (0.5 + 0.6 + 0.3 + 0.1))
    # LeRF removes 1, 2, 3, 4: 1, .9, .7, .4, 0
    assert RegionLeRF(steps=4)(model, x, y, a)[0] == pytest.approx(0.25 * (0.5 + 0.9 + 0.7 + 0.4))
    # two steps: half of the pixels (the top two, 7 of 10) at once
    assert RegionMoRF(steps=2)(model, x, y, a)[0] == pytest.approx(0.5 * (0.5 + 0.3))
    # a map that ranks the pixels the wrong way round scores the other curve
    assert RegionMoRF(steps=4)(model, x, y, -a)[0] == pytest.approx(RegionLeRF(steps=4)(model, x, y, a)[0])


def test_region_deletion_reads_the_target_output_and_patches() -> None:
    class Two(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x.flatten(1).sum(1, keepdim=True), x[:, :, :2, :2].flatten(1).sum(1, keepdim=True)], 1)

    x = torch.ones(1, 1, 4, 4)
    a = torch.zeros(1, 1, 4, 4)
    a[..., :2, :2] = 1.0                                                 # the top-left patch first
    # output 1 reads only the top-left patch: gone after the first of four 2x2 patches
    assert RegionMoRF(steps=4, patch_size=2)(Two(), x, torch.tensor([1]), a)[0] == pytest.approx(0.25 * 0.5)
    # output 0 reads all 16 pixels: 1, .75, .5, .25, 0
    assert RegionMoRF(steps=4, patch_size=2)(Two(), x, torch.tensor([0]), a)[0] == pytest.approx(0.5)


def test_a_zero_value_has_no_curve() -> None:
    model = WeightedPixels(W[0])
    score = RegionMoRF(steps=2)(model, torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long), W)
    assert np.isnan(score[0])


@pytest.mark.parametrize("kw, message", [
    ({"baseline": "blur"}, "unknown baseline 'blur' for metric 'region_morf'; choose one of: zero, mean"),
    ({"steps": 0}, "metric 'region_morf': steps=0 is invalid; choose a positive integer"),
    ({"nr_runs": 3}, r"unknown parameter\(s\) \['nr_runs'\] for metric 'region_morf'"),
])
def test_bad_parameters_are_one_line(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RegionMoRF(**kw)


# ---------------------------------------------------------------------------------------------
# the Quantus wrappers on a dense head, with a box as the ground truth

def box_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a = torch.zeros(1, 1, 4, 4)
    a[0, 0, :2, :2] = torch.tensor([[5.0, 4.0], [3.0, 0.0]])
    a[0, 0, 3, 3], a[0, 0, 0, 3] = 1.0, 2.0
    gt = box_masks(torch.tensor([[0.0, 0.0, 0.5, 0.5]]), (4, 4))         # the top-left quarter
    return torch.rand(1, 1, 4, 4), a, gt


def test_localisation_against_a_box_by_hand() -> None:
    x, a, gt = box_case()
    model = WeightedPixels(torch.ones(1, 4, 4))
    y = torch.zeros(1, dtype=torch.long)
    kw = {"output": "identity"}
    assert AttributionLocalisation(**kw)(model, x, y, a, ground_truth=gt)[0] == pytest.approx(12 / 15)
    assert PointingGame(**kw)(model, x, y, a, ground_truth=gt)[0] == 1.0
    assert TopKIntersection(k=3, **kw)(model, x, y, a, ground_truth=gt)[0] == pytest.approx(1.0)
    assert TopKIntersection(k=4, **kw)(model, x, y, a, ground_truth=gt)[0] == pytest.approx(0.75)  # 5, 4, 3 of 5, 4, 3, 2
    assert RelevanceRankAccuracy(**kw)(model, x, y, a, ground_truth=gt)[0] == pytest.approx(0.75)


def test_faithfulness_correlation_reads_the_explained_value() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.rand(1, 4, 4, generator=g) + 0.5
    model = WeightedPixels(w)
    x = torch.rand(2, 1, 4, 4, generator=g)
    x[:, 0, 0, 0] = 0.0                   # the sample's minimum is 0: Quantus' "black" removes to 0
    a = w * x                             # the exact drop of every subset
    score = FaithfulnessCorrelation(output="identity", subset_size=3, nr_runs=20)(model, x, torch.zeros(2, dtype=torch.long), a)
    np.testing.assert_allclose(score, [1.0, 1.0], atol=1e-6)


def test_mprt_of_a_map_that_ignores_the_model_is_one() -> None:
    torch.manual_seed(0)
    head = dense_head(UNet(1, (8, 8), widths=(2, 4)).eval(), "binary-segmentation", 0.3)
    ctx = ExplainContext(modality="image", model_kind="conv", n_classes=1)
    sobel = METHODS["sobel"](head, ctx)
    x = torch.rand(2, 1, 8, 8)
    y = torch.zeros(2, dtype=torch.long)
    a = sobel(x, y).values
    np.testing.assert_allclose(MPRT(output="identity")(head, x, y, a, explainer=sobel), [1.0, 1.0], atol=1e-6)
    saliency = METHODS["saliency"](head, ctx, output="identity")
    moved = MPRT(output="identity")(head, x, y, saliency(x, y).values, explainer=saliency)
    assert (moved < 0.9).all()            # a map of the network changes as its layers are randomised
