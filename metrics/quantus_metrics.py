"""One wrapper per Quantus 0.6.0 metric the benchmark reports.

Every wrapper fixes what Quantus would otherwise decide silently and records it in ``params``:

- ``abs`` follows ``info.attributions`` ("absolute" -> Quantus takes ``abs``; "signed" -> never);
- ``normalise`` is on, with :func:`metrics.explain_adapter.normalise_per_sample` (Quantus' own
  normaliser divides by the maximum over the whole batch, coupling samples);
- ``softmax`` (scores on probabilities or on logits), ``batch_size`` (samples per Quantus batch;
  every model or explainer call inside Quantus 0.6.0 takes the whole batch at once), ``seed``
  (Quantus draws from NumPy's global generator: it is seeded here and restored afterwards) and
  ``channel_reduction`` (how re-run explanations are reduced, as the harness reduced ``a``).

Metrics whose random draws Quantus makes for a whole batch at once (:attr:`QuantusMetric.draws_per_batch`)
score each sample alone, seeded from the run seed and the sample itself, so that a sample's score
does not depend on the other samples of its run (a table's first 16 samples score the same as in
the full table, which ``reproduce --check n_samples=16`` relies on).

Curve-valued metrics are summarised per sample by the area under the curve over the fraction of
the input perturbed, ``np.trapezoid(curve, x=linspace(0, 1, len(curve)))``, so it is the mean
height of the curve and comparable across input sizes. A sample whose computation fails
numerically scores NaN; a failure on every sample is re-raised, as it is a usage error.
"""
from __future__ import annotations

import inspect
import logging
import warnings
from typing import Any, ClassVar, Optional

import numpy as np
from torch import Tensor, nn

from baselines.vocabulary import OUTPUTS, device_of, sample_seed, seeded
from metrics.base import Metric, MetricInfo
from metrics.quantus_import import import_quantus

quantus = import_quantus()
from quantus.functions import similarity_func  # noqa: E402  (after the TensorFlow-free import)
from metrics.explain_adapter import ExplainFunc, normalise_per_sample

log = logging.getLogger(__name__)

SIMILARITIES = {
    "pearson": similarity_func.correlation_pearson,
    "spearman": similarity_func.correlation_spearman,
    "kendall": similarity_func.correlation_kendall_tau,
    "ssim": similarity_func.ssim,
    "cosine": similarity_func.cosine,
}
# Parameters of the call (not of the Quantus constructor) every wrapper accepts.
# ``output`` is the run's setting (softmax | logits: what every method explains; identity: a dense
# task's head, whose value is read as it is); when given it decides ``softmax``, so a metric
# reads the function the methods explain. ``max_samples`` (None:
# all) is read by the runner, which scores only the first that many samples with this metric.
CALL_PARAMS = {"softmax": False, "output": None, "batch_size": 64, "seed": 0, "channel_reduction": "sum",
               "device": None, "max_samples": None}


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Per-row area under a curve sampled evenly over [0, 1] (the mean height of the curve)."""
    curves = np.asarray(curves, dtype=np.float64)
    if curves.shape[-1] < 2:
        return curves[..., 0] if curves.shape[-1] else np.full(curves.shape[:-1], np.nan)
    return np.trapezoid(curves, x=np.linspace(0.0, 1.0, curves.shape[-1]), axis=-1)


def resolve_count(name: str, value: Any, n_features: int) -> int:
    """A count given as an integer, or as a fraction in (0, 1) of ``n_features`` (at least 1)."""
    if isinstance(value, float) and 0 < value < 1:
        return max(1, int(round(value * n_features)))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1 or int(value) != value:
        raise ValueError(f"bad {name} {value!r}; use a positive integer or a fraction in (0, 1)")
    return int(value)


def _to_numpy(t: Any, dtype: Any = np.float64) -> Optional[np.ndarray]:
    if t is None:
        return None
    if isinstance(t, Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=dtype)


class _FlattenInput(nn.Module):
    """Feeds (N, 1, F) sequences to a model that takes (N, F) rows."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.flatten(1))


