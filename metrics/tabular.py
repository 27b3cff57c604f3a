"""The BEExAI tabular metric set, written from the definitions.

Rows are (N, F) and attributions (N, F). Features are ranked by attribution *per sample* and the
ranking is used as a list of feature indices (``argsort``), never as positions: the reference
evaluation package of the paper masked the first k columns instead of the top-k features.

Common parameters: ``output`` ("probability": softmax of the logits, the default, or "logit") is
what is read off for the target class; ``baseline`` ("zero", "batch_mean": the per-feature mean
of the rows being scored, or a number) is what a removed feature is set to. Every metric stacks
all its perturbations and calls the model once per batch of at most ``chunk_size`` rows.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from baselines.base import for_scoring
from baselines.vocabulary import check_choice
from metrics.base import Metric, MetricInfo

OUTPUTS = ("probability", "logit")
# The run's ``output`` setting (what every method explains) names the same two functions.
OUTPUT_ALIASES = {"softmax": "probability", "logits": "logit"}
# channel_reduction is accepted so the harness can build every metric alike; rows have no channels.
COMMON_PARAMS: dict[str, Any] = {"output": "probability", "baseline": "zero", "chunk_size": 4096,
                                 "channel_reduction": "sum", "max_samples": None}


def _as_tensor(t: Any) -> Tensor:
    return t.detach().float().cpu() if isinstance(t, Tensor) else torch.as_tensor(np.asarray(t), dtype=torch.float32)


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation; NaN where either row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1.0), np.nan)


class TabularMetric(Metric):
    """Shared machinery: parameter checks, target scores on stacked perturbations, baselines."""

    defaults: ClassVar[dict[str, Any]] = {}
    modalities: ClassVar[tuple[str, ...]] = ("tabular",)  # (N, F) rows of numbers

    def __init__(self, **params: Any) -> None:
        allowed = {**COMMON_PARAMS, **self.defaults}
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for metric {self.info.name!r}; "
                             f"valid: {', '.join(sorted(allowed))}")
        merged = {**allowed, **params}
        merged["output"] = OUTPUT_ALIASES.get(merged["output"], merged["output"])
        check_choice("output", merged["output"], OUTPUTS)
        baseline = merged["baseline"]
        if not (baseline in ("zero", "batch_mean") or isinstance(baseline, (int, float))):
            raise ValueError(f"unknown baseline {baseline!r}; choose one of: zero, batch_mean, or a number")
        super().__init__(**merged)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, a: Tensor,
                 explainer: Optional[Any] = None, ground_truth: Optional[Tensor] = None) -> np.ndarray:
        if x.ndim != 2 or tuple(a.shape) != tuple(x.shape):
            raise ValueError(f"metric {self.info.name!r} takes tabular rows (N, F) with attributions of the "
                             f"same shape; got x {tuple(x.shape)} and a {tuple(a.shape)}")
        model.eval()
        x_t, a_np = _as_tensor(x), _as_tensor(a).cpu().numpy().astype(np.float64)
        y_t = torch.as_tensor(y).long().reshape(-1).cpu()
        with torch.no_grad(), np.errstate(all="ignore"):
            scores = np.asarray(self.compute(model, x_t, y_t, a_np, explainer), dtype=np.float64)
        scores[~np.isfinite(scores)] = np.nan
        return scores

    def compute(self, model: nn.Module, x: Tensor, y: Tensor, a: np.ndarray, explainer: Optional[Any]) -> np.ndarray:
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------
    def scores(self, model: nn.Module, rows: Tensor, targets: Tensor) -> np.ndarray:
        """The model's output for ``targets[i]`` on ``rows[i]``, in chunks of ``chunk_size``."""
        device = next(iter(model.parameters()), torch.empty(0)).device
        out = []
        for start in range(0, len(rows), int(self.params["chunk_size"])):
            logits = model(rows[start:start + int(self.params["chunk_size"])].to(device)).float().cpu()
            out.append(logits)
        logits = torch.cat(out)
        if self.params["output"] == "probability":
            if logits.shape[1] == 1:  # one sigmoid unit: class 1 = p, class 0 = 1 - p
                p1 = torch.sigmoid(logits)
                logits = torch.cat([1 - p1, p1], dim=1)
            else:
                logits = torch.softmax(logits, dim=1)
        return logits.gather(1, targets.reshape(-1, 1)).reshape(-1).double().numpy()

    def baseline(self, x: Tensor) -> Tensor:
        """A (N, F) tensor of the values removed features are set to."""
        b = self.params["baseline"]
        if b == "zero":
            return torch.zeros_like(x)
        if b == "batch_mean":
            return x.mean(0, keepdim=True).expand_as(x)
        return torch.full_like(x, float(b))

    @staticmethod
    def ranking(a: np.ndarray, descending: bool = True) -> np.ndarray:
        """Per-row feature indices ordered by attribution (stable, so ties keep column order)."""
        return np.argsort(-a if descending else a, axis=1, kind="stable")


