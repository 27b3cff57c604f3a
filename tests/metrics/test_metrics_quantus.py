"""Each Quantus wrapper on a tiny linear image model: finite scores, the right sign convention
(a faithful map beats a random one in the metric's own direction), and the wrapper's own rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines.base import ExplainContext, Explainer
from metrics import quantus_metrics as qm
from metrics.explain_adapter import ExplainFunc, normalise_per_sample

N, SIDE = 6, 8


class LinearImage(nn.Module):
    """Two-class model on (N, 1, 8, 8): class 1's logit is <w, x>, class 0's is -<w, x>."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(SIDE * SIDE, 2, bias=False)
        with torch.no_grad():
            self.fc.weight[1] = w.reshape(-1)
            self.fc.weight[0] = -w.reshape(-1)

    def forward(self, x):
        return self.fc(self.flatten(x))


class GradInput(Explainer):
    name = "grad_input"

    def explain(self, inputs, targets):
        x = inputs.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(self.model(x).gather(1, targets[:, None]).sum(), x)
        return (g * x).detach()


class InputAsMap(Explainer):
    """Ignores the model and the class: the explanation is the input itself."""

    name = "input"

    def explain(self, inputs, targets):
        return inputs.clone()


class ConstantMap(Explainer):
    """Ignores the input: a fixed map (a gradient of a linear model behaves like this)."""

    name = "constant"

    def explain(self, inputs, targets):
        return torch.ones_like(inputs) * torch.arange(inputs[0].numel()).reshape(inputs[0].shape)


@pytest.fixture(scope="module")
def setup():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(SIDE, SIDE, generator=gen)
    model = LinearImage(w).eval()
    x = torch.rand(N, 1, SIDE, SIDE, generator=gen)
    x[:, :, 0, 0] = 0.0  # the "black" baseline (the sample minimum) is then exactly 0
    y = torch.ones(N, dtype=torch.long)
    context = ExplainContext("image", "conv", 2)
    explainer = GradInput(model, context)
    perfect = explainer(x, y).values  # w * x: each pixel's exact contribution to the logit
    random_map = torch.randn(N, 1, SIDE, SIDE, generator=gen)
    return model, x, y, explainer, perfect, random_map


def mean(metric, setup, a, **kw):
    model, x, y, explainer, _, _ = setup
    scores = metric(model, x, y, a, explainer=explainer, **kw)
    assert scores.shape == (N,) and np.isfinite(scores).all(), (metric.info.name, scores)
    return float(scores.mean())


FAITHFULNESS = [
    (qm.FaithfulnessCorrelation, {"nr_runs": 30, "subset_size": 8}),
    (qm.FaithfulnessEstimate, {"features_in_step": 4}),
    (qm.PixelFlipping, {"features_in_step": 4}),
    (qm.MonotonicityCorrelation, {"nr_samples": 5, "features_in_step": 4}),
    (qm.ROAD, {"percentages": [10, 30, 50, 70, 90]}),
    (qm.Selectivity, {"patch_size": 2}),
]


@pytest.mark.parametrize("cls,params", FAITHFULNESS, ids=[c.__name__ for c, _ in FAITHFULNESS])
def test_faithful_map_beats_a_random_one(setup, cls, params):
    perfect, random_map = setup[4], setup[5]
    metric = cls(**params)
    good, bad = mean(metric, setup, perfect), mean(metric, setup, random_map)
    assert (good > bad) if cls.info.direction == "higher" else (good < bad), (good, bad)


def test_faithfulness_correlation_of_exact_contributions_is_one(setup):
    model, x, y, _, perfect, _ = setup
    scores = qm.FaithfulnessCorrelation(nr_runs=30, subset_size=8)(model, x, y, perfect)
    np.testing.assert_allclose(scores, 1.0, atol=1e-6)


@pytest.mark.parametrize("cls", [qm.MaxSensitivity, qm.AvgSensitivity])
def test_sensitivity_is_zero_for_an_input_independent_explainer(setup, cls):
    model, x, y, explainer, perfect, _ = setup
    const = ConstantMap(model, explainer.context)
    metric = cls(nr_samples=3)
    zero = metric(model, x, y, const(x, y).values, explainer=const)
    np.testing.assert_allclose(zero, 0.0, atol=1e-9)
    assert mean(metric, setup, perfect) > 0.01


