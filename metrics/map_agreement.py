"""How alike two methods' maps of the same samples are: Spearman's rank correlation per sample.

Used to compare backtrace with LRP (``benchmarks/backtrace_vs_lrp.py``, the tables' notes). By
default the magnitudes are ranked: backtrace's default maps carry no per-feature sign (each map
has the sign of its starting relevance), so only how much each feature gets can be compared, as
for every similarity between maps in the benchmark.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from scipy.stats import spearmanr


def spearman_per_sample(a: np.ndarray, b: np.ndarray, magnitude: bool = True,
                        keep: Optional[np.ndarray] = None) -> np.ndarray:
    """Spearman's rho between ``a[i]`` and ``b[i]`` over the features of sample ``i`` (``keep[i]``
    true: the features to rank; default all); NaN where either map is constant there."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {a.shape} and {b.shape}")
    if magnitude:
        a, b = np.abs(a), np.abs(b)
    mask = np.ones_like(a, dtype=bool) if keep is None else np.asarray(keep, dtype=bool).reshape(a.shape)
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        x, y = a[i][mask[i]], b[i][mask[i]]
        if len(x) > 1 and np.ptp(x) > 0 and np.ptp(y) > 0:
            out[i] = spearmanr(x, y).statistic
    return out


def text_feature_positions(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The token positions of a text record that are features: every method's map is exactly zero
    on ``[CLS]``, ``[SEP]`` and padding (``Explainer`` sets them so), so a position where either
    map is non-zero is a feature (a feature token both maps put at exactly zero is left out too)."""
    return (np.asarray(a) != 0) | (np.asarray(b) != 0)


def record_maps(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(sample indices, attributions)`` of one run record (``arrays.npz``)."""
    with np.load(Path(folder) / "arrays.npz") as arrays:
        return arrays["sample"], arrays["attributions"]


def records_agreement(first: Path, second: Path, text: bool = False) -> np.ndarray:
    """Per-sample Spearman rho of the magnitudes of two records' maps, on the samples both hold."""
    ids_a, maps_a = record_maps(first)
    ids_b, maps_b = record_maps(second)
    common, ia, ib = np.intersect1d(ids_a, ids_b, return_indices=True)
    a, b = maps_a[ia], maps_b[ib]
    keep = text_feature_positions(a, b) if text else None
    return spearman_per_sample(a, b, magnitude=True, keep=keep)


def agreement_note(folders: dict[str, Path], text: bool = False, reference: str = "backtrace",
                   others: tuple[str, ...] = ("lrp", "attnlrp")) -> list[str]:
    """Lines for a table's notes: for each of ``others`` in the table, the mean (and range of the
    middle half) of the per-sample Spearman rho between its map and ``reference``'s, magnitudes."""
    if reference not in folders:
        return []
    parts = []
    for other in others:
        if other not in folders:
            continue
        rho = records_agreement(folders[reference], folders[other], text=text)
        rho = rho[np.isfinite(rho)]
        if rho.size:
            q1, q3 = np.percentile(rho, [25, 75])
            parts.append(f"{reference} vs {other}: mean {rho.mean():.2f} (quartiles {q1:.2f} to {q3:.2f}, "
                         f"{rho.size} samples)")
    if not parts:
        return []
    return ["Rank agreement of the maps (Spearman's rho of the attribution magnitudes per sample): "
            + "; ".join(parts) + "."]