class QuantusMetric(Metric):
    """Shared machinery: parameter bookkeeping, the Quantus call and the per-sample fallback."""

    quantus_class: ClassVar[type]
    init_defaults: ClassVar[dict[str, Any]] = {}  # Quantus constructor parameters
    call_defaults: ClassVar[dict[str, Any]] = {}  # overrides of CALL_PARAMS
    modalities: ClassVar[tuple[str, ...]] = ("image", "tabular")  # input layouts it works on
    needs_explainer: ClassVar[bool] = False
    needs_ground_truth: ClassVar[bool] = False
    # Quantus checks sizes on x.shape[2:], which is empty for (N, F) rows: present such rows as
    # one-channel sequences (N, 1, F) and flatten them again in front of the model.
    tabular_as_sequence: ClassVar[bool] = False
    # Count parameters that may also be given as a fraction (a float in (0, 1)) of the features
    # of "x" or of "a" per sample; the count used is recorded under "effective" in describe().
    count_params: ClassVar[dict[str, str]] = {}
    # Quantus draws this metric's random parts (feature subsets, noise) for a whole batch at once,
    # interleaved over its samples, so a sample's score would change with the samples that share
    # its batch: measured between runs of 8 and 16 samples, faithfulness correlation moved by up to
    # 0.2 and monotonicity correlation by 0.6. Such a metric scores every sample alone, its draws
    # seeded from the run seed and the sample (baselines.vocabulary.sample_seed).
    draws_per_batch: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        defaults = {**CALL_PARAMS, **self.call_defaults, **self.init_defaults}
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for metric {self.info.name!r}; "
                             f"valid: {', '.join(sorted(defaults))}")
        merged = {**defaults, **params}
        if merged["output"] is not None:
            if merged["output"] not in OUTPUTS:
                raise ValueError(f"unknown output {merged['output']!r} for metric {self.info.name!r}; "
                                 f"choose one of: {', '.join(OUTPUTS)}")
            merged["softmax"] = merged["output"] == "softmax"
        if "similarity" in merged and merged["similarity"] not in SIMILARITIES:
            raise ValueError(f"unknown similarity {merged['similarity']!r} for metric {self.info.name!r}; "
                             f"choose one of: {', '.join(SIMILARITIES)}")
        merged.update(abs=self.info.attributions == "absolute", normalise=True,
                      normalise_func="per_sample_max_abs")
        super().__init__(**merged)
        self.effective: dict[str, Any] = {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **({"effective": dict(self.effective)} if self.effective else {})}

    # -- what subclasses adapt -------------------------------------------------------------
    def quantus_kwargs(self) -> dict[str, Any]:
        """Constructor arguments for the Quantus metric, translated from ``params``."""
        kwargs = {k: self.params[k] for k in self.init_defaults}
        kwargs.update({k: v for k, v in self.effective.items() if k in kwargs})
        if "similarity" in kwargs:
            kwargs["similarity_func"] = SIMILARITIES[kwargs.pop("similarity")]
        return kwargs

    def summarise(self, raw: Any, metric: Any) -> np.ndarray:
        """Per-sample scores from what the Quantus call returned."""
        return np.asarray(raw, dtype=np.float64).reshape(-1)

    # -- the call ------------------------------------------------------------------------
    def build(self, seed: Optional[int] = None) -> Any:
        seed = self.params["seed"] if seed is None else seed
        seed = {"seed": seed} if "seed" in inspect.signature(self.quantus_class).parameters else {}
        return self.quantus_class(**self.quantus_kwargs(), **seed, abs=self.params["abs"], normalise=True,
                                  normalise_func=normalise_per_sample, return_aggregate=False,
                                  disable_warnings=True, display_progressbar=False)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, a: Tensor,
                 explainer: Optional[Any] = None, ground_truth: Optional[Tensor] = None) -> np.ndarray:
        name = self.info.name
        modality = "image" if x.ndim == 4 else "tabular" if x.ndim == 2 else f"{x.ndim}-d"
        if modality not in self.modalities:
            raise ValueError(f"metric {name!r} does not support {modality} inputs of shape {tuple(x.shape)}; "
                             f"it supports: {', '.join(self.modalities)}")
        if self.needs_explainer and explainer is None:
            raise ValueError(f"metric {name!r} re-runs the explainer: pass explainer=<baselines.base.Explainer>")
        if self.needs_ground_truth and ground_truth is None:
            raise ValueError(f"metric {name!r} needs ground_truth (a mask shaped like the attributions); "
                             "use it only on datasets that have one")
        model.eval()
        arrays = (_to_numpy(x, np.float32), _to_numpy(y, np.int64).reshape(-1), _to_numpy(a),
                  _to_numpy(ground_truth))
        if modality == "tabular" and self.tabular_as_sequence:
            model = _FlattenInput(model).eval()
            arrays = (arrays[0][:, None], arrays[1], arrays[2][:, None], arrays[3])
        explain_func = ExplainFunc(explainer, self.params["channel_reduction"]) if explainer is not None else None
        if self.draws_per_batch:
            scores = self._evaluate_one_by_one(model, *arrays, explain_func, own_seeds=True)
        else:
            try:
                scores = self._evaluate(model, *arrays, explain_func)
            except Exception as batch_error:  # one sample may break the batch: retry one by one
                if len(x) == 1:
                    raise
                log.warning("metric %s failed on the batch (%s); scoring samples one at a time", name, batch_error)
                scores = self._evaluate_one_by_one(model, *arrays, explain_func)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(x):
            raise RuntimeError(f"metric {name!r} returned {scores.shape[0]} scores for {len(x)} samples")
        scores[~np.isfinite(scores)] = np.nan
        return scores

    def _evaluate(self, model: nn.Module, x: np.ndarray, y: np.ndarray, a: np.ndarray,
                  s: Optional[np.ndarray], explain_func: Optional[ExplainFunc], seed: Optional[int] = None) -> np.ndarray:
        for name, of in self.count_params.items():
            self.effective[name] = resolve_count(name, self.params[name], int((x if of == "x" else a)[0].size))
        seed = self.params["seed"] if seed is None else seed
        metric = self.build(seed)
        with seeded(seed), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # Quantus warns once per sample and step
            raw = metric(model=model, x_batch=x, y_batch=y, a_batch=a.copy(), s_batch=s,
                         channel_first=True, explain_func=explain_func, explain_func_kwargs={},
                         softmax=self.params["softmax"], device=self.params["device"] or str(device_of(model)),
                         batch_size=self.params["batch_size"])
        return self.summarise(raw, metric)

    def _evaluate_one_by_one(self, model: nn.Module, x: np.ndarray, y: np.ndarray, a: np.ndarray,
                             s: Optional[np.ndarray], explain_func: Optional[ExplainFunc],
                             own_seeds: bool = False) -> np.ndarray:
        """Each sample in a call of its own (``own_seeds``: seeded from the run seed and the sample);
        a sample that fails scores NaN, and only a failure on every sample is raised."""
        scores = np.full(len(x), np.nan)
        last_error: Optional[Exception] = None
        for i in range(len(x)):
            one = slice(i, i + 1)
            seed = sample_seed(self.params["seed"], x[one], y[one]) if own_seeds else None
            try:
                scores[i] = self._evaluate(model, x[one], y[one], a[one], None if s is None else s[one],
                                           explain_func, seed)[0]
            except Exception as error:  # recorded as NaN, counted as n_nan downstream
                last_error = error
                log.warning("metric %s: sample %d scored NaN (%s)", self.info.name, i, error)
        if last_error is not None and np.isnan(scores).all():
            raise last_error
        return scores