class HalfImage(nn.Module):
    """Two classes that read different pixels: class 0 the left half, class 1 the right half."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(SIDE * SIDE, 2, bias=False)
        left = torch.zeros(SIDE, SIDE)
        left[:, : SIDE // 2] = 1.0
        with torch.no_grad():
            self.fc.weight[0] = (w * left).reshape(-1)
            self.fc.weight[1] = (w * (1 - left)).reshape(-1)

    def forward(self, x):
        return self.fc(self.flatten(x))


def test_random_logit_is_highest_for_a_class_blind_explainer(setup):
    model, x, y, explainer, perfect, _ = setup
    blind = InputAsMap(model, explainer.context)
    metric = qm.RandomLogit()
    blind_scores = metric(model, x, y, x, explainer=blind)
    np.testing.assert_allclose(blind_scores, 1.0, atol=1e-6)
    assert metric.params["num_classes"] == 2  # taken from the explainer's context


@pytest.mark.parametrize("similarity", ["ssim", "pearson"])
def test_random_logit_counts_a_sign_flipped_pair_as_the_same_explanation(setup, similarity):
    """LinearImage's class maps are exact negations (w x and -w x): they point at the same
    pixels, so the explanation did not change with the class. On signed maps Pearson would
    give -1, the best possible score; on magnitudes it is 1, the worst."""
    model, x, y, explainer, perfect, _ = setup
    flipped = explainer(x, 1 - y).values
    np.testing.assert_allclose(flipped.numpy(), -perfect.numpy())
    scores = qm.RandomLogit(similarity=similarity)(model, x, y, perfect, explainer=explainer)
    np.testing.assert_allclose(scores, 1.0, atol=1e-6)
    # a model whose classes read different pixels gets different maps: a low similarity
    gen = torch.Generator().manual_seed(3)
    halves = HalfImage(torch.rand(SIDE, SIDE, generator=gen) + 0.5).eval()
    sensitive = GradInput(halves, explainer.context)
    a = sensitive(x, y).values
    low = qm.RandomLogit(similarity=similarity)(halves, x, y, a, explainer=sensitive)
    assert np.all(low < 0.5), low


def test_mprt_is_highest_for_a_model_blind_explainer(setup):
    model, x, y, explainer, perfect, _ = setup
    blind = InputAsMap(model, explainer.context)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metric = qm.MPRT()
    np.testing.assert_allclose(metric(model, x, y, x, explainer=blind), 1.0, atol=1e-6)
    assert mean(metric, setup, perfect) < 0.9
    for k, v in model.state_dict().items():  # Quantus randomises a copy, not the model
        assert torch.equal(v, before[k]), k


def test_explain_func_rebuilds_the_explainer_on_another_model(setup):
    model, x, y, explainer, perfect, _ = setup
    adapter = ExplainFunc(explainer)
    np.testing.assert_allclose(adapter(model, x.numpy(), y.numpy()), perfect.numpy(), rtol=1e-6)
    other = LinearImage(torch.ones(SIDE, SIDE)).eval()
    np.testing.assert_allclose(adapter(other, x.numpy(), y.numpy()), x.numpy(), rtol=1e-6)


def test_sparseness_and_complexity_of_one_hot_and_constant_maps(setup):
    model, x, y, _, _, _ = setup
    one_hot = torch.zeros(N, 1, SIDE, SIDE)
    one_hot[:, :, 3, 4] = 5.0
    # constant per sample; not one value for the whole batch, which Quantus refuses outright
    constant = torch.arange(1.0, N + 1).reshape(N, 1, 1, 1).expand(N, 1, SIDE, SIDE).clone()
    sparse = qm.Sparseness()
    # Quantus adds 1e-7 to every attribution of the map (normalised to a maximum of 1) before its
    # Gini index: one hot value among n gives (1 - 1/n) / (1 + (n - 1) 1e-7), 6.2e-6 below
    # 1 - 1/n (which atol=1e-5 used to accept with a margin under 2x)
    n = SIDE ** 2
    np.testing.assert_allclose(sparse(model, x, y, one_hot), (1 - 1 / n) / (1 + (n - 1) * 1e-7), rtol=1e-6)
    np.testing.assert_allclose(sparse(model, x, y, constant), 0.0, atol=1e-6)
    complexity = qm.Complexity()
    np.testing.assert_allclose(complexity(model, x, y, one_hot), 0.0, atol=1e-6)
    np.testing.assert_allclose(complexity(model, x, y, constant), np.log(SIDE ** 2), rtol=1e-6)


def test_localisation_by_hand_and_nan_for_an_empty_mask(setup):
    model, x, y, _, _, _ = setup
    mask = torch.zeros(N, 1, SIDE, SIDE)
    mask[:, :, :2, :2] = 1  # 4 pixels
    mask[5] = 0  # no ground truth for the last sample
    a = torch.zeros(N, 1, SIDE, SIDE)
    a[:, :, 0, 0], a[:, :, 0, 1] = 3.0, 1.0   # inside
    a[:, :, 7, 7], a[:, :, 6, 6] = 2.0, 2.0   # outside
    expect = {"pointing_game": 1.0, "attribution_localisation": 0.5, "top_k_intersection": 0.5,
              "relevance_rank_accuracy": 0.5}
    metrics = [qm.PointingGame(), qm.AttributionLocalisation(), qm.TopKIntersection(k=4), qm.RelevanceRankAccuracy()]
    for metric in metrics:
        scores = metric(model, x, y, a, ground_truth=mask)
        np.testing.assert_allclose(scores[:5], expect[metric.info.name], err_msg=metric.info.name)
        assert np.isnan(scores[5]), metric.info.name


def test_localisation_without_ground_truth_is_refused(setup):
    model, x, y, _, perfect, _ = setup
    with pytest.raises(ValueError, match="metric 'pointing_game' needs ground_truth"):
        qm.PointingGame()(model, x, y, perfect)


def test_robustness_without_explainer_and_road_on_rows_are_refused(setup):
    model, x, y, _, perfect, _ = setup
    with pytest.raises(ValueError, match="metric 'max_sensitivity' re-runs the explainer"):
        qm.MaxSensitivity()(model, x, y, perfect)
    rows = torch.rand(3, 10)
    with pytest.raises(ValueError, match="metric 'road' does not support tabular inputs of shape"):
        qm.ROAD()(nn.Linear(10, 2), rows, torch.zeros(3, dtype=torch.long), rows)


def test_parameters_are_checked_and_recorded():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['nr_run'\] for metric 'faithfulness_correlation'"):
        qm.FaithfulnessCorrelation(nr_run=3)
    with pytest.raises(ValueError, match="unknown similarity 'cos' for metric 'mprt'"):
        qm.MPRT(similarity="cos")
    described = qm.MonotonicityCorrelation().describe()
    assert described["direction"] == "higher" and described["attributions"] == "absolute"
    assert described["params"]["abs"] is True and described["params"]["normalise"] is True
    assert qm.FaithfulnessCorrelation().describe()["params"]["abs"] is False


def test_fractional_subset_size_is_resolved_and_recorded(setup):
    model, x, y, _, perfect, _ = setup
    metric = qm.FaithfulnessCorrelation(nr_runs=5, subset_size=0.25)
    metric(model, x, y, perfect)
    assert metric.describe()["effective"] == {"subset_size": 16}


def test_model_is_called_on_whole_batches_unless_the_metric_draws_per_batch(setup):
    model, x, y, _, perfect, _ = setup
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, inp: sizes.append(inp[0].shape[0]))
    try:
        qm.PixelFlipping(features_in_step=16)(model, x, y, perfect)
        assert sizes and set(sizes) == {N}
        sizes.clear()
        qm.FaithfulnessCorrelation(nr_runs=5, subset_size=8)(model, x, y, perfect)   # one sample at a time
        assert sizes and set(sizes) == {1}
    finally:
        handle.remove()


DRAWING = [
    (qm.FaithfulnessCorrelation, {"nr_runs": 10, "subset_size": 8}),
    (qm.MonotonicityCorrelation, {"nr_samples": 3, "features_in_step": 8}),
    (qm.ROAD, {"percentages": [10, 30, 50, 70, 90], "noise": 2.0}),
    (qm.MaxSensitivity, {"nr_samples": 3}),
    (qm.AvgSensitivity, {"nr_samples": 3}),
]


@pytest.mark.parametrize("cls,params", DRAWING, ids=[c.__name__ for c, _ in DRAWING])
def test_a_sample_scores_the_same_whatever_else_is_scored_with_it(setup, cls, params):
    """Quantus draws these metrics' random parts per batch: scored in a run of N, of 3, or in
    another order, a sample must score the same (what a check on a table's first samples needs)."""
    assert cls.draws_per_batch
    model, x, y, explainer, _, a = setup               # a random map: exact contributions score 1 on any draw
    metric = cls(**params)
    every = metric(model, x, y, a, explainer=explainer)
    first = metric(model, x[:3], y[:3], a[:3], explainer=explainer)
    order = torch.tensor([4, 0, 5, 2, 1, 3])
    shuffled = metric(model, x[order], y[order], a[order], explainer=explainer)
    np.testing.assert_array_equal(first, every[:3])
    np.testing.assert_array_equal(shuffled, every[order.numpy()])
    assert len(np.unique(every)) > 1                     # the samples do not all get one score


def test_scores_do_not_depend_on_batch_company(setup):
    model, x, y, explainer, perfect, _ = setup
    metric = qm.MaxSensitivity(nr_samples=2)
    together = metric(model, x, y, perfect, explainer=explainer)
    scaled = perfect.clone()
    scaled[0] *= 100  # another sample on another scale must not change sample 1
    np.testing.assert_allclose(metric(model, x, y, scaled, explainer=explainer)[1:], together[1:], rtol=1e-6)


def test_a_batch_of_identical_maps_is_refused_by_quantus_and_scores_nan(setup):
    model, x, y, _, _, _ = setup
    zeros = torch.zeros(N, 1, SIDE, SIDE)
    with pytest.raises(AssertionError, match="all equal to zero"):
        qm.Sparseness()(model, x, y, zeros)  # every sample fails: a usage error, re-raised
    mixed = zeros.clone()
    mixed[1:, :, 2, 3] = 1.0  # sample 0 alone has an all-zero map
    scores = qm.FaithfulnessEstimate(features_in_step=4)(model, x, y, mixed)
    assert np.isnan(scores[0]) and np.isfinite(scores[1:]).all()


def test_a_failing_sample_scores_nan_and_the_rest_survive(setup, monkeypatch):
    model, x, y, _, perfect, _ = setup
    metric = qm.Sparseness()
    original = qm.QuantusMetric._evaluate

    def flaky(self, model, x, y, a, s, explain_func, seed=None):
        if len(x) > 1 or x[0, 0, 1, 1] == bad_value:
            raise FloatingPointError("numerical failure")
        return original(self, model, x, y, a, s, explain_func, seed)

    bad_value = float(x[2, 0, 1, 1])
    monkeypatch.setattr(qm.QuantusMetric, "_evaluate", flaky)
    scores = metric(model, x, y, perfect)
    assert np.isnan(scores[2]) and np.isfinite(np.delete(scores, 2)).all()


def test_tabular_rows_work_for_the_sequence_view_metrics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 2)).eval()
    x = torch.randn(5, 8)
    y = model(x).argmax(1)
    context = ExplainContext("tabular", "mlp", 2)
    explainer = GradInput(model, context)
    a = explainer(x, y).values
    for metric in (qm.FaithfulnessCorrelation(nr_runs=10, subset_size=2), qm.FaithfulnessEstimate(features_in_step=1),
                   qm.PixelFlipping(features_in_step=1), qm.MaxSensitivity(nr_samples=2),
                   qm.RandomLogit(similarity="pearson"), qm.MPRT(), qm.Sparseness()):
        scores = metric(model, x, y, a, explainer=explainer)
        assert scores.shape == (5,) and np.isfinite(scores).all(), metric.info.name


