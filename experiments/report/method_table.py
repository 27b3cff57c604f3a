"""Methods as rows, metrics as columns: every number a results table shows, from per-sample scores.

One function, :func:`method_statistics`, for the table writer (:mod:`experiments.report.paper_tables`,
from run records) and the Python API's :func:`experiments.api.summary_table` (from the scores
:func:`experiments.api.evaluate` returns): the mean with its bootstrap 95% interval over the
samples every method scored, ranks, the Friedman test, and the Holm-corrected Wilcoxon tests of a
reference method against every other (``metrics.statistics.table_statistics``).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from experiments.errors import TableError
from experiments.report.methods import REFERENCE, method_order
from metrics.statistics import MARKS, best_methods, table_statistics

# Per metric, what the wide table holds besides the mean (``<metric>_<field>``); the last three
# are the paired test against the reference, where there is one.
FIELDS = ("ci_low", "ci_high", "n", "n_nan", "rank")
TEST_FIELDS = ("test", "p_holm", "r")


def choose_reference(methods: Sequence[str], reference: Optional[str], what: str) -> Optional[str]:
    """The method the tests compare every other against: ``reference`` if given (it must be one
    of ``methods``), else ``backtrace`` when present, else none."""
    if reference is not None:
        if reference not in methods:
            raise TableError(f"unknown reference method {reference!r} for {what}; "
                             f"valid choices: {', '.join(method_order(sorted(set(methods))))}")
        return reference
    return REFERENCE if REFERENCE in methods else None


def method_statistics(scores: pd.DataFrame, directions: Mapping[str, str], reference: Optional[str] = None,
                      runtime: Optional[Mapping[str, Mapping[str, Any]]] = None,
                      order: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """The statistics of one table of long ``scores`` (method, metric, sample, score), plus
    ``wide``: one row per method (``order``, else :func:`method_order`) with, per metric, its mean,
    ``<metric>_ci_low``/``_ci_high``/``_n``/``_n_nan``/``_rank`` and, against ``reference``,
    ``<metric>_test`` (``+`` better, ``-`` worse, ``=`` no difference, ``~`` ambiguous: the
    reference's view), ``_p_holm`` and ``_r`` (rank-biserial, positive: the reference better);
    then ``mean_rank`` and the runtime columns. ``best``: per metric, the best method and every
    method whose interval overlaps it. ``reference`` must be a method of ``scores`` (or None)."""
    stats: dict[str, Any] = table_statistics(scores, directions, reference=reference)
    summary, ranks, tests = stats["summary"], stats["ranks"], stats["wilcoxon"]
    methods = list(summary["method"].unique())
    rows = []
    for method in (list(order) if order is not None else method_order(methods)):
        part = summary[summary["method"] == method].set_index("metric")
        row: dict[str, Any] = {"method": method}
        for metric in directions:
            if metric not in part.index:
                continue
            r = part.loc[metric]
            row.update({metric: r["mean"], f"{metric}_ci_low": r["ci_low"], f"{metric}_ci_high": r["ci_high"],
                        f"{metric}_n": int(r["n"]), f"{metric}_n_nan": int(r["n_nan"]),
                        f"{metric}_rank": ranks.loc[method, metric] if metric in ranks.columns else np.nan})
            if reference is not None and method != reference:
                t = tests[(tests["method"] == method) & (tests["metric"] == metric)]
                tested = len(t) and not pd.isna(t["pvalue_holm"].iloc[0])
                row.update({f"{metric}_test": MARKS[t["outcome"].iloc[0]] if tested else "n/a",
                            f"{metric}_p_holm": float(t["pvalue_holm"].iloc[0]) if tested else np.nan,
                            f"{metric}_r": float(t["effect_size"].iloc[0]) if tested else np.nan})
        row["mean_rank"] = ranks.loc[method, "mean_rank"] if method in ranks.index else np.nan
        rt = (runtime or {}).get(method) or {}
        row["seconds_per_sample"] = rt.get("seconds_per_sample")
        row["forward_backward_units"] = rt.get("forward_backward_units")
        rows.append(row)
    stats["wide"] = pd.DataFrame(rows)
    stats["best"] = {m: set(best_methods(summary, m, d)) for m, d in directions.items()}
    stats["reference"] = reference
    return stats
