"""How small a sample can be before no Holm-corrected Wilcoxon test can reach 0.05, and how every
number of a table and of the console is printed (three significant digits)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from experiments.run.runner import print_summary
from metrics.statistics import holm, significant, smallest_wilcoxon_pvalue, wilcoxon_can_reach


@pytest.mark.parametrize("value,text", [
    (0.00129, "0.00129"), (7.0e-4, "7.00e-04"), (0.4219, "0.422"), (1.0, "1.00"), (-1.0, "-1.00"),
    (0.99961, "1.00"), (12.345, "12.3"), (257.3, "257"), (12345.0, "1.23e+04"), (9.9996e-4, "0.00100"),
    (1.59e-06, "1.59e-06"), (0.0, "0"), (float("nan"), "nan"), (None, "nan"), (-0.0629, "-0.0629"),
])
def test_three_significant_digits(value, text):
    assert significant(value) == text


@pytest.mark.parametrize("n", [1, 4, 5, 8, 20])
def test_smallest_wilcoxon_p_is_what_scipy_gives_n_one_signed_differences(n):
    # small n: scipy's exact (or, with ties, permutation) null, 2 / 2**n; at 20 with ties its normal
    # approximation, whose tie correction makes all-tied differences the extreme: 2 x sf(sqrt(n))
    assert smallest_wilcoxon_pvalue(n) == pytest.approx(min(2 / 2**n, 2 * stats.norm.sf(np.sqrt(n))) if n > 13
                                                        else 2 / 2**n)
    # no way of drawing n differences gives less: random magnitudes, ties and mixed signs
    rng = np.random.default_rng(n)
    for _ in range(30):
        d = rng.choice([1.0, 2.0, 3.0], n) * rng.choice([1.0, 1.0, 1.0, -1.0], n)
        assert stats.wilcoxon(d).pvalue >= smallest_wilcoxon_pvalue(n) - 1e-15


def test_eight_samples_and_ten_comparisons_cannot_reach_the_level():
    # 2 / 2**8 = 0.0078 per test; Holm multiplies the smallest of ten by ten: 0.078
    assert smallest_wilcoxon_pvalue(8) == pytest.approx(2 / 256)
    assert not wilcoxon_can_reach(8, 10) and wilcoxon_can_reach(8, 6) and wilcoxon_can_reach(16, 10)
    assert holm([smallest_wilcoxon_pvalue(8)] * 10).min() == pytest.approx(10 / 128)
    assert not wilcoxon_can_reach(5, 1) and smallest_wilcoxon_pvalue(0) == 1.0


def test_the_console_prints_three_significant_digits(capsys, tmp_path):
    record = {"model": {"name": "mlp", "test_accuracy": 0.9}, "dataset": {"name": "toy"}, "method": {"name": "ig"},
              "n_samples": 8, "runtime": {"seconds_per_sample": 0.000123},
              "metrics": {"infidelity": {"direction": "lower", "mean": 7.0e-4, "n": 8, "n_nan": 0},
                          "kept": {"direction": "higher", "mean": 0.00129, "n": 8, "n_nan": 0}}}
    print_summary(record, tmp_path / "record")
    out = capsys.readouterr().out
    assert "7.00e-04" in out and "0.00129" in out and "0.0000" not in out and "1.23e-04 s/sample" in out
