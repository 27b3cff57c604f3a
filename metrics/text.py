"""The text metric set: ERASER faithfulness, deletion curves, rationale agreement and two checks
that re-explain (class sensitivity, randomisation), written from their definitions.

Inputs are right-padded token ids ``(N, L)`` with attributions ``(N, L)``; the features are the
tokens :meth:`experiments.zoo.text_models.TextClassifier.feature_mask` marks (never ``[CLS]``,
``[SEP]`` or padding): only they are ranked, deleted, scored or compared, so a sample's score does
not depend on its padding. Tokens are ranked highest first, ties in position order.

What a metric ranks follows its declared ``info.attributions``. The faithfulness metrics
(``signed``) rank the attributions as given: signed for signed methods (a token that argues
against the class is deleted last), magnitudes for unsigned ones (the runner passes those).
Agreement with the rationale and the two similarity checks (``absolute``) rank magnitudes ``|a|``
for every method: the rationale marks what matters, whichever way, and a map that only flips
sign with the class or the weights still points at the same tokens.

Common parameters: ``output`` (``softmax``: the target's probability, or ``logits``: its logit;
the run's setting) is what is read off the model; ``deletion`` is how a token is deleted:
``mask`` replaces it by ``[MASK]``, ``remove`` drops it and re-packs the sequence (the remaining
tokens close up, padding stays on the right, the width is kept). Every metric stacks all its
perturbed sequences of the batch and runs each distinct one once, in chunks of ``chunk_size``
rows trimmed to their widest real sequence; the metrics of one run share those outputs through
the explainer's memo (see :meth:`TextMetric.logits`).

ferret-xai 0.4.2 is not used: it pins numpy<2, transformers<5, captum<0.8, shap<0.45 and
pandas<3, and its AOPC drops bins whose rationale repeats, floors k and re-tokenises decoded text.
"""
from __future__ import annotations

import copy
import math
import warnings
from fractions import Fraction
from typing import Any, ClassVar, Optional, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import auc, average_precision_score, precision_recall_curve
from torch import Tensor, nn

from baselines.vocabulary import CLASS_OUTPUTS, check_choice, device_of, seeded
from metrics.base import Metric, MetricInfo
from metrics.explain_adapter import ExplainFunc

DELETIONS = ("mask", "remove")
COMMON_PARAMS: dict[str, Any] = {"output": "softmax", "chunk_size": 256, "channel_reduction": "sum",
                                 "max_samples": None}


# -- deletion, ranking, model calls ------------------------------------------------------------

def delete_tokens(ids: Tensor, drop: Tensor, deletion: str, mask_token_id: int, pad_token_id: int) -> Tensor:
    """``ids`` with the tokens where ``drop`` is True deleted, by ``[MASK]`` replacement
    (``mask``) or by removal with the rest closed up and right-padded to the same width
    (``remove``)."""
    check_choice("deletion", deletion, DELETIONS)
    if deletion == "mask":
        return torch.where(drop, torch.full_like(ids, mask_token_id), ids)
    keep = ~drop & ids.ne(pad_token_id)
    # a stable sort on "not kept" brings the kept tokens to the front in their original order
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    out = ids.gather(1, order)
    positions = torch.arange(ids.shape[1], device=ids.device)[None, :]
    return out.masked_fill(positions >= keep.sum(1, keepdim=True), pad_token_id)


def feature_ranks(a: Tensor, feature: Tensor, most_relevant_first: bool = True) -> Tensor:
    """Per token, its rank among the sample's feature tokens (0: first to delete); ties keep
    position order. Non-feature tokens get ranks at or above the sample's feature count."""
    key = (-a if most_relevant_first else a).masked_fill(~feature, math.inf)
    order = torch.argsort(key, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(a.shape[1]).expand_as(order).contiguous())
    return ranks


def bin_sizes(percentages: Sequence[float], n_features: Tensor) -> Tensor:
    """(N, B) token counts of the top-p% bins: ceil(p / 100 * n), at least 1 and at most n
    (0 for a sample without feature tokens), computed in exact arithmetic."""
    n = [int(v) for v in n_features.tolist()]
    fracs = [Fraction(str(p)) / 100 for p in percentages]
    return torch.tensor([[min(m, max(1, math.ceil(f * m))) if m else 0 for f in fracs] for m in n],
                        dtype=torch.long).reshape(len(n), len(fracs))


