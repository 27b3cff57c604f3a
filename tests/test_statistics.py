"""Statistics over per-sample scores, on constructed inputs with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from metrics.statistics import (
    bootstrap_ci, friedman, holm, rank_methods, summarise, table_statistics, wilcoxon_vs_reference,
)


def long_scores(table: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """{metric: {method: per-sample scores}} -> the long format."""
    rows = [{"method": method, "metric": metric, "sample": i, "score": float(v)}
            for metric, by_method in table.items() for method, values in by_method.items()
            for i, v in enumerate(values)]
    return pd.DataFrame(rows)


rng = np.random.default_rng(0)
BASE = rng.normal(size=40)
SCORES = long_scores({
    "faith": {"backtrace": BASE + 1.0 + rng.normal(scale=0.3, size=40), "ig": BASE, "lime": BASE - 0.5},
    "sens": {"backtrace": BASE + 1.0 + rng.normal(scale=0.3, size=40), "ig": BASE, "lime": BASE - 0.5},
})
DIRECTIONS = {"faith": "higher", "sens": "lower"}


def test_summary_counts_nan_and_its_ci_covers_the_mean():
    scores = SCORES.copy()
    scores.loc[(scores.method == "ig") & (scores["sample"] < 3), "score"] = np.nan
    summary = summarise(scores).set_index(["method", "metric"])
    row = summary.loc[("ig", "faith")]
    assert (row.n, row.n_nan) == (37, 3)
    np.testing.assert_allclose(row["mean"], BASE[3:].mean())
    for _, r in summary.iterrows():
        assert r.ci_low <= r["mean"] <= r.ci_high


def test_summary_groups_by_extra_columns_and_handles_all_nan():
    scores = pd.concat([SCORES.assign(dataset="a"), SCORES.assign(dataset="b", score=np.nan)])
    summary = summarise(scores, group_cols=["dataset"])
    assert len(summary) == 12
    b = summary[summary.dataset == "b"]
    assert b["mean"].isna().all() and (b.n == 0).all() and (b.n_nan == 40).all() and b.ci_low.isna().all()


def test_bootstrap_ci_is_seeded_and_narrows_with_more_data():
    v = rng.normal(size=200)
    assert bootstrap_ci(v, rng=np.random.default_rng(1)) == bootstrap_ci(v, rng=np.random.default_rng(1))
    wide = np.subtract(*bootstrap_ci(v[:20])[::-1])
    narrow = np.subtract(*bootstrap_ci(v)[::-1])
    assert narrow < wide


def test_ranks_follow_the_direction_and_average_ties():
    summary = pd.DataFrame({
        "method": ["a", "b", "c", "a", "b", "c"],
        "metric": ["faith"] * 3 + ["sens"] * 3,
        "mean": [0.9, 0.5, 0.5, 0.1, 0.3, np.nan],
    })
    ranks = rank_methods(summary, DIRECTIONS)
    assert ranks.loc["a", "faith"] == 1 and ranks.loc["b", "faith"] == 2.5 and ranks.loc["c", "faith"] == 2.5
    assert ranks.loc["a", "sens"] == 1 and ranks.loc["b", "sens"] == 2 and np.isnan(ranks.loc["c", "sens"])
    assert ranks.loc["a", "mean_rank"] == 1 and ranks.loc["c", "mean_rank"] == 2.5


def test_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="direction of metric 'faith' is 'up'; choose one of: higher, lower"):
        wilcoxon_vs_reference(SCORES, {"faith": "up", "sens": "lower"})


def test_the_known_better_method_wins_the_wilcoxon_test():
    result = wilcoxon_vs_reference(SCORES, DIRECTIONS).set_index(["metric", "method"])
    faith = result.loc[("faith", "ig")]
    assert faith.reference_better and faith.pvalue_holm < 1e-4 and faith.n_pairs == 40
    sens = result.loc[("sens", "ig")]  # the same numbers, but lower is better: backtrace loses
    assert not sens.reference_better and sens.pvalue_holm < 1e-4
    np.testing.assert_allclose(faith.pvalue, stats.wilcoxon(
        SCORES.query("metric == 'faith' and method == 'backtrace'").score.to_numpy()
        - SCORES.query("metric == 'faith' and method == 'ig'").score.to_numpy()).pvalue)


def test_wilcoxon_pairs_by_sample_and_drops_nan_pairs():
    scores = SCORES.copy()
    scores.loc[(scores.method == "lime") & (scores["sample"] == 0), "score"] = np.nan
    shuffled = scores.sample(frac=1.0, random_state=0)  # row order must not matter
    result = wilcoxon_vs_reference(shuffled, DIRECTIONS).set_index(["metric", "method"])
    assert result.loc[("faith", "lime"), "n_pairs"] == 39
    assert result.loc[("faith", "ig"), "pvalue"] == wilcoxon_vs_reference(SCORES, DIRECTIONS).set_index(
        ["metric", "method"]).loc[("faith", "ig"), "pvalue"]


def test_wilcoxon_identical_scores_and_missing_reference():
    same = long_scores({"faith": {"backtrace": BASE, "ig": BASE}})
    row = wilcoxon_vs_reference(same, DIRECTIONS).iloc[0]
    assert row.pvalue == 1.0 and row.note == "identical scores" and not row.reference_better
    with pytest.raises(ValueError, match="reference method 'backtrace' has no scores; methods: ig, lime"):
        wilcoxon_vs_reference(SCORES[SCORES.method != "backtrace"], DIRECTIONS)


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, np.nan, 0.6]), [1.0, np.nan, 1.0])
    assert holm([]).shape == (0,)


def test_friedman_matches_scipy_and_needs_three_methods():
    result = friedman(SCORES).set_index("metric")
    table = SCORES[SCORES.metric == "faith"].pivot(index="sample", columns="method", values="score")
    expected = stats.friedmanchisquare(*[table[c] for c in table.columns])
    np.testing.assert_allclose(result.loc["faith", "pvalue"], expected.pvalue)
    assert result.loc["faith", "pvalue"] < 1e-6
    two = friedman(SCORES[SCORES.method != "lime"]).iloc[0]
    assert np.isnan(two.pvalue) and two.note == "needs at least 3 methods, has 2"


def test_table_statistics_bundles_everything():
    out = table_statistics(SCORES, DIRECTIONS, n_boot=200)
    assert set(out) == {"summary", "ranks", "friedman", "wilcoxon"}
    assert out["ranks"].loc["backtrace", "faith"] == 1 and out["ranks"].loc["backtrace", "sens"] == 3
    assert len(out["wilcoxon"]) == 4
