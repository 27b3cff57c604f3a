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
  method against every other, Holm-corrected within each metric, with the mean paired difference
  and the matched-pairs rank-biserial correlation (the effect size) giving the direction.
- :func:`common_samples`: per metric, only the samples every method scored, so that means, ranks
  and tests of one table are computed on the same samples for all methods.
- :func:`best_methods`: the best method of a metric and every method whose interval overlaps it.
- :func:`table_statistics`: all of the above for one table.
- :func:`bootstrap_mean_ranks`: mean rank over metrics with a bootstrap interval over samples.
- :func:`smallest_wilcoxon_pvalue`, :func:`wilcoxon_can_reach`: whether n pairs and m Holm-corrected
  comparisons can reach the level at all.
- :func:`significant`: how every number of a table and of the console is printed.
"""
from __future__ import annotations

import math
import warnings
from functools import lru_cache
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
    """Samples x methods for one metric, complete rows only (a NaN score drops its sample); a
    method with no finite score on the metric is left out rather than emptying the table."""
    part = scores[scores["metric"] == metric]
    wide = part.pivot_table(index="sample", columns="method", values="score", aggfunc="first", dropna=False)
    return wide.dropna(axis=1, how="all").dropna()


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


def rank_biserial(diff: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of paired differences: (W+ - W-) / (W+ + W-), with
    W+/W- the rank sums of the positive/negative differences (ranks of |d|, zeros dropped as in
    the default Wilcoxon test, ties averaged). In [-1, 1]; its sign is the direction of the
    Wilcoxon signed-rank test, and 0 when every difference is 0."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    if d.size == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))
    total = ranks.sum()
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / total)


@lru_cache(maxsize=None)
def smallest_wilcoxon_pvalue(n: int) -> float:
    """The smallest two-sided p-value :func:`scipy.stats.wilcoxon` gives ``n`` paired differences
    (zeros dropped): all of one sign, distinct (its exact null distribution: 2 / 2**n) or all tied
    (its normal approximation with the tie correction, which it uses when magnitudes tie), the
    smaller of the two. 1 for ``n = 0``."""
    if n < 1:
        return 1.0
    distinct = float(stats.wilcoxon(np.arange(1.0, n + 1.0)).pvalue)
    tied = float(stats.wilcoxon(np.ones(n)).pvalue)
    return min(distinct, tied)


def wilcoxon_can_reach(n: int, comparisons: int, alpha: float = 0.05) -> bool:
    """Whether any of ``comparisons`` Holm-corrected Wilcoxon tests on ``n`` pairs can come out
    below ``alpha``: Holm multiplies the smallest p-value by the number of comparisons, so this
    needs ``comparisons x smallest_wilcoxon_pvalue(n) < alpha``."""
    return max(1, int(comparisons)) * smallest_wilcoxon_pvalue(int(n)) < alpha


def significant(value: object, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits: fixed-point from 0.001 up to 10 000 (0.00129,
    0.422, 12.3; the integer part in full), scientific otherwise (7.00e-04); ``nan`` for a
    missing or undefined value. A mean of 0.00129 must not print as 0.001 nor 7e-4 as 0.0000."""
    if value is None:
        return "nan"
    v = float(value)  # type: ignore[arg-type]
    if math.isnan(v):
        return "nan"
    if math.isinf(v) or v == 0:
        return str(v) if math.isinf(v) else "0"
    rounded = float(f"{v:.{digits - 1}e}")   # rounding may carry into the next power of ten
    if not 1e-3 <= abs(rounded) < 1e4:
        return f"{v:.{digits - 1}e}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{v:.{decimals}f}"


# How a reference-vs-method comparison is printed: "+" reference better, "-" worse, "=" no
# significant difference, "~" significant but the mean difference and the rank-biserial
# correlation point in opposite directions (so neither direction is claimed).
MARKS = {"better": "+", "worse": "-", "no difference": "=", "ambiguous": "~"}


def comparison_outcome(pvalue: float, mean_advantage: float, effect_size: float, alpha: float = 0.05) -> str:
    """The outcome of one comparison from its (corrected) p-value and two direction statistics,
    both oriented so that positive means the reference is better. A significant result is a win
    or a loss only when the mean difference (what the table's means show) and the rank-biserial
    correlation (what the signed-rank test ranks) agree; the median is never used, as with ties
    (0/1 scores) it is 0 whatever the data say."""
    if not np.isfinite(pvalue) or pvalue >= alpha:
        return "no difference"
    if mean_advantage > 0 and effect_size > 0:
        return "better"
    if mean_advantage < 0 and effect_size < 0:
        return "worse"
    return "ambiguous"


