"""Faithfulness of explanations of dense models: region deletion on the explained value.

A dense model's explained value (``baselines.dense_heads``: the summed foreground probabilities
of the pixels predicted foreground, or a box coordinate) is one number per image, so the deletion
curves classifiers are scored with apply to it: remove image regions in the order of their
attribution and follow the value. ``region_morf`` removes the most relevant regions first (a
faithful map makes the value fall fast: the area under the curve is low); ``region_lerf`` the
least relevant first (the value should hold: high area). The curve is the value after removing the
first k of ``steps`` equal shares of the regions, divided by the value of the intact image, at k =
0..steps; the score is its area over the fraction removed (the mean height, trapezoid rule). An
image whose value is 0 (nothing predicted foreground) has no curve: NaN.

Regions are ``patch_size`` x ``patch_size`` squares ranked by their summed attribution (1: single
pixels), signed as the method returns it (unsigned methods arrive as magnitudes), ties in pixel
order. A removed region takes ``baseline``: ``zero`` (black, what LIME's ``hide_color`` and the
Quantus metrics' ``black`` use on these [0, 1] images) or ``mean`` (the image's mean per channel).
Every perturbed image of a sample goes through the model in stacked chunks.

The other metrics of the dense tables are the Quantus ones (``metrics.quantus_metrics``) on the
head: localisation with the ground-truth mask (or box, filled in) as the mask, faithfulness
correlation and MPRT reading the explained value (output ``identity``), sparseness.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

import numpy as np
import torch
from torch import Tensor, nn

from metrics.base import Metric, MetricInfo

BASELINES = ("zero", "mean")
ORDERS = ("morf", "lerf")
DEFAULTS: dict[str, Any] = {"steps": 20, "patch_size": 1, "baseline": "zero", "chunk_size": 256,
                            "output": None, "channel_reduction": "sum", "max_samples": None}


def region_ranking(a: np.ndarray, patch_size: int, most_relevant_first: bool) -> np.ndarray:
    """Region indices of one (H, W) map in removal order: regions (patch_size squares, row-major)
    by summed attribution, descending (MoRF) or ascending (LeRF); ties keep region order."""
    h, w = a.shape
    ph, pw = -(-h // patch_size), -(-w // patch_size)
    padded = np.zeros((ph * patch_size, pw * patch_size))
    padded[:h, :w] = a
    sums = padded.reshape(ph, patch_size, pw, patch_size).sum(axis=(1, 3)).reshape(-1)
    key = -sums if most_relevant_first else sums
    return np.argsort(key, kind="stable")


def deletion_inputs(x: Tensor, ranking: np.ndarray, steps: int, patch_size: int, baseline: str) -> Tensor:
    """The ``steps + 1`` copies of one image ``(C, H, W)``: the k-th with the first
    ceil(k / steps * regions) regions of ``ranking`` set to the baseline."""
    c, h, w = x.shape
    pw = -(-w // patch_size)
    fill = torch.zeros(c, 1, 1, dtype=x.dtype) if baseline == "zero" else x.mean(dim=(1, 2), keepdim=True)
    out = x.unsqueeze(0).repeat(steps + 1, 1, 1, 1)
    removed = torch.zeros(h, w, dtype=torch.bool)
    n = len(ranking)
    done = 0
    for k in range(1, steps + 1):
        upto = int(np.ceil(k / steps * n))
        for r in ranking[done:upto]:
            top, left = (int(r) // pw) * patch_size, (int(r) % pw) * patch_size
            removed[top:top + patch_size, left:left + patch_size] = True
        done = upto
        out[k] = torch.where(removed, fill.expand(c, h, w), x)
    return out


class RegionDeletion(Metric):
    """Area under the deletion curve of the explained value (see the module docstring)."""

    info: ClassVar[MetricInfo]
    order: ClassVar[str]
    modalities: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for metric {self.info.name!r}; valid: {', '.join(sorted(DEFAULTS))}")
        merged = {**DEFAULTS, **params}
        if merged["baseline"] not in BASELINES:
            raise ValueError(f"unknown baseline {merged['baseline']!r} for metric {self.info.name!r}; "
                             f"choose one of: {', '.join(BASELINES)}")
        for key in ("steps", "patch_size", "chunk_size"):
            v = merged[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"metric {self.info.name!r}: {key}={v!r} is invalid; choose a positive integer")
        super().__init__(**merged)

    def curves(self, model: nn.Module, x: Tensor, y: Tensor, a: Tensor) -> np.ndarray:
        """Per sample, the explained value over the deletion steps divided by its intact value,
        (N, steps + 1); NaN rows where the intact value is 0."""
        steps, patch, chunk = (int(self.params[k]) for k in ("steps", "patch_size", "chunk_size"))
        maps = a.detach().cpu().double().numpy().reshape(len(a), *a.shape[-2:])
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        stacked = torch.cat([deletion_inputs(x[i].detach().cpu().float(),
                                             region_ranking(maps[i], patch, self.order == "morf"),
                                             steps, patch, self.params["baseline"]) for i in range(len(x))])
        values = []
        model.eval()
        with torch.no_grad():
            for i in range(0, len(stacked), chunk):
                values.append(model(stacked[i:i + chunk].to(device)).double().cpu())
        out = torch.cat(values).reshape(len(x), steps + 1, -1)
        picked = out.gather(2, y.cpu().long().reshape(-1, 1, 1).expand(-1, steps + 1, 1))[..., 0].numpy()
        start = picked[:, :1]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(start != 0, picked / np.where(start != 0, start, 1.0), np.nan)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, a: Tensor,
                 explainer: Optional[Any] = None, ground_truth: Optional[Tensor] = None) -> np.ndarray:
        if x.ndim != 4:
            raise ValueError(f"metric {self.info.name!r} scores images (N, C, H, W); got inputs of shape {tuple(x.shape)}")
        if a.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"metric {self.info.name!r}: attributions {tuple(a.shape)} do not cover the image "
                             f"{tuple(x.shape)}")
        curves = self.curves(model, x, y, a)
        auc = np.trapezoid(curves, x=np.linspace(0.0, 1.0, curves.shape[1]), axis=1)
        return np.where(np.isfinite(auc), auc, np.nan)


class RegionMoRF(RegionDeletion):
    """Most relevant regions removed first: lower is better."""

    info = MetricInfo("region_morf", "faithfulness", "lower", "signed", True)
    order = "morf"


class RegionLeRF(RegionDeletion):
    """Least relevant regions removed first: higher is better."""

    info = MetricInfo("region_lerf", "faithfulness", "higher", "signed", True)
    order = "lerf"


DENSE_METRICS: dict[str, type[RegionDeletion]] = {cls.info.name: cls for cls in (RegionMoRF, RegionLeRF)}