# -- faithfulness ------------------------------------------------------------------------------

class FaithfulnessCorrelation(QuantusMetric):
    """Bhatt et al. (2020): correlation between the attribution summed over a random subset and
    the drop in the (logit) output when that subset is set to the baseline. Paper protocol:
    subset 16 of a 32x32 image, 100 runs, Pearson."""

    info = MetricInfo("faithfulness_correlation", "faithfulness", "higher", "signed", True)
    quantus_class = quantus.FaithfulnessCorrelation
    draws_per_batch = True
    tabular_as_sequence = True
    init_defaults = {"nr_runs": 100, "subset_size": 16, "similarity": "pearson", "perturb_baseline": "black"}
    count_params = {"subset_size": "x"}


class FaithfulnessEstimate(QuantusMetric):
    """Alvarez-Melis & Jaakkola (2018): correlation between each feature group's attribution and
    the output drop when removing it, groups taken in attribution order."""

    info = MetricInfo("faithfulness_estimate", "faithfulness", "higher", "signed", True)
    quantus_class = quantus.FaithfulnessEstimate
    tabular_as_sequence = True
    init_defaults = {"features_in_step": 16, "similarity": "pearson", "perturb_baseline": "black"}


class PixelFlipping(QuantusMetric):
    """Bach et al. (2015): the target probability as features are removed most relevant first,
    summarised as the area under that curve (:func:`curve_auc`): a faithful map makes it fall
    fast."""

    info = MetricInfo("pixel_flipping", "faithfulness", "lower", "signed", True)
    quantus_class = quantus.PixelFlipping
    tabular_as_sequence = True
    init_defaults = {"features_in_step": 16, "perturb_baseline": "black"}
    call_defaults = {"softmax": True}

    def summarise(self, raw: Any, metric: Any) -> np.ndarray:
        return curve_auc(np.asarray(raw, dtype=np.float64))