def wilcoxon_vs_reference(scores: pd.DataFrame, directions: Mapping[str, str],
                          reference: str = "backtrace", alpha: float = 0.05) -> pd.DataFrame:
    """Per metric and other method: a two-sided Wilcoxon signed-rank test on the per-sample
    differences reference - other (paired by ``sample``, pairs with a NaN dropped), Holm-corrected
    over the comparisons of that metric. ``mean_advantage`` is the mean difference and
    ``effect_size`` the matched-pairs rank-biserial correlation, both oriented so that positive
    means the reference is better; ``outcome`` (better / worse / no difference / ambiguous, see
    :func:`comparison_outcome`) and ``reference_better`` follow from them and the Holm p-value."""
    _check(scores, directions)
    if reference not in set(scores["method"]):
        raise ValueError(f"reference method {reference!r} has no scores; methods: "
                         f"{', '.join(sorted(scores['method'].unique()))}")
    rows = []
    for metric in sorted(scores["metric"].unique()):
        part = scores[scores["metric"] == metric]
        wide = part.pivot_table(index="sample", columns="method", values="score", aggfunc="first", dropna=False)
        sign = 1.0 if directions[metric] == "higher" else -1.0
        block = []
        for other in sorted(c for c in wide.columns if c != reference):
            pair = wide[[reference, other]].dropna() if reference in wide else wide[[other]].iloc[:0]
            diff = (pair[reference] - pair[other]).to_numpy(dtype=np.float64) if len(pair) else np.array([])
            row = {"metric": metric, "reference": reference, "method": other, "n_pairs": int(diff.size),
                   "mean_advantage": float(sign * diff.mean()) if diff.size else float("nan"),
                   "effect_size": sign * rank_biserial(diff) if diff.size else float("nan"),
                   "statistic": float("nan"), "pvalue": float("nan"), "note": ""}
            if diff.size == 0:
                row["note"] = "no complete pairs"
            elif np.all(diff == 0):
                row.update(pvalue=1.0, note="identical scores")
            else:
                res = stats.wilcoxon(diff)
                row.update(statistic=float(res.statistic), pvalue=float(res.pvalue))
            block.append(row)
        for row, adj in zip(block, holm([r["pvalue"] for r in block])):
            row["pvalue_holm"] = float(adj)
            row["outcome"] = comparison_outcome(row["pvalue_holm"], row["mean_advantage"], row["effect_size"], alpha)
            row["reference_better"] = row["outcome"] == "better"
        rows.extend(block)
    cols = ["metric", "reference", "method", "n_pairs", "mean_advantage", "effect_size", "outcome",
            "reference_better", "statistic", "pvalue", "pvalue_holm", "note"]
    return pd.DataFrame(rows, columns=cols)


def common_samples(scores: pd.DataFrame) -> pd.DataFrame:
    """Per metric, keep only the samples that every method scored (finite score). A method with
    no finite score at all on a metric (the metric does not apply to it) does not shrink the
    others' samples; its rows are kept, all NaN. The result is what a table's means, ranks and
    tests are computed on, so that every method of a metric is averaged over the same samples."""
    _check(scores)
    parts = []
    for metric, part in scores.groupby("metric", sort=False):
        finite = part.assign(ok=np.isfinite(part["score"].to_numpy(dtype=np.float64)))
        scored = finite.groupby("method")["ok"].any()
        methods = scored[scored].index
        ok = finite[finite["method"].isin(methods)].pivot_table(index="sample", columns="method", values="ok",
                                                                aggfunc="all")
        keep = ok.index[ok.all(axis=1)] if len(methods) else ok.index[:0]
        parts.append(part[part["sample"].isin(keep) | ~part["method"].isin(methods)])
    return pd.concat(parts, ignore_index=True) if parts else scores.iloc[:0]


