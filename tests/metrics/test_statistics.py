"""Statistics over per-sample scores, on constructed inputs with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from metrics.statistics import (
    best_methods, bootstrap_ci, common_samples, comparison_outcome, friedman, holm, rank_biserial, rank_methods,
    summarise, table_statistics, wilcoxon_vs_reference,
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


def test_wilcoxon_direction_on_tied_zero_one_scores():
    """A pointing game: the reference hits on all 32 samples, the other on 23. The median paired
    difference is 0 (most pairs tie), yet the reference is the better one, and significantly so."""
    hits = np.ones(32)
    other = np.ones(32)
    other[:9] = 0.0
    scores = long_scores({"pointing": {"backtrace": hits, "smoothgrad": other},
                          "loss": {"backtrace": 1 - hits, "smoothgrad": 1 - other}})
    result = wilcoxon_vs_reference(scores, {"pointing": "higher", "loss": "lower"}).set_index("metric")
    assert np.median(hits - other) == 0.0
    for metric in ("pointing", "loss"):
        row = result.loc[metric]
        assert row.pvalue_holm < 0.05
        assert row.outcome == "better" and row.reference_better
        assert row.mean_advantage == pytest.approx(9 / 32)
        assert row.effect_size == pytest.approx(1.0)  # every non-tied pair favours the reference


def test_rank_biserial_by_hand():
    # |d| ranks of (3, -1, 2, 0): zero dropped; |3| -> 3, |-1| -> 1, |2| -> 2: (5 - 1) / 6
    assert rank_biserial(np.array([3.0, -1.0, 2.0, 0.0])) == pytest.approx(4 / 6)
    assert rank_biserial(np.array([0.0, 0.0])) == 0.0
    assert rank_biserial(np.array([-1.0, -1.0, 2.0])) == pytest.approx((3 - 3) / 6)


def test_a_significant_result_with_disagreeing_directions_claims_neither():
    assert comparison_outcome(0.01, 0.2, 0.5) == "better"
    assert comparison_outcome(0.01, -0.2, -0.5) == "worse"
    assert comparison_outcome(0.01, 0.2, -0.5) == "ambiguous"
    assert comparison_outcome(0.2, 0.2, 0.5) == "no difference"
    assert comparison_outcome(float("nan"), 0.2, 0.5) == "no difference"


def test_a_few_large_differences_against_many_small_ones_are_ambiguous():
    """Mean and ranks disagree: 12 small wins of the reference, 3 huge losses."""
    other = np.zeros(15)
    ref = np.concatenate([np.full(12, 0.1), np.full(3, -5.0)])
    row = wilcoxon_vs_reference(long_scores({"faith": {"backtrace": ref, "ig": other}}), {"faith": "higher"}).iloc[0]
    assert row.mean_advantage < 0 < row.effect_size
    assert row.outcome in ("ambiguous", "no difference") and not row.reference_better


def _summary(rows):
    return pd.DataFrame(rows, columns=["method", "metric", "mean", "ci_low", "ci_high"])


def test_bold_is_the_best_and_every_interval_that_overlaps_it():
    summary = _summary([
        ("a", "m", 0.50, 0.40, 0.60),   # best
        ("b", "m", 0.45, 0.35, 0.55),   # overlaps a
        ("c", "m", 0.30, 0.20, 0.40),   # touches a's lower end: overlaps
        ("d", "m", 0.10, 0.05, 0.39),   # below a's interval
        ("e", "m", float("nan"), float("nan"), float("nan")),
    ])
    assert sorted(best_methods(summary, "m", "higher")) == ["a", "b", "c"]
    # lower is better: d is best; b [0.35, 0.55] and c [0.20, 0.40] reach into [0.05, 0.39], a does not
    assert sorted(best_methods(summary, "m", "lower")) == ["b", "c", "d"]
    near_tie = _summary([(m, "infidelity", 0.002 + i * 1e-4, 0.0, 0.006) for i, m in enumerate("pqrs")])
    assert sorted(best_methods(near_tie, "infidelity", "lower")) == ["p", "q", "r", "s"]
    with pytest.raises(ValueError, match="direction of metric 'm' is 'up'"):
        best_methods(summary, "m", "up")


def test_common_samples_puts_every_method_on_the_same_samples():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([1.0, np.nan, 3.0, 4.0])
    never = np.full(4, np.nan)                           # the metric does not apply to this one
    scores = long_scores({"m": {"a": a, "b": b, "never": never}, "k": {"a": a, "b": a, "never": a}})
    common = common_samples(scores)
    kept = common[(common.metric == "m") & (common.method == "a")]
    assert kept["sample"].tolist() == [0, 2, 3]            # sample 1 dropped for a too
    assert len(common[(common.metric == "m") & (common.method == "never")]) == 4
    assert len(common[common.metric == "k"]) == 12
    stats_ = table_statistics(scores, {"m": "higher", "k": "higher"}, reference="a")
    summary = stats_["summary"].set_index(["method", "metric"])
    assert summary.loc[("a", "m"), "mean"] == pytest.approx(8 / 3)  # not 10 / 4
    assert summary.loc[("a", "m"), "n"] == 3 and summary.loc[("b", "m"), "n_nan"] == 1
    assert summary.loc[("a", "m"), "n_nan"] == 0
