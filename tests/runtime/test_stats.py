from __future__ import annotations

import math

import numpy as np
import pytest

from edgeopt.runtime import stats


def test_nearest_rank_percentile():
    xs = list(range(1, 101))  # 1..100
    assert stats.percentile(xs, 50) == 50
    assert stats.percentile(xs, 95) == 95
    assert stats.percentile(xs, 99.5) == 100
    assert stats.percentile([3, 1, 2], 50) == 2
    assert stats.percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError, match="q=0"):
        stats.percentile(xs, 0)


def _cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize("n, q, c", [(100, 95, 0.95), (300, 50, 0.95), (400, 99, 0.9), (59, 95, 0.95)])
def test_order_statistic_ranks_match_exact_binomial(n, q, c):
    lo, hi = stats.order_statistic_bounds(n, q, c)
    p = q / 100
    # upper: smallest k with P(Bin <= k-1) >= c
    k = next(k for k in range(1, n + 1) if _cdf(k - 1, n, p) >= c)
    assert hi == k
    # lower: largest j with P(Bin >= j) >= c
    j = max(j for j in range(1, n + 1) if 1 - _cdf(j - 1, n, p) >= c)
    assert lo == j
    assert lo < hi


def test_too_few_samples_have_no_upper_bound():
    assert stats.min_samples_for_upper_bound(95, 0.95) == 59
    assert stats.order_statistic_bounds(58, 95, 0.95)[1] is None
    assert stats.order_statistic_bounds(59, 95, 0.95)[1] == 59


def test_bounds_cover_the_true_quantile():
    """Monte-Carlo: the upper bound is >= the true p95 of an exponential in >= 95% of trials."""
    rng = np.random.default_rng(0)
    true_q = -math.log(0.05)  # p95 of Exp(1)
    trials, hits_hi, hits_lo = 2000, 0, 0
    for _ in range(trials):
        lo, hi = stats.percentile_bounds(rng.exponential(size=200), 95, 0.95)
        hits_hi += hi >= true_q
        hits_lo += lo <= true_q
    assert hits_hi / trials >= 0.94 and hits_lo / trials >= 0.94


def test_summary_keys():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0])
    assert set(s) == set(stats.SUMMARY_KEYS)
    assert s["min"] == 1 and s["max"] == 4 and s["p50"] == 2 and s["mean"] == 2.5