def best_methods(summary: pd.DataFrame, metric: str, direction: str) -> list[str]:
    """The best method of ``metric`` by mean, and every method whose confidence interval overlaps
    the best one's: the methods the data cannot tell apart from the best. ``summary`` has one row
    per (method, metric) with ``mean``, ``ci_low`` and ``ci_high``; NaN means are never best."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction of metric {metric!r} is {direction!r}; choose one of: {', '.join(DIRECTIONS)}")
    part = summary[(summary["metric"] == metric) & np.isfinite(summary["mean"].to_numpy(dtype=np.float64))]
    if part.empty:
        return []
    best = part.loc[part["mean"].idxmax() if direction == "higher" else part["mean"].idxmin()]
    low, high = float(best["ci_low"]), float(best["ci_high"])
    if not (np.isfinite(low) and np.isfinite(high)):
        return [str(best["method"])]
    overlap = (part["ci_low"] <= high) & (part["ci_high"] >= low)
    return [str(m) for m in part.loc[overlap | (part["method"] == best["method"]), "method"]]


def table_statistics(scores: pd.DataFrame, directions: Mapping[str, str], reference: Optional[str] = "backtrace",
                     n_boot: int = 2000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Everything one results table needs, for the scores of one (model, dataset), all computed on
    the samples every method scored (:func:`common_samples`): ``summary`` (with ``n_nan``, the
    samples a method left undefined, counted on all the scores), ``ranks``, ``friedman`` and
    ``wilcoxon`` (empty if ``reference`` is None or has no scores)."""
    _check(scores, directions)
    common = common_samples(scores)
    summary = summarise(common, n_boot=n_boot, seed=seed)
    undefined = (scores.assign(nan=~np.isfinite(scores["score"].to_numpy(dtype=np.float64)))
                 .groupby(["method", "metric"])["nan"].sum())
    summary["n_nan"] = [int(undefined.get((m, k), 0)) for m, k in zip(summary["method"], summary["metric"])]
    has_reference = reference is not None and reference in set(scores["method"])
    return {
        "summary": summary,
        "ranks": rank_methods(summary, directions),
        "friedman": friedman(common),
        "wilcoxon": wilcoxon_vs_reference(common, directions, reference) if has_reference
        else pd.DataFrame(columns=["metric", "reference", "method", "outcome", "pvalue_holm", "effect_size"]),
    }


def bootstrap_mean_ranks(scores: pd.DataFrame, directions: Mapping[str, str], n_boot: int = 1000,
                         confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Each method's mean rank over the metrics (as :func:`rank_methods` on the samples every
    method scored) with a percentile bootstrap interval: the samples are redrawn with replacement
    (one draw shared by every metric, so a sample's scores stay together), each metric's means are
    recomputed on the draw and ranked, and the ranks averaged over the metrics. One row per
    method: ``mean_rank``, ``ci_low``, ``ci_high``, ``n_metrics`` (metrics it was ranked on)."""
    _check(scores, directions)
    common = common_samples(scores)
    methods = sorted(common["method"].unique())
    samples = np.array(sorted(common["sample"].unique()))
    cols = ["method", "mean_rank", "ci_low", "ci_high", "n_metrics"]
    if not len(methods) or not samples.size:
        return pd.DataFrame(columns=cols)
    rng = np.random.default_rng(seed)
    # row 0: every sample once (the table's own ranks); rows 1..n_boot: the bootstrap draws
    weights = np.vstack([np.ones(samples.size), rng.multinomial(samples.size, np.full(samples.size, 1 / samples.size),
                                                                 size=n_boot)])
    position = {s: i for i, s in enumerate(samples)}
    per_metric = []
    for metric in sorted(common["metric"].unique()):
        wide = (common[common["metric"] == metric]
                .pivot_table(index="sample", columns="method", values="score", aggfunc="first", dropna=False)
                .reindex(columns=methods))
        x = wide.to_numpy(dtype=np.float64)
        scored = np.isfinite(x).any(axis=0)
        w = weights[:, [position[s] for s in wide.index]]
        total = w.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (w @ np.where(np.isfinite(x), x, 0.0)) / np.where(total > 0, total, np.nan)
        means[:, ~scored] = np.nan
        sign = -1.0 if directions[metric] == "higher" else 1.0   # rank 1 = best
        per_metric.append(stats.rankdata(sign * means, axis=1, method="average", nan_policy="omit"))
    ranks = np.stack(per_metric)                                 # metrics x (1 + n_boot) x methods
    with warnings.catch_warnings():                              # a method no metric ranked: all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_ranks = np.nanmean(ranks, axis=0)                   # (1 + n_boot) x methods
    alpha = (1.0 - confidence) / 2.0
    boot = mean_ranks[1:]
    rows = []
    for j, method in enumerate(methods):
        b = boot[:, j][np.isfinite(boot[:, j])]
        rows.append({"method": method, "mean_rank": float(mean_ranks[0, j]),
                     "ci_low": float(np.quantile(b, alpha)) if b.size else float("nan"),
                     "ci_high": float(np.quantile(b, 1 - alpha)) if b.size else float("nan"),
                     "n_metrics": int(np.isfinite(ranks[:, 0, j]).sum())})
    return pd.DataFrame(rows, columns=cols)