def spearman_rows(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per row, Spearman's rank correlation of ``a`` and ``b`` over the entries ``keep`` marks;
    NaN where fewer than two are kept or either side is constant there."""
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        u, v = a[i][keep[i]], b[i][keep[i]]
        if len(u) >= 2 and np.ptp(u) > 0 and np.ptp(v) > 0:
            out[i] = spearmanr(u, v).statistic
    return out


# -- the metrics --------------------------------------------------------------------------------

class TextMetric(Metric):
    """Shared machinery: parameter checks, input checks, the feature mask, target outputs."""

    defaults: ClassVar[dict[str, Any]] = {}
    needs_explainer: ClassVar[bool] = False
    needs_ground_truth: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        allowed = {**COMMON_PARAMS, **self.defaults}
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for metric {self.info.name!r}; "
                             f"valid: {', '.join(sorted(allowed))}")
        merged = {**allowed, **params}
        check_choice("output", merged["output"], CLASS_OUTPUTS)  # text models are classifiers
        if "deletion" in merged:
            check_choice("deletion", merged["deletion"], DELETIONS)
        chunk = merged["chunk_size"]
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"bad chunk_size {chunk!r} for metric {self.info.name!r}; use a positive integer")
        super().__init__(**merged)
        self.summary: dict[str, Any] = {}
        self._memo: Optional[dict] = None  # the run's memo during a call (see logits)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.summary}

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, a: Tensor,
                 explainer: Optional[Any] = None, ground_truth: Optional[Tensor] = None) -> np.ndarray:
        name = self.info.name
        x = torch.as_tensor(x).detach().cpu()
        a = torch.as_tensor(a).detach().cpu().double()
        if x.ndim != 2 or x.dtype.is_floating_point or x.dtype == torch.bool:
            raise ValueError(f"metric {name!r} takes token ids (N, L) of an integer dtype; "
                             f"got {x.dtype} of shape {tuple(x.shape)}")
        if tuple(a.shape) != tuple(x.shape):
            raise ValueError(f"metric {name!r} takes attributions shaped like the ids {tuple(x.shape)}; "
                             f"got {tuple(a.shape)}")
        if not bool(torch.isfinite(a).all()):
            raise ValueError(f"metric {name!r}: attributions hold non-finite values; they are refused")
        if self.info.attributions == "absolute":
            a = a.abs()   # the metric compares magnitudes, whatever the method's sign (module docstring)
        if not callable(getattr(model, "feature_mask", None)):
            raise ValueError(f"metric {name!r} needs a text model with feature_mask(ids) "
                             f"(experiments.zoo.text_models.TextClassifier); got {type(model).__name__}")
        if self.needs_explainer and explainer is None:
            raise ValueError(f"metric {name!r} re-runs the explainer: pass explainer=<baselines.base.Explainer>")
        if self.needs_ground_truth:
            if ground_truth is None:
                raise ValueError(f"metric {name!r} needs ground_truth (a rationale mask (N, L)); "
                                 "use it only on datasets that have one")
            ground_truth = torch.as_tensor(ground_truth).detach().cpu()
            if tuple(ground_truth.shape) != tuple(x.shape):
                raise ValueError(f"metric {name!r}: ground_truth of shape {tuple(ground_truth.shape)} does not "
                                 f"match the ids {tuple(x.shape)}")
        x = x.long()
        y = torch.as_tensor(y).detach().cpu().long().reshape(-1)
        if len(y) != len(x):
            raise ValueError(f"metric {name!r}: {len(y)} targets for {len(x)} samples; give one target per sample")
        model.eval()
        feature = model.feature_mask(x.to(device_of(model))).cpu().bool()
        memo = getattr(explainer, "memo", None)
        self._memo = memo if isinstance(memo, dict) else None
        try:
            with np.errstate(all="ignore"):
                scores = np.asarray(self.compute(model, x, y, a, feature, explainer, ground_truth), dtype=np.float64)
        finally:
            self._memo = None
        scores = scores.reshape(-1)
        if scores.shape[0] != len(x):
            raise RuntimeError(f"metric {name!r} returned {scores.shape[0]} scores for {len(x)} samples")
        scores[~np.isfinite(scores)] = np.nan
        return scores

    def compute(self, model: nn.Module, x: Tensor, y: Tensor, a: Tensor, feature: Tensor,
                explainer: Optional[Any], ground_truth: Optional[Tensor]) -> np.ndarray:
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, model: nn.Module, ids: Tensor) -> Tensor:
        """The model's logits on ``ids``: each distinct sequence once (deletion bins and curve
        steps often repeat one, e.g. the top 1 % and 5 % of a short sentence), shortest first in
        chunks of ``chunk_size`` rows, each chunk trimmed to its widest real sequence (the
        padding after it changes nothing).

        Where the explainer passed in carries a ``memo`` dict (the runner gives it one for the
        run), the logits of every sequence are kept there, keyed by the model and the sequence
        without its padding, so the metrics of one run share them: MoRF's steps are
        comprehensiveness's bins, the unperturbed sentence is read by all of them."""
        device, pad = device_of(model), int(model.pad_token_id)
        if len(ids) == 0:
            return torch.zeros(0, 0)
        distinct, inverse = torch.unique(ids, dim=0, return_inverse=True)
        lengths = distinct.ne(pad).sum(1)
        real = distinct.ne(pad)
        ends = torch.where(real.any(1), real.shape[1] - real.flip(1).int().argmax(1), 0)
        memo = self._memo
        keys = ([("text-logits", id(model), distinct[i, :int(ends[i])].numpy().tobytes()) for i in range(len(distinct))]
                if memo is not None else None)
        known = [k in memo for k in keys] if keys is not None else [False] * len(distinct)
        todo = torch.tensor([i for i, hit in enumerate(known) if not hit], dtype=torch.long)
        order = todo[torch.argsort(lengths[todo], stable=True)]
        out: Optional[Tensor] = None
        step = int(self.params["chunk_size"])
        for start in range(0, len(order), step):
            rows = order[start:start + step]
            width = max(1, int(ends[rows].max()))
            logits = model(distinct[rows][:, :width].to(device)).float().cpu()
            if out is None:
                out = torch.empty(len(distinct), logits.shape[1])
            out[rows] = logits
            if keys is not None:
                for r, row in zip(rows.tolist(), logits):
                    memo[keys[r]] = row.clone()
        if keys is not None and any(known):
            cached = {i: memo[keys[i]] for i, hit in enumerate(known) if hit}
            if out is None:
                out = torch.empty(len(distinct), len(next(iter(cached.values()))))
            for i, row in cached.items():
                out[i] = row
        return out[inverse]

    def target_output(self, model: nn.Module, ids: Tensor, targets: Tensor) -> np.ndarray:
        """What the metric reads: the target's softmax probability or its logit, per row."""
        logits = self.logits(model, ids)
        if self.params["output"] == "softmax":
            logits = torch.softmax(logits, dim=1)
        return logits.gather(1, targets.reshape(-1, 1)).reshape(-1).double().numpy()

    def perturbed_outputs(self, model: nn.Module, x: Tensor, y: Tensor, drops: Tensor) -> np.ndarray:
        """(N, S) target outputs with the tokens ``drops[:, s]`` (N, S, L) deleted; one stack of
        all N * S sequences."""
        n, s, length = drops.shape
        ids = x[:, None, :].expand(n, s, length).reshape(-1, length)
        ids = delete_tokens(ids, drops.reshape(-1, length), self.params["deletion"], int(model.mask_token_id),
                            int(model.pad_token_id))
        return self.target_output(model, ids, y.repeat_interleave(s)).reshape(n, s)


