"""The tabular metric set on a linear model, where every score can be worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines.base import ExplainContext, Explainer
from metrics.tabular import (
    TABULAR_METRICS, Comprehensiveness, Infidelity, LeRFAUC, MoRFAUC, Sufficiency,
    TabularFaithfulnessCorrelation, TabularMonotonicity, TabularSensitivity, resolve_ks,
)

# Class 1's logit is w . x; class 0's is 0. The weights are not in column order on purpose: the
# most important feature is column 1, so masking "the first k columns" gives different answers.
W = torch.tensor([1.0, 4.0, 2.0, 3.0])


def linear_model(w: torch.Tensor = W) -> nn.Module:
    lin = nn.Linear(len(w), 2, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = w
    return lin.eval()


class GradInput(Explainer):
    name = "grad_input"

    def explain(self, inputs, targets):
        x = inputs.clone().requires_grad_(True)
        out = self.model(x).gather(1, targets[:, None]).sum()
        (g,) = torch.autograd.grad(out, x)
        return (g * x).detach()


class Gradient(GradInput):
    name = "gradient"

    def explain(self, inputs, targets):
        return super().explain(inputs, targets) / inputs


def rows(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(n, 4), torch.ones(n, dtype=torch.long)


def test_faithfulness_correlation_is_one_for_exact_contributions_and_nan_for_a_flat_map():
    x, y = rows()
    a = (W * x).clone()
    a[2] = 1.0  # a constant attribution row has no correlation
    scores = TabularFaithfulnessCorrelation(output="logit")(linear_model(), x, y, a)
    np.testing.assert_allclose(scores[:2], 1.0)
    assert np.isnan(scores[2])


def test_faithfulness_correlation_drops_for_a_shuffled_attribution():
    x, y = rows(1)
    a = torch.tensor([[4.0, 1.0, 3.0, 2.0]])  # drops are [1, 4, 2, 3]
    expected = np.corrcoef([4, 1, 3, 2], [1, 4, 2, 3])[0, 1]
    score = TabularFaithfulnessCorrelation(output="logit")(linear_model(), x, y, a)
    np.testing.assert_allclose(score, [expected])


def test_comprehensiveness_masks_the_top_features_not_the_first_columns():
    x, y = rows(2)
    a = W * x  # top-1 is column 1 (weight 4), top-2 adds column 3 (weight 3)
    score = Comprehensiveness(output="logit", ks=[1, 2])(linear_model(), x, y, a)
    # top-k: drops 4 and 4+3 -> 5.5. Masking the first columns would give (1 + 5) / 2 = 3.
    np.testing.assert_allclose(score, [5.5, 5.5])


def test_sufficiency_keeps_only_the_top_features():
    x, y = rows(1)
    score = Sufficiency(output="logit", ks=[1, 2])(linear_model(), x, y, W * x)
    # f(x) = 10; keeping column 1 -> 4 (drop 6); keeping columns 1, 3 -> 7 (drop 3).
    np.testing.assert_allclose(score, [4.5])


def test_fractional_ks_round_up_and_bad_ks_are_refused():
    assert resolve_ks([0.1, 0.5, 1.0, 2], 4) == [1, 2, 4, 2]
    with pytest.raises(ValueError, match=r"bad k 5; with 4 features choose 1 <= k <= 4"):
        resolve_ks([5], 4)
    with pytest.raises(ValueError, match=r"bad k 1.5; a fractional k must lie in \(0, 1\]"):
        resolve_ks([1.5], 4)


def test_comprehensiveness_by_absolute_rank_and_probability_output():
    x, y = rows(1)
    a = torch.tensor([[0.0, -5.0, 1.0, 0.5]])  # by |a| the top feature is column 1
    score = Comprehensiveness(ks=[1], rank_by="absolute")(linear_model(), x, y, a)
    expected = torch.sigmoid(torch.tensor(10.0)) - torch.sigmoid(torch.tensor(6.0))
    np.testing.assert_allclose(score, [float(expected)], rtol=1e-6)


def test_monotonicity_is_one_in_attribution_order_and_zero_reversed():
    x, y = rows(1)
    model = linear_model()
    good = TabularMonotonicity(output="logit")(model, x, y, W * x)
    reversed_ = TabularMonotonicity(output="logit")(model, x, y, -(W * x))
    np.testing.assert_allclose(good, [1.0])
    np.testing.assert_allclose(reversed_, [0.0])


def test_morf_and_lerf_areas_by_hand():
    x, y = rows(1)
    model, a = linear_model(), W * x
    # MoRF removes 4, 3, 2, 1: curve 10, 6, 3, 1, 0 -> 0.25 * (5 + 6 + 3 + 1 + 0) = 3.75
    np.testing.assert_allclose(MoRFAUC(output="logit")(model, x, y, a), [3.75])
    # LeRF removes 1, 2, 3, 4: curve 10, 9, 7, 4, 0 -> 0.25 * (5 + 9 + 7 + 4 + 0) = 6.25
    np.testing.assert_allclose(LeRFAUC(output="logit")(model, x, y, a), [6.25])


def test_batch_mean_baseline():
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
    y = torch.ones(2, dtype=torch.long)
    # the baseline is 2 everywhere; removing the top feature (column 1, weight 4) changes w.x by 4 * (x - 2)
    score = Comprehensiveness(output="logit", ks=[1], baseline="batch_mean")(linear_model(), x, y, W * x)
    np.testing.assert_allclose(score, [-4.0, 4.0])


def test_infidelity_is_zero_for_the_gradient_at_any_scale():
    x, y = rows(2)
    model = linear_model()
    exact = Infidelity(output="logit", scale="none")(model, x, y, W.expand(2, 4))
    scaled = Infidelity(output="logit", scale="optimal")(model, x, y, 3 * W.expand(2, 4))
    np.testing.assert_allclose(exact, 0.0, atol=1e-9)
    np.testing.assert_allclose(scaled, 0.0, atol=1e-9)


def test_infidelity_of_a_zero_map_is_the_output_variance():
    x, y = rows(1)
    metric = Infidelity(output="logit", scale="none", n_perturbations=4000, noise_std=0.1, seed=3)
    score = metric(linear_model(), x, y, torch.zeros(1, 4))
    expected = 0.1 ** 2 * float((W ** 2).sum())  # E[(I . w)^2] = sigma^2 ||w||^2 = 0.3
    np.testing.assert_allclose(score, [expected], rtol=0.1)
    assert metric(linear_model(), x, y, torch.zeros(1, 4))[0] == score[0]  # seeded


def test_sensitivity_zero_for_a_constant_explanation_and_bounded_for_grad_input():
    x, y = rows(2)
    model = linear_model()
    context = ExplainContext("tabular", "mlp", 2)
    metric = TabularSensitivity(n_samples=8, radius=0.1)
    const = metric(model, x, y, W.expand(2, 4), explainer=Gradient(model, context))
    np.testing.assert_allclose(const, 0.0, atol=1e-6)
    gi = metric(model, x, y, W * x, explainer=GradInput(model, context))
    bound = 0.1 * float(W.norm() / (W * x[0]).norm())  # ||w * u|| / ||w * x|| with |u| <= 0.1
    assert np.all(gi > 0) and np.all(gi <= bound + 1e-6)


def test_sensitivity_requires_an_explainer():
    x, y = rows(1)
    with pytest.raises(ValueError, match="re-runs the explainer"):
        TabularSensitivity()(linear_model(), x, y, W * x)


def test_unknown_parameters_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['k'\] for metric 'comprehensiveness'"):
        Comprehensiveness(k=3)
    with pytest.raises(ValueError, match="unknown output 'proba'; valid choices: probability, logit"):
        MoRFAUC(output="proba")
    with pytest.raises(ValueError, match=r"takes tabular rows \(N, F\)"):
        MoRFAUC()(linear_model(), torch.ones(1, 1, 4), torch.ones(1, dtype=torch.long), torch.ones(1, 1, 4))


def test_every_metric_is_batch_invariant_and_finite_on_an_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x = torch.randn(6, 5)
    y = model(x).argmax(1)
    context = ExplainContext("tabular", "mlp", 3)
    explainer = GradInput(model, context)
    a = explainer(x, y).values
    for name, cls in TABULAR_METRICS.items():
        metric = cls()
        full = metric(model, x, y, a, explainer=explainer)
        assert full.shape == (6,) and np.isfinite(full).all(), name
        alone = metric(model, x[2:3], y[2:3], a[2:3], explainer=explainer)
        if name not in ("infidelity", "tabular_sensitivity"):  # those draw noise per batch
            np.testing.assert_allclose(alone, full[2:3], rtol=1e-5, atol=1e-7, err_msg=name)