def _masked(x: Tensor, base: Tensor, masks: np.ndarray) -> Tensor:
    """Rows of ``x`` with features where ``masks`` is True replaced by the baseline.
    ``masks`` is (N, S, F): S perturbations per sample; returns (N * S, F)."""
    m = torch.from_numpy(np.array(masks, dtype=bool))
    xs = x[:, None, :].expand(-1, m.shape[1], -1)
    bs = base[:, None, :].expand(-1, m.shape[1], -1)
    return torch.where(m, bs, xs).reshape(-1, x.shape[1])


def _top_k_masks(order: np.ndarray, ks: Sequence[int], n_features: int) -> np.ndarray:
    """(N, len(ks), F) masks selecting, per sample, the features ``order[:, :k]`` (indices)."""
    n = order.shape[0]
    masks = np.zeros((n, len(ks), n_features), dtype=bool)
    for j, k in enumerate(ks):
        rows = np.repeat(np.arange(n), k)
        masks[rows, j, order[:, :k].reshape(-1)] = True
    return masks


def resolve_ks(ks: Sequence[Union[int, float]], n_features: int) -> list[int]:
    """Integers are counts; floats in (0, 1] are fractions of the features (rounded up, >= 1)."""
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            raise ValueError(f"bad k {k!r}; use an integer count or a fraction in (0, 1]")
        if isinstance(k, float):
            if not 0 < k <= 1:
                raise ValueError(f"bad k {k!r}; a fractional k must lie in (0, 1]")
            k = max(1, int(np.ceil(k * n_features)))
        if not 1 <= k <= n_features:
            raise ValueError(f"bad k {k!r}; with {n_features} features choose 1 <= k <= {n_features}")
        out.append(int(k))
    return out


class TabularFaithfulnessCorrelation(TabularMetric):
    """Per sample, Pearson correlation between each feature's attribution and the drop in the
    target output when that feature alone is set to the baseline (drop-one)."""

    info = MetricInfo("tabular_faithfulness_correlation", "faithfulness", "higher", "signed", True)

    def compute(self, model, x, y, a, explainer):
        n, f = x.shape
        masks = np.broadcast_to(np.eye(f, dtype=bool), (n, f, f))
        full = self.scores(model, x, y)
        dropped = self.scores(model, _masked(x, self.baseline(x), masks), y.repeat_interleave(f))
        return pearson_rows(a, full[:, None] - dropped.reshape(n, f))


class Infidelity(TabularMetric):
    """Yeh et al. (2019): E_I[(I . a - (f(x) - f(x - I)))^2] with I ~ N(0, ``noise_std``^2 Id),
    ``n_perturbations`` draws from a generator seeded with ``seed``. With ``scale="optimal"``
    (the default) the attribution is first rescaled by the least-squares factor
    beta = E[(I.a) d] / E[(I.a)^2] (Yeh et al.'s normalised form), so methods whose attributions
    live on different scales (e.g. relevance x100) are compared on shape; "none" keeps a as is."""

    info = MetricInfo("infidelity", "faithfulness", "lower", "signed", True)
    defaults = {"n_perturbations": 64, "noise_std": 0.1, "seed": 0, "scale": "optimal"}

    def compute(self, model, x, y, a, explainer):
        check_choice("scale", self.params["scale"], ("optimal", "none"))
        n, f = x.shape
        s = int(self.params["n_perturbations"])
        gen = torch.Generator().manual_seed(int(self.params["seed"]))
        noise = torch.randn(n, s, f, generator=gen) * float(self.params["noise_std"])
        full = self.scores(model, x, y)
        perturbed = self.scores(model, (x[:, None, :] - noise).reshape(-1, f), y.repeat_interleave(s))
        delta = full[:, None] - perturbed.reshape(n, s)                 # f(x) - f(x - I)
        dot = np.einsum("nsf,nf->ns", noise.double().numpy(), a)         # I . a
        if self.params["scale"] == "optimal":
            denom = (dot * dot).mean(axis=1)
            beta = np.where(denom > 0, (dot * delta).mean(axis=1) / np.where(denom > 0, denom, 1.0), 0.0)
            dot = dot * beta[:, None]
        return ((dot - delta) ** 2).mean(axis=1)


class TabularSensitivity(TabularMetric):
    """Max relative change of the explanation, max_u ||e(x + u) - a|| / ||a||, over ``n_samples``
    draws of u ~ U(-``radius``, ``radius``)^F (seeded). Re-runs the explainer on all perturbed
    rows in one call."""

    info = MetricInfo("tabular_sensitivity", "robustness", "lower", "signed", True)
    defaults = {"n_samples": 10, "radius": 0.1, "seed": 0}

    def compute(self, model, x, y, a, explainer):
        if explainer is None:
            raise ValueError(f"metric {self.info.name!r} re-runs the explainer: pass explainer=<baselines.base.Explainer>")
        n, f = x.shape
        s = int(self.params["n_samples"])
        r = float(self.params["radius"])
        gen = torch.Generator().manual_seed(int(self.params["seed"]))
        u = (torch.rand(n, s, f, generator=gen) * 2 - 1) * r
        rows = (x[:, None, :] + u).reshape(-1, f)
        with torch.enable_grad():
            e = explainer(rows.to(explainer.context.device), y.repeat_interleave(s).to(explainer.context.device))
        e = for_scoring(e.values, explainer.signed).detach().cpu().double().numpy().reshape(n, s, f)
        norm = np.linalg.norm(a, axis=1)
        change = np.linalg.norm(e - a[:, None, :], axis=2).max(axis=1)
        return np.where(norm > 0, change / np.where(norm > 0, norm, 1.0), np.nan)