class MonotonicityCorrelation(QuantusMetric):
    """Nguyen & Martinez (2020): Spearman correlation between attribution magnitude and the
    variance of the output when that feature group is noised (absolute attributions)."""

    info = MetricInfo("monotonicity_correlation", "faithfulness", "higher", "absolute", True)
    quantus_class = quantus.MonotonicityCorrelation
    draws_per_batch = True
    tabular_as_sequence = True
    init_defaults = {"nr_samples": 10, "features_in_step": 16, "similarity": "spearman",
                     "perturb_baseline": "uniform", "eps": 1e-5}
    call_defaults = {"softmax": True}


class _ROADPerSample(quantus.ROAD):
    """Quantus' ROAD post-processing averages the first batch's curves over samples and drops the
    rest; keep every sample's curve instead."""

    def custom_postprocess(self, **kwargs: Any) -> None:
        self.evaluation_scores = np.concatenate([np.asarray(c) for c in self.evaluation_scores], axis=0)


class ROAD(QuantusMetric):
    """Rong et al. (2022): whether the prediction survives removing the top p% of features with
    noisy linear imputation, over ``percentages``; summarised per sample as the area under that
    0/1 curve over p (:func:`curve_auc`, MoRF order: lower is better). Images only."""

    info = MetricInfo("road", "faithfulness", "lower", "signed", True)
    quantus_class = _ROADPerSample
    draws_per_batch = True
    modalities = ("image",)
    init_defaults = {"percentages": list(range(5, 100, 10)), "noise": 0.01}

    def quantus_kwargs(self) -> dict[str, Any]:
        kwargs = super().quantus_kwargs()
        kwargs["percentages"] = list(kwargs["percentages"])
        return kwargs

    def summarise(self, raw: Any, metric: Any) -> np.ndarray:
        return curve_auc(np.asarray(metric.evaluation_scores, dtype=np.float64))


class Selectivity(QuantusMetric):
    """Montavon et al. (2018): the target probability as patches are removed in order of summed
    attribution, summarised as the area under that curve (:func:`curve_auc`). Images only."""

    info = MetricInfo("selectivity", "faithfulness", "lower", "signed", True)
    quantus_class = quantus.Selectivity
    modalities = ("image",)
    init_defaults = {"patch_size": 4, "perturb_baseline": "black"}
    call_defaults = {"softmax": True}

    def summarise(self, raw: Any, metric: Any) -> np.ndarray:
        return curve_auc(np.asarray(raw, dtype=np.float64))


# -- robustness --------------------------------------------------------------------------------

class MaxSensitivity(QuantusMetric):
    """Yeh et al. (2019): the largest relative change ||e(x) - e(x+u)|| / ||e(x)|| of the explanation
    over ``nr_samples`` draws of uniform noise u (``lower_bound`` 0.2 as in the paper; the paper
    draws 200 samples, the default here is smaller so that it finishes on a CPU)."""

    info = MetricInfo("max_sensitivity", "robustness", "lower", "signed", True)
    quantus_class = quantus.MaxSensitivity
    draws_per_batch = True
    needs_explainer = True
    init_defaults = {"nr_samples": 10, "lower_bound": 0.2}


class AvgSensitivity(QuantusMetric):
    """As :class:`MaxSensitivity`, averaged over the noise draws instead of maximised."""

    info = MetricInfo("avg_sensitivity", "robustness", "lower", "signed", True)
    quantus_class = quantus.AvgSensitivity
    draws_per_batch = True
    needs_explainer = True
    init_defaults = {"nr_samples": 10, "lower_bound": 0.2}


# -- randomisation -----------------------------------------------------------------------------

class RandomLogit(QuantusMetric):
    """Sixt et al. (2020): similarity (SSIM) between the explanation of the label and of a random
    other class; an explanation that ignores the class scores high, so lower is better.
    ``num_classes`` defaults to the explainer context's ``n_classes``.

    Both maps are compared as magnitudes (``attributions: absolute``): the question is whether the
    explanation points at other features for another class, not whether its sign convention flips.
    On signed maps, a method whose two class maps are negations of each other (gradient x input on
    a two-class model) would score -1, the "best" possible, while pointing at the same features.
    SSIM needs at least 7 features per side: the tabular table uses ``similarity: pearson`` (the
    correlation of the absolute attributions)."""

    info = MetricInfo("random_logit", "randomisation", "lower", "absolute", True)
    quantus_class = quantus.RandomLogit
    needs_explainer = True
    init_defaults = {"num_classes": None, "similarity": "ssim"}

    def _evaluate(self, model: nn.Module, x: np.ndarray, y: np.ndarray, a: np.ndarray,
                  s: Optional[np.ndarray], explain_func: Optional[ExplainFunc]) -> np.ndarray:
        if self.params["num_classes"] is None:  # from the explainer's context, as the harness built it
            self.params["num_classes"] = int(explain_func.explainer.context.n_classes)
        return super()._evaluate(model, x, y, a, s, explain_func)


