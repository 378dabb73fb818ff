"""Latency statistics: nearest-rank percentiles and distribution-free confidence bounds on them.

The bounds are binomial order statistics (as MLPerf's early-stopping estimate): among n i.i.d.
samples, the number below the true q-quantile is Binomial(n, q), so the k-th smallest sample is an
upper bound on the quantile with confidence P(Binomial(n, q) <= k - 1). No assumption is made
about the shape of the latency distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SUMMARY_KEYS = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least q% of the samples at or below it."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], but got {q=}")
    xs = np.sort(np.asarray(samples, dtype=float))
    if xs.size == 0:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100.0 * xs.size - 1e-9))
    return float(xs[rank - 1])


def summarize(samples: Sequence[float]) -> dict[str, float]:
    xs = np.asarray(samples, dtype=float)
    out = {f"p{q}": percentile(xs, q) for q in (50, 90, 95, 99)}
    out.update(
        mean=float(xs.mean()),
        std=float(xs.std(ddof=1)) if xs.size > 1 else 0.0,
        min=float(xs.min()),
        max=float(xs.max()),
    )
    return out


def _binom_cdf_table(n: int, p: float) -> np.ndarray:
    """cdf[k] = P(Binomial(n, p) <= k), for k = 0..n, computed in log space (n may be large)."""
    k = np.arange(n + 1)
    lgam = np.array([math.lgamma(i + 1) for i in range(n + 1)])
    with np.errstate(divide="ignore"):
        logpmf = lgam[n] - lgam - lgam[::-1] + k * math.log(p) + (n - k) * math.log1p(-p)
    pmf = np.exp(logpmf - logpmf.max())
    pmf /= pmf.sum()
    return np.cumsum(pmf)


def order_statistic_bounds(n: int, q: float, confidence: float) -> tuple[int | None, int | None]:
    """1-based ranks (lower, upper) of the one-sided bounds on the q-th percentile (q in (0, 100)).

    ``upper`` is the smallest k with P(X_(k) >= quantile) >= confidence; ``lower`` the largest j
    with P(X_(j) <= quantile) >= confidence. None where n samples are too few for that confidence.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), but got {confidence=}")
    if n < 1:
        return None, None
    p = q / 100.0
    if p >= 1:  # the maximum has no distribution-free upper bound
        return n, None
    cdf = _binom_cdf_table(n, p)  # cdf[k-1] = P(#below <= k-1) = P(X_(k) >= quantile)
    ks = np.nonzero(cdf >= confidence)[0]
    upper = int(ks[0]) + 1 if ks.size and ks[0] + 1 <= n else None
    # P(X_(j) <= quantile) = P(at least j samples <= quantile) = P(Binomial >= j)
    tail = 1.0 - cdf[:n]  # tail[j-1] = P(#below >= j) = 1 - P(#below <= j-1), j = 1..n
    js = np.nonzero(tail >= confidence)[0]
    lower = int(js[-1]) + 1 if js.size else None
    return lower, upper


def percentile_bounds(samples: Sequence[float], q: float, confidence: float) -> tuple[float | None, float | None]:
    """(lower, upper) confidence bounds on the q-th percentile; None where there are too few samples."""
    xs = np.sort(np.asarray(samples, dtype=float))
    lo, hi = order_statistic_bounds(xs.size, q, confidence)
    return (float(xs[lo - 1]) if lo else None, float(xs[hi - 1]) if hi else None)


def min_samples_for_upper_bound(q: float, confidence: float) -> int:
    """Fewest samples for which an upper bound on the q-th percentile exists: q^n <= 1 - confidence."""
    p = q / 100.0
    return math.ceil(math.log(1 - confidence) / math.log(p)) if p < 1 else math.inf  # type: ignore[return-value]
