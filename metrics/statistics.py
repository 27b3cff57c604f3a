"""Summaries and significance tests over per-sample metric scores.

Input everywhere: a long DataFrame of per-sample scores with columns ``method``, ``metric``,
``sample``, ``score`` (NaN allowed: an undefined score) and optionally grouping columns such as
``model`` and ``dataset``. ``directions`` maps each metric to "higher" or "lower" (which way is
better), e.g. ``{name: cls.info.direction}``.

- :func:`summarise`: per group, method and metric: mean, bootstrap CI, ``n`` (finite scores the
  mean is over) and ``n_nan`` (NaN scores, excluded but counted).
- :func:`rank_methods`: rank of each method per metric (1 = best, ties averaged) and mean rank.
- :func:`friedman`: per metric, a Friedman test across methods with samples as blocks.
- :func:`wilcoxon_vs_reference`: per metric, paired Wilcoxon signed-rank tests of a reference
  method against every other, Holm-corrected within each metric.
- :func:`table_statistics`: all of the above for one table.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

REQUIRED_COLUMNS = ("method", "metric", "sample", "score")
DIRECTIONS = ("higher", "lower")


def _check_directions(metrics: Sequence[str], directions: Mapping[str, str]) -> None:
    for metric in metrics:
        d = directions.get(metric)
        if d not in DIRECTIONS:
            raise ValueError(f"direction of metric {metric!r} is {d!r}; choose one of: {', '.join(DIRECTIONS)}")


def _check(scores: pd.DataFrame, directions: Optional[Mapping[str, str]] = None) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lack column(s) {missing}; required: {', '.join(REQUIRED_COLUMNS)}")
    if directions is not None:
        _check_directions(list(scores["metric"].unique()), directions)


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, confidence: float = 0.95,
                 rng: Optional[np.random.Generator] = None) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of the finite ``values`` (NaN, NaN if there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    rng = rng if rng is not None else np.random.default_rng(0)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def summarise(scores: pd.DataFrame, group_cols: Sequence[str] = (), n_boot: int = 2000,
              confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per (*group_cols, method, metric): mean, ci_low, ci_high, n, n_nan.

    Each row's bootstrap uses its own generator seeded from ``seed``, so a row does not depend on
    which other rows are summarised with it."""
    _check(scores)
    keys = [*group_cols, "method", "metric"]
    rows = []
    for key, part in scores.groupby(keys, sort=True, dropna=False):
        v = part["score"].to_numpy(dtype=np.float64)
        finite = np.isfinite(v)
        low, high = bootstrap_ci(v, n_boot, confidence, np.random.default_rng(seed))
        rows.append({**dict(zip(keys, key)), "mean": float(v[finite].mean()) if finite.any() else float("nan"),
                     "ci_low": low, "ci_high": high, "n": int(finite.sum()), "n_nan": int((~finite).sum())})
    return pd.DataFrame(rows, columns=[*keys, "mean", "ci_low", "ci_high", "n", "n_nan"])


def rank_methods(summary: pd.DataFrame, directions: Mapping[str, str]) -> pd.DataFrame:
    """Methods as rows, metrics as columns, rank 1 = best by ``mean`` (ties averaged, NaN means
    unranked), plus a ``mean_rank`` column over the metrics a method was ranked on.
    ``summary`` holds one table: one row per (method, metric)."""
    _check_directions(list(summary["metric"].unique()), directions)
    means = summary.pivot(index="method", columns="metric", values="mean")
    ranks = pd.DataFrame(index=means.index)
    for metric in means.columns:
        ranks[metric] = means[metric].rank(ascending=directions[metric] == "lower", method="average")
    ranks["mean_rank"] = ranks.mean(axis=1, skipna=True)
    return ranks