class TextComprehensiveness(TextMetric):
    """DeYoung et al. (2020): f(x) - f(x without its top-k feature tokens) for the top 1, 5, 10, 20
    and 50 % of the sample's feature tokens (k = ceil(p / 100 * n), at least one token), and the
    per-sample score is their AOPC: the plain mean over the bins. The per-bin means over the
    scored samples are recorded under ``per_bin``. NaN for a sample without feature tokens."""

    info = MetricInfo("text_comprehensiveness", "faithfulness", "higher", "signed", True)
    defaults = {"percentages": [1, 5, 10, 20, 50], "deletion": "mask"}
    keep_top: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        ps = self.params["percentages"]
        if not isinstance(ps, (list, tuple)) or not ps or any(
                isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100 for p in ps):
            raise ValueError(f"bad percentages {ps!r} for metric {self.info.name!r}; "
                             "use a non-empty list of numbers in (0, 100]")
        self.last_bins: Optional[np.ndarray] = None

    def compute(self, model, x, y, a, feature, explainer, ground_truth):
        n_feat = feature.sum(1)
        ks = bin_sizes(self.params["percentages"], n_feat)                  # (N, B)
        top = feature[:, None, :] & (feature_ranks(a, feature)[:, None, :] < ks[:, :, None])  # (N, B, L)
        drops = (feature[:, None, :] & ~top) if self.keep_top else top
        full = self.target_output(model, x, y)
        bins = full[:, None] - self.perturbed_outputs(model, x, y, drops)
        bins[n_feat.numpy() == 0] = np.nan
        self.last_bins = bins
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a batch with no feature tokens at all
            means = np.nanmean(bins, axis=0)
        self.summary = {"per_bin": {str(p): (None if np.isnan(m) else float(m))
                                    for p, m in zip(self.params["percentages"], means)}}
        return bins.mean(axis=1)