class Comprehensiveness(TabularMetric):
    """DeYoung et al. (2020): f(x) - f(x without its top-k features), averaged over ``ks``.
    Top-k = the k largest attributions of that sample (``rank_by`` "signed" or "absolute")."""

    info = MetricInfo("comprehensiveness", "faithfulness", "higher", "signed", True)
    defaults = {"ks": [0.1, 0.2, 0.3, 0.4, 0.5], "rank_by": "signed"}
    keep_top: ClassVar[bool] = False

    def compute(self, model, x, y, a, explainer):
        check_choice("rank_by", self.params["rank_by"], ("signed", "absolute"))
        n, f = x.shape
        ks = resolve_ks(list(self.params["ks"]), f)
        order = self.ranking(np.abs(a) if self.params["rank_by"] == "absolute" else a)
        masks = _top_k_masks(order, ks, f)
        if self.keep_top:
            masks = ~masks
        full = self.scores(model, x, y)
        perturbed = self.scores(model, _masked(x, self.baseline(x), masks), y.repeat_interleave(len(ks)))
        return (full[:, None] - perturbed.reshape(n, len(ks))).mean(axis=1)


class Sufficiency(Comprehensiveness):
    """DeYoung et al. (2020): f(x) - f(x keeping only its top-k features), averaged over ``ks``."""

    info = MetricInfo("sufficiency", "faithfulness", "lower", "signed", True)
    keep_top = True


class TabularMonotonicity(TabularMetric):
    """BEExAI / Arya et al. (2019): starting from the baseline, add the features back one at a
    time from the least to the most attributed; with d_i the output gain of step i, the score is
    the fraction of steps where d_{i+1} >= d_i - ``tolerance`` (1: more attribution, more gain)."""

    info = MetricInfo("tabular_monotonicity", "faithfulness", "higher", "signed", True)
    defaults = {"tolerance": 1e-6}

    def compute(self, model, x, y, a, explainer):
        n, f = x.shape
        if f < 3:
            return np.full(n, np.nan)
        order = self.ranking(a, descending=False)
        # step j (0..F): the features order[:, j:] are still at the baseline
        masks = np.ones((n, f + 1, f), dtype=bool)
        for j in range(1, f + 1):
            masks[np.arange(n)[:, None], np.arange(j, f + 1)[None, :], order[:, j - 1:j]] = False
        curve = self.scores(model, _masked(x, self.baseline(x), masks), y.repeat_interleave(f + 1)).reshape(n, f + 1)
        gains = np.diff(curve, axis=1)
        return (np.diff(gains, axis=1) >= -float(self.params["tolerance"])).mean(axis=1)


class _PerturbationCurveAUC(TabularMetric):
    """Remove features one at a time in attribution order (most relevant first for MoRF, least
    relevant first for LeRF); the area under the target output over the fraction removed,
    from the intact row (0) to the all-baseline row (1)."""

    most_relevant_first: ClassVar[bool]

    def compute(self, model, x, y, a, explainer):
        n, f = x.shape
        order = self.ranking(a, descending=self.most_relevant_first)
        masks = np.zeros((n, f + 1, f), dtype=bool)
        for j in range(1, f + 1):
            masks[np.arange(n)[:, None], np.arange(j, f + 1)[None, :], order[:, j - 1:j]] = True
        curve = self.scores(model, _masked(x, self.baseline(x), masks), y.repeat_interleave(f + 1)).reshape(n, f + 1)
        return np.trapezoid(curve, x=np.linspace(0.0, 1.0, f + 1), axis=1)


class MoRFAUC(_PerturbationCurveAUC):
    __doc__ = _PerturbationCurveAUC.__doc__
    info = MetricInfo("morf_auc", "faithfulness", "lower", "signed", True)
    most_relevant_first = True


class LeRFAUC(_PerturbationCurveAUC):
    __doc__ = _PerturbationCurveAUC.__doc__
    info = MetricInfo("lerf_auc", "faithfulness", "higher", "signed", True)
    most_relevant_first = False


TABULAR_METRICS: dict[str, type[TabularMetric]] = {
    cls.info.name: cls for cls in (
        TabularFaithfulnessCorrelation, Infidelity, TabularSensitivity, Comprehensiveness, Sufficiency,
        TabularMonotonicity, MoRFAUC, LeRFAUC,
    )
}