class MPRT(QuantusMetric):
    """Adebayo et al. (2018), model-parameter randomisation: layers are re-initialised one after
    another from the top (cascading) and the explanation of each randomised model is compared with
    the original (Spearman, absolute maps). The per-sample score is the mean similarity over the
    randomised layers; an explanation that depends on the parameters scores low.

    Quantus' own ``return_average_correlation`` also averages in the un-randomised comparison (it
    skips a key named "orig", but stores "original"), hence the average is taken here."""

    info = MetricInfo("mprt", "randomisation", "lower", "absolute", True)
    quantus_class = quantus.MPRT
    needs_explainer = True
    init_defaults = {"layer_order": "top_down", "similarity": "spearman"}

    def summarise(self, raw: Any, metric: Any) -> np.ndarray:
        layers = [np.asarray(v, dtype=np.float64) for k, v in raw.items() if k != "original"]
        return np.nanmean(np.stack(layers, axis=1), axis=1)


# -- complexity --------------------------------------------------------------------------------

class Sparseness(QuantusMetric):
    """Chalasani et al. (2020): Gini index of the absolute attributions (1: all mass on one
    feature, 0: uniform)."""

    info = MetricInfo("sparseness", "complexity", "higher", "absolute", True)
    quantus_class = quantus.Sparseness


class Complexity(QuantusMetric):
    """Bhatt et al. (2020): entropy of the fractional contribution of each feature (absolute)."""

    info = MetricInfo("complexity", "complexity", "lower", "absolute", True)
    quantus_class = quantus.Complexity


# -- localisation ------------------------------------------------------------------------------

class _Localisation(QuantusMetric):
    """Localisation metrics score against ``ground_truth`` and raise without one; a sample whose
    mask is empty scores NaN."""

    needs_ground_truth = True

    def _evaluate(self, model: nn.Module, x: np.ndarray, y: np.ndarray, a: np.ndarray,
                  s: Optional[np.ndarray], explain_func: Optional[ExplainFunc]) -> np.ndarray:
        s = np.broadcast_to(s, a.shape).astype(np.float64)
        if a.ndim == 2:  # tabular: Quantus wants masks as (N, 1, ...); the model is not called
            x, a, s = x[:, None], a[:, None], s[:, None]
        scores = super()._evaluate(model, x, y, a, s, explain_func)
        scores[s.reshape(len(s), -1).sum(axis=1) == 0] = np.nan  # Quantus' PointingGame writes NaN
        return scores                                               # into a bool array (-> True)


class PointingGame(_Localisation):
    """Zhang et al. (2018): 1 if the highest attribution falls inside the ground-truth mask."""

    info = MetricInfo("pointing_game", "localisation", "higher", "signed", True)
    quantus_class = quantus.PointingGame
    init_defaults = {"weighted": False}


class AttributionLocalisation(_Localisation):
    """Kohlbrenner et al. (2020): the share of (absolute) attribution mass inside the mask."""

    info = MetricInfo("attribution_localisation", "localisation", "higher", "absolute", True)
    quantus_class = quantus.AttributionLocalisation
    init_defaults = {"weighted": False, "max_size": 1.0}


class TopKIntersection(_Localisation):
    """Theiner et al. (2021): the fraction of the k highest attributions inside the mask."""

    info = MetricInfo("top_k_intersection", "localisation", "higher", "signed", True)
    quantus_class = quantus.TopKIntersection
    init_defaults = {"k": 64}
    count_params = {"k": "a"}


class RelevanceRankAccuracy(_Localisation):
    """Arras et al. (2021): of the |mask| highest attributions, the fraction inside the mask."""

    info = MetricInfo("relevance_rank_accuracy", "localisation", "higher", "signed", True)
    quantus_class = quantus.RelevanceRankAccuracy


QUANTUS_METRICS: dict[str, type[QuantusMetric]] = {
    cls.info.name: cls for cls in (
        FaithfulnessCorrelation, FaithfulnessEstimate, PixelFlipping, MonotonicityCorrelation, ROAD,
        Selectivity, MaxSensitivity, AvgSensitivity, RandomLogit, MPRT, Sparseness, Complexity,
        PointingGame, AttributionLocalisation, TopKIntersection, RelevanceRankAccuracy,
    )
}