def _paired(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Samples x methods for one metric, complete rows only (a NaN score drops its sample)."""
    part = scores[scores["metric"] == metric]
    return part.pivot_table(index="sample", columns="method", values="score", aggfunc="first").dropna()


def friedman(scores: pd.DataFrame) -> pd.DataFrame:
    """Per metric: Friedman chi-square across methods, samples as blocks (samples with a NaN for
    any method are left out). Fewer than 3 methods or 2 complete samples: statistic and p-value
    are NaN and ``note`` says why."""
    _check(scores)
    rows = []
    for metric in sorted(scores["metric"].unique()):
        table = _paired(scores, metric)
        n_methods, n_samples = table.shape[1], table.shape[0]
        row = {"metric": metric, "n_methods": n_methods, "n_samples": n_samples,
               "statistic": float("nan"), "pvalue": float("nan"), "note": ""}
        if n_methods < 3:
            row["note"] = f"needs at least 3 methods, has {n_methods}"
        elif n_samples < 2:
            row["note"] = f"needs at least 2 complete samples, has {n_samples}"
        elif np.all(table.to_numpy() == table.to_numpy()[:, :1]):
            row.update(statistic=0.0, pvalue=1.0, note="all methods tie on every sample")
        else:
            res = stats.friedmanchisquare(*[table[c].to_numpy() for c in table.columns])
            row.update(statistic=float(res.statistic), pvalue=float(res.pvalue))
        rows.append(row)
    return pd.DataFrame(rows, columns=["metric", "n_methods", "n_samples", "statistic", "pvalue", "note"])


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN and
    are not counted in the family."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def wilcoxon_vs_reference(scores: pd.DataFrame, directions: Mapping[str, str],
                          reference: str = "backtrace") -> pd.DataFrame:
    """Per metric and other method: a two-sided Wilcoxon signed-rank test on the per-sample
    differences reference - other (paired by ``sample``, pairs with a NaN dropped), Holm-corrected
    over the comparisons of that metric. ``median_advantage`` is the median difference oriented so
    that positive means the reference is better; ``reference_better`` is its sign."""
    _check(scores, directions)
    if reference not in set(scores["method"]):
        raise ValueError(f"reference method {reference!r} has no scores; methods: "
                         f"{', '.join(sorted(scores['method'].unique()))}")
    rows = []
    for metric in sorted(scores["metric"].unique()):
        part = scores[scores["metric"] == metric]
        wide = part.pivot_table(index="sample", columns="method", values="score", aggfunc="first")
        sign = 1.0 if directions[metric] == "higher" else -1.0
        block = []
        for other in sorted(c for c in wide.columns if c != reference):
            pair = wide[[reference, other]].dropna() if reference in wide else wide[[other]].iloc[:0]
            diff = (pair[reference] - pair[other]).to_numpy() if len(pair) else np.array([])
            row = {"metric": metric, "reference": reference, "method": other, "n_pairs": int(diff.size),
                   "median_advantage": float(sign * np.median(diff)) if diff.size else float("nan"),
                   "statistic": float("nan"), "pvalue": float("nan"), "note": ""}
            if diff.size == 0:
                row["note"] = "no complete pairs"
            elif np.all(diff == 0):
                row.update(pvalue=1.0, note="identical scores")
            else:
                res = stats.wilcoxon(diff)
                row.update(statistic=float(res.statistic), pvalue=float(res.pvalue))
            row["reference_better"] = bool(row["median_advantage"] > 0)
            block.append(row)
        for row, adj in zip(block, holm([r["pvalue"] for r in block])):
            row["pvalue_holm"] = float(adj)
        rows.extend(block)
    cols = ["metric", "reference", "method", "n_pairs", "median_advantage", "reference_better",
            "statistic", "pvalue", "pvalue_holm", "note"]
    return pd.DataFrame(rows, columns=cols)


def table_statistics(scores: pd.DataFrame, directions: Mapping[str, str], reference: str = "backtrace",
                     n_boot: int = 2000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Everything one results table needs, for the scores of one (model, dataset):
    ``summary``, ``ranks``, ``friedman`` and ``wilcoxon`` (the last empty if ``reference`` has no
    scores)."""
    summary = summarise(scores, n_boot=n_boot, seed=seed)
    has_reference = reference in set(scores["method"])
    return {
        "summary": summary,
        "ranks": rank_methods(summary, directions),
        "friedman": friedman(scores),
        "wilcoxon": wilcoxon_vs_reference(scores, directions, reference) if has_reference
        else pd.DataFrame(columns=["metric", "reference", "method"]),
    }
