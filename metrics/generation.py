"""Metrics for explanations of a decoder's next token (the ``generation`` set), on token ids.

A decoder is read as a next-token classifier (``experiments.zoo.decoders.NextTokenClassifier``),
so the text metrics apply as they are: comprehensiveness and sufficiency (AOPC) on the target
token's probability are :class:`metrics.text.TextComprehensiveness` and
:class:`metrics.text.TextSufficiency`. Added here:

- agreement with the tokens the answer was copied from (the dataset's ``ground_truth``):
  :class:`SourceAP` (average precision of the sources) and :class:`SourcePointingGame` (is the
  most relevant token a source). Both rank tokens by the magnitude of their attribution: they
  ask where the evidence is, not which way it pushes.
- :class:`MoRFLeRFArea`: the area between the LeRF and MoRF deletion curves of the target
  token's logit, as the AttnLRP paper reports it for language models.

Only feature tokens count (``feature_mask``: never padding or special tokens), as in
:mod:`metrics.text`, whose deletion, ranking and batched model calls these reuse.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from baselines.vocabulary import OUTPUTS, check_choice
from metrics.base import MetricInfo
from metrics.text import TextLeRFAUC, TextMetric, TextMoRFAUC, TokenAveragePrecision

CURVES = ("logits", "output")


class SourceAP(TokenAveragePrecision):
    """Average precision of the source tokens (the ground truth) when feature tokens are ranked by
    |attribution|: 1 when every source outranks every other token. NaN where a sample has no
    source among its feature tokens. The model is not called."""

    info = MetricInfo("source_ap", "localisation", "higher", "absolute", True)

    def compute(self, model, x, y, a, feature, explainer, ground_truth):
        return super().compute(model, x, y, a.abs(), feature, explainer, ground_truth)


class SourcePointingGame(TextMetric):
    """Whether the feature token of largest |attribution| is a source: 1 or 0. Where several
    tokens tie for the largest, the share of them that are sources (so a constant map scores the
    share of sources among the feature tokens, not a lucky 1). NaN where a sample has no source
    among its feature tokens, or no feature tokens. The model is not called."""

    info = MetricInfo("source_pointing_game", "localisation", "higher", "absolute", True)
    needs_ground_truth = True

    def compute(self, model, x, y, a, feature, explainer, ground_truth):
        gt = ground_truth.bool() & feature
        mag = a.abs().masked_fill(~feature, -np.inf)
        top = (mag == mag.max(dim=1, keepdim=True).values) & feature
        hits = (top & gt).sum(1).double() / top.sum(1).clamp(min=1).double()
        return torch.where(gt.any(1) & feature.any(1), hits, torch.nan).numpy()


class MoRFLeRFArea(TextMetric):
    """The area between the deletion curves (Achtibat et al. 2024, AttnLRP; Bluecher et al. 2024):
    the target's logit as the sample's feature tokens are deleted least relevant first (LeRF)
    minus the same most relevant first (MoRF), integrated over the fraction of feature tokens
    deleted: ``AUC(LeRF) - AUC(MoRF)`` of :class:`metrics.text.TextLeRFAUC` and
    :class:`metrics.text.TextMoRFAUC` on the same steps. Higher is better: a faithful ranking
    loses the prediction fast one way and keeps it the other. In logit units, so not bounded.

    ``curve: logits`` reads the target's logit (what AttnLRP reports; a probability saturates
    near 0 and 1, where the two curves cannot separate); ``curve: output`` the run's output.
    ``deletion`` and ``steps`` as for the text curves. NaN for a sample without feature tokens."""

    info = MetricInfo("morf_lerf_area", "faithfulness", "higher", "signed", True)
    defaults = {"deletion": "remove", "steps": None, "curve": "logits"}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        check_choice("curve", self.params["curve"], CURVES)
        curve = {k: v for k, v in self.params.items() if k != "curve"}
        if self.params["curve"] == "logits":
            curve["output"] = "logits"
        assert curve["output"] in OUTPUTS
        self.morf, self.lerf = TextMoRFAUC(**curve), TextLeRFAUC(**curve)

    def compute(self, model, x, y, a, feature, explainer, ground_truth):
        areas = []
        for curve in (self.lerf, self.morf):
            curve._memo = self._memo           # the run's model outputs, shared with the other metrics
            try:
                areas.append(curve.compute(model, x, y, a, feature, explainer, ground_truth))
            finally:
                curve._memo = None
        lerf, morf = areas
        self.summary = {"lerf_auc": _mean(lerf), "morf_auc": _mean(morf)}
        return lerf - morf


def _mean(values: np.ndarray) -> Any:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


GENERATION_METRICS: dict[str, type[TextMetric]] = {
    cls.info.name: cls for cls in (SourceAP, SourcePointingGame, MoRFLeRFArea)
}