def test_normalise_per_sample_leaves_zero_maps_alone():
    a = np.array([[[2.0, -4.0]], [[0.0, 0.0]]])
    np.testing.assert_allclose(normalise_per_sample(a), [[[0.5, -1.0]], [[0.0, 0.0]]])


def test_curve_auc_is_the_mean_height():
    np.testing.assert_allclose(qm.curve_auc(np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])), [1.0, 0.25])


class CountingGradInput(GradInput):
    """GradInput that counts the samples it is asked to explain."""

    name = "counting"

    def explain(self, inputs, targets):
        self.calls = getattr(self, "calls", 0) + len(inputs)
        return super().explain(inputs, targets)


def test_avg_sensitivity_reuses_the_explanations_max_sensitivity_computed(setup):
    """Both draw the same seeded perturbations: with the runner's memo the second metric re-runs
    nothing and scores exactly what it scores without the memo."""
    model, x, y, explainer, perfect, _ = setup
    plain = CountingGradInput(model, explainer.context)
    expected = qm.AvgSensitivity(nr_samples=3)(model, x, y, perfect, explainer=plain)
    assert plain.calls == 3 * N
    shared = CountingGradInput(model, explainer.context)
    shared.memo = {}
    qm.MaxSensitivity(nr_samples=3)(model, x, y, perfect, explainer=shared)
    assert shared.calls == 3 * N
    got = qm.AvgSensitivity(nr_samples=3)(model, x, y, perfect, explainer=shared)
    assert shared.calls == 3 * N                                   # nothing re-explained
    np.testing.assert_array_equal(got, expected)
    # a randomised copy of the model (MPRT) is never served from the memo
    qm.MPRT()(model, x, y, perfect, explainer=shared)
    assert shared.calls > 3 * N


class GlobalNoiseGradInput(CountingGradInput):
    """Draws from numpy's global generator, as shap does inside its explainers."""

    name = "global_noise"

    def explain(self, inputs, targets):
        np.random.normal(size=7)
        return super().explain(inputs, targets) * (1 + 0.01 * torch.from_numpy(np.random.rand(*inputs.shape)).float())


def test_a_method_drawing_from_the_global_generator_does_not_move_the_perturbations(setup):
    model, x, y, explainer, perfect, _ = setup
    shared = GlobalNoiseGradInput(model, explainer.context)
    shared.memo = {}
    qm.MaxSensitivity(nr_samples=3)(model, x, y, perfect, explainer=shared)
    calls = shared.calls
    qm.AvgSensitivity(nr_samples=3)(model, x, y, perfect, explainer=shared)
    assert shared.calls == calls                                   # every perturbed input was seen before