class TextSufficiency(TextComprehensiveness):
    """DeYoung et al. (2020): f(x) - f(x keeping only its top-k feature tokens; every other
    feature token deleted, special tokens kept), over the same bins as comprehensiveness; the
    per-sample score is the mean over the bins (AOPC)."""

    info = MetricInfo("text_sufficiency", "faithfulness", "lower", "signed", True)
    keep_top = True


class _DeletionCurveAUC(TextMetric):
    """Delete the sample's n feature tokens in attribution order (most relevant first for MoRF,
    least relevant first for LeRF) and read the target output after j = 0..n of them are
    deleted; the score is the trapezoid area under that curve over x = j / n, i.e. normalised by
    the number of feature tokens: the curve's mean height, comparable across sentence lengths.
    ``steps: null`` reads the curve after every token; ``steps: s`` (an integer) only at the
    deleted counts j = round(i * n / s), i = 0..s (every token where n <= s), which bounds the
    cost at s + 1 sequences a sample. NaN for a sample without feature tokens."""

    defaults = {"deletion": "mask", "steps": None}
    most_relevant_first: ClassVar[bool]

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        steps = self.params["steps"]
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"bad steps {steps!r} for metric {self.info.name!r}; use a positive integer or null")

    def counts(self, n_feat: Tensor) -> tuple[Tensor, Tensor]:
        """(N, S) numbers of tokens deleted at each point of a sample's curve, and which of the S
        points the sample has (rows are padded with their last count)."""
        s = self.params["steps"]
        per_sample = []
        for n in n_feat.tolist():
            if s is None or n <= s:
                per_sample.append(list(range(n + 1)))
            else:  # round(i * n / s), halves up, in integers
                per_sample.append(sorted({(2 * i * n + s) // (2 * s) for i in range(s + 1)}))
        width = max(len(c) for c in per_sample)
        counts = torch.tensor([c + [c[-1]] * (width - len(c)) for c in per_sample], dtype=torch.long)
        valid = torch.tensor([[j < len(c) for j in range(width)] for c in per_sample])
        return counts.reshape(len(per_sample), width), valid.reshape(len(per_sample), width)

    def compute(self, model, x, y, a, feature, explainer, ground_truth):
        n_feat = feature.sum(1)
        if len(x) == 0:
            return np.zeros(0)
        counts, valid = self.counts(n_feat)
        ranks = feature_ranks(a, feature, self.most_relevant_first)
        drops = feature[:, None, :] & (ranks[:, None, :] < counts[:, :, None])   # (N, S, L)
        flat = self.perturbed_outputs_subset(model, x, y, drops, valid)
        curves = np.full(counts.shape, np.nan)
        curves[valid.numpy()] = flat
        out = np.full(len(x), np.nan)
        for i, n in enumerate(n_feat.tolist()):
            if n:
                m = int(valid[i].sum())
                out[i] = np.trapezoid(curves[i, :m], x=counts[i, :m].numpy() / n)
        return out

    def perturbed_outputs_subset(self, model, x, y, drops, valid) -> np.ndarray:
        """Target outputs of the rows ``valid`` selects (the steps a sample has), in one stack."""
        n, s, length = drops.shape
        rows = valid.nonzero()
        ids = delete_tokens(x[rows[:, 0]], drops[rows[:, 0], rows[:, 1]], self.params["deletion"],
                            int(model.mask_token_id), int(model.pad_token_id))
        return self.target_output(model, ids, y[rows[:, 0]])


class TextMoRFAUC(_DeletionCurveAUC):
    __doc__ = _DeletionCurveAUC.__doc__
    info = MetricInfo("text_morf_auc", "faithfulness", "lower", "signed", True)
    most_relevant_first = True


class TextLeRFAUC(_DeletionCurveAUC):
    __doc__ = _DeletionCurveAUC.__doc__
    info = MetricInfo("text_lerf_auc", "faithfulness", "higher", "signed", True)
    most_relevant_first = False


class _RationaleAgreement(TextMetric):
    """Agreement with the ground-truth rationale, on magnitudes ``|a|`` over the feature tokens;
    NaN where the sample's rationale (on feature tokens) is empty. The model is not called."""

    needs_ground_truth = True

    def compute(self, model, x, y, a, feature, explainer, ground_truth):
        gt = ground_truth.bool() & feature
        return self.agreement(a, feature, gt)

    def agreement(self, a: Tensor, feature: Tensor, gt: Tensor) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def per_sample(a: Tensor, feature: Tensor, gt: Tensor, score: Any) -> np.ndarray:
        """``score(truth, scores)`` on each sample's feature tokens; NaN without a rationale."""
        out = np.full(len(a), np.nan)
        for i in range(len(a)):
            truth = gt[i][feature[i]].numpy()
            if truth.any():
                out[i] = score(truth, a[i][feature[i]].numpy())
        return out


class TokenAveragePrecision(_RationaleAgreement):
    """Per sample, sklearn's average precision of ``|a|`` as scores for the rationale tokens:
    the mean precision at each rationale token's rank (tied scores share a threshold). ERASER's
    ``average_precision`` field computes the same number."""

    info = MetricInfo("token_average_precision", "localisation", "higher", "absolute", True)

    def agreement(self, a, feature, gt):
        return self.per_sample(a, feature, gt, average_precision_score)


def trapezoid_pr_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """The trapezoid area under sklearn's precision-recall curve (what ERASER reports as
    ``auprc``): precision interpolated linearly between the curve's points, where average
    precision takes the precision reached at the end of each recall step."""
    precision, recall, _ = precision_recall_curve(truth, scores)
    return float(auc(recall, precision))


class TokenAUPRCTrapezoid(_RationaleAgreement):
    """Per sample, the trapezoid area under the precision-recall curve of ``|a|`` for the
    rationale tokens (ERASER's ``auprc``, :func:`trapezoid_pr_auc`). Without tied scores it is at
    most the average precision (a step that adds a rationale token never lowers precision, so
    the straight line lies under the step); tied scores can put it above."""

    info = MetricInfo("token_auprc_trapezoid", "localisation", "higher", "absolute", True)

    def agreement(self, a, feature, gt):
        return self.per_sample(a, feature, gt, trapezoid_pr_auc)


class TokenRPrecision(_RationaleAgreement):
    """R-precision: the share of rationale tokens among the k feature tokens of largest ``|a|``
    (ties in position order), k = the rationale's own size (an oracle k: it reads the gold
    rationale). With as many chosen as true tokens, precision = recall = F1 = hits / k."""

    info = MetricInfo("token_r_precision", "localisation", "higher", "absolute", True)

    def agreement(self, a, feature, gt):
        k = gt.sum(1)
        chosen = feature & (feature_ranks(a, feature) < k[:, None])
        hits = (chosen & gt).sum(1).double()
        return torch.where(k > 0, hits / k.clamp(min=1), torch.nan).numpy()


class TokenHardF1(_RationaleAgreement):
    """ERASER's token-level F1 of a hard rationale (instance-level, then averaged over samples):
    the hard rationale is the k feature tokens of largest ``|a|`` (ties in position order),
    k = ceil(fraction x the sample's feature tokens), at least one, without reading the gold
    rationale; F1 = 2PR / (P + R) with P = hits / k and R = hits / |rationale| (0 without a hit)."""

    info = MetricInfo("token_hard_f1", "localisation", "higher", "absolute", True)
    defaults = {"fraction": 0.1}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        f = self.params["fraction"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise ValueError(f"bad fraction {f!r} for metric {self.info.name!r}; use a number in (0, 1]")

    def agreement(self, a, feature, gt):
        # the fraction as a percentage in exact arithmetic (100 * 0.07 is 7.000000000000001 in floats)
        k = bin_sizes([Fraction(str(self.params["fraction"])) * 100], feature.sum(1))[:, 0]
        chosen = feature & (feature_ranks(a, feature) < k[:, None])
        hits = (chosen & gt).sum(1).double()
        size = gt.sum(1)
        precision = hits / k.clamp(min=1)
        recall = hits / size.clamp(min=1)
        f1 = torch.where(hits > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-300), 0.0)
        return torch.where(size > 0, f1, torch.nan).numpy()


class _ReExplaining(TextMetric):
    """Re-explains through the explainer passed in (:class:`metrics.explain_adapter.ExplainFunc`:
    the same preparation as the scored attributions, global random generators left as found) and
    compares the magnitudes of the two maps by Spearman's rank correlation over the feature tokens
    (scale-free, so methods with different attribution scales compare alike); NaN where either
    map is constant there."""

    needs_explainer = True

    @staticmethod
    def maps(a: np.ndarray) -> np.ndarray:
        return np.abs(a)

    def explain(self, explainer: Any, model: nn.Module, x: Tensor, targets: Tensor) -> np.ndarray:
        fn = ExplainFunc(explainer, self.params["channel_reduction"])
        return fn(model, x.numpy(), targets.numpy())


class TextClassSensitivity(_ReExplaining):
    """Whether the explanation depends on the class explained: Spearman correlation between the
    magnitudes of the map of the target (the attributions given) and of the map of the other class
    (for more than two classes: the most probable other class), over feature tokens; lower is
    more class-sensitive. Magnitudes, as the image table's random_logit: on a two-class softmax a
    signed gradient map of the other class is the target's map negated; it names the same tokens
    and scores +1 here (on signed maps it would score the best possible -1 by construction)."""

    info = MetricInfo("text_class_sensitivity", "randomisation", "lower", "absolute", True)

    def compute(self, model, x, y, a, feature, explainer, ground_truth):
        probs = self.logits(model, x)
        if probs.shape[1] < 2:
            raise ValueError(f"metric {self.info.name!r} needs a model with at least two classes")
        others = probs.scatter(1, y[:, None], -math.inf).argmax(1)
        other_map = self.explain(explainer, explainer.model, x, others)
        return spearman_rows(self.maps(a.numpy()), self.maps(other_map), feature.numpy())


def top_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The classifier's top layers, by qualified name: the head and the last encoder layer of a
    transformer, the head and the LSTM of a recurrent model (a model may name its own through a
    ``top_layers()`` method returning the names)."""
    if callable(getattr(model, "top_layers", None)):
        names = list(model.top_layers())
    elif getattr(model, "kind", None) == "transformer":
        names = ["head", f"encoder.encoder.layer.{len(model.encoder.encoder.layer) - 1}"]
    elif getattr(model, "kind", None) == "recurrent":
        names = ["head", "lstm"]
    else:
        raise ValueError(f"no top layers known for {type(model).__name__} (kind {getattr(model, 'kind', None)!r}); "
                         "valid kinds: transformer, recurrent, or a model with top_layers()")
    return {name: model.get_submodule(name) for name in names}


def randomised_copy(model: nn.Module, seed: int) -> tuple[nn.Module, list[str]]:
    """A deep copy of ``model`` whose top layers are re-initialised (each submodule's own
    ``reset_parameters``) from ``seed``; the caller's model and the global generators are left
    as they were."""
    clone = copy.deepcopy(model).eval()
    layers = top_layers(clone)
    with seeded(int(seed)):
        for layer in layers.values():
            for module in layer.modules():
                if callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()
    return clone, list(layers)


class TextRandomisation(_ReExplaining):
    """Adebayo et al. (2018) for text: re-initialise the classifier's top layers (the head and
    the last encoder layer, or the head and the LSTM) in a copy of the model and re-explain the
    target there; the score is the Spearman correlation between the original and the randomised
    map's magnitudes over feature tokens (as the image table's mprt); an explanation that depends
    on the learnt parameters scores low."""

    info = MetricInfo("text_randomisation", "randomisation", "lower", "absolute", True)
    defaults = {"seed": 0}

    def compute(self, model, x, y, a, feature, explainer, ground_truth):
        clone, names = randomised_copy(explainer.model, int(self.params["seed"]))
        self.summary = {"randomised_layers": names}
        randomised = self.explain(explainer, clone, x, y)
        return spearman_rows(self.maps(a.numpy()), self.maps(randomised), feature.numpy())


TEXT_METRICS: dict[str, type[TextMetric]] = {
    cls.info.name: cls for cls in (
        TextComprehensiveness, TextSufficiency, TextMoRFAUC, TextLeRFAUC, TokenAveragePrecision,
        TokenAUPRCTrapezoid, TokenRPrecision, TokenHardF1, TextClassSensitivity, TextRandomisation,
    )
}
