"""Latency statistics: nearest-rank percentiles, distribution-free confidence bounds on them, and
robust dispersion with stalls counted apart.

The bounds are binomial order statistics (as MLPerf's early-stopping estimate): among n i.i.d.
samples, the number below the true q-quantile is Binomial(n, q), so the k-th smallest sample is an
upper bound on the quantile with confidence P(Binomial(n, q) <= k - 1). No assumption is made
about the shape of the latency distribution.

Dispersion (:func:`dispersion`) is robust: one 32 ms stall among 9 us runs sets a mean-based
coefficient of variation (std / mean) to ~3, while the median and the median absolute deviation
(MAD) do not move. ``relative_spread`` is 1.4826 x MAD / median (1.4826 makes the MAD estimate the
standard deviation of a normal distribution, so it reads as a CV would on a quiet host). A *stall*
is a run the process did not get the CPU for the whole time (preempted by other work, an
interrupt, a page fault): a sample above ``max(STALL_RATIO x median, median + STALL_K x sigma)``,
sigma the scaled MAD. Twice the median is far beyond a kernel's own run-to-run variation (a few
percent on a quiet host), and ``STALL_K`` = 5 robust sigmas keeps a wide but genuine distribution
(a model whose runs are bimodal) from being called stalls: a normal sample passes 5 sigma with
probability 3e-7. Stalls are counted and shown apart; they are what a loaded host adds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SUMMARY_KEYS = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")
MAD_TO_SIGMA = 1.4826  # MAD x this estimates a normal distribution's standard deviation
STALL_RATIO, STALL_K = 2.0, 5.0  # a stall: above max(STALL_RATIO x median, median + STALL_K x sigma)
NOISY_SPREAD = 0.10  # relative spread (robust CV) above which a measurement is noisy
NOISY_STALL_SHARE = 0.01  # stalls above this share reach the p99: the tail reported is the host's, not the model's


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


@dataclass(frozen=True)
class Dispersion:
    """Robust spread of a set of latency samples (ms), stalls counted apart (module docstring)."""

    median_ms: float
    mad_ms: float  # median absolute deviation from the median
    relative_spread: float  # MAD_TO_SIGMA x mad / median: a CV that one stall cannot set
    iqr_ms: float  # p75 - p25 (nearest rank)
    stalls: int  # samples above stall_threshold_ms
    stall_share: float
    stall_threshold_ms: float
    stall_ms: float  # time lost to stalls: sum over stalls of (sample - median)

    @property
    def noisy(self) -> str | None:
        """Why the measurement is noisy, in one line, or None: a wide spread, or stalls that reach the p99."""
        if self.relative_spread > NOISY_SPREAD:
            return (
                f"relative spread (1.48 x MAD / median) {self.relative_spread:.2f} > {NOISY_SPREAD:.2f} over the runs"
            )
        if self.stall_share > NOISY_STALL_SHARE:
            return (
                f"{self.stalls} stalls ({self.stall_share:.1%} of the runs > {self.stall_threshold_ms:.4g} ms, "
                f"more than {NOISY_STALL_SHARE:.0%}: the p99 is other work's, not the model's)"
            )
        return None

    def describe(self) -> str:
        """One line: the spread and the stalls."""
        stalls = (
            f"{self.stalls} stall{'s' * (self.stalls != 1)} ({self.stall_share:.1%} of runs > "
            f"{self.stall_threshold_ms:.4g} ms, {self.stall_ms:.3g} ms lost)"
            if self.stalls
            else f"no stalls (none > {self.stall_threshold_ms:.4g} ms)"
        )
        return (
            f"median {self.median_ms:.4g} ms, MAD {self.mad_ms:.3g} ms "
            f"(relative spread {self.relative_spread:.3f}); {stalls}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), noisy=self.noisy is not None, noisy_reason=self.noisy)


def dispersion(samples: Sequence[float]) -> Dispersion:
    """Median, MAD, IQR and the stalls of ``samples`` (module docstring: what a stall is, and why)."""
    xs = np.asarray(samples, dtype=float)
    if xs.size == 0:
        raise ValueError("no samples")
    med = float(np.median(xs))
    mad = float(np.median(np.abs(xs - med)))
    sigma = MAD_TO_SIGMA * mad
    threshold = max(STALL_RATIO * med, med + STALL_K * sigma)
    stalled = xs[xs > threshold]
    return Dispersion(
        median_ms=med,
        mad_ms=mad,
        relative_spread=sigma / med if med > 0 else 0.0,
        iqr_ms=percentile(xs, 75) - percentile(xs, 25),
        stalls=int(stalled.size),
        stall_share=float(stalled.size / xs.size),
        stall_threshold_ms=threshold,
        stall_ms=float((stalled - med).sum()),
    )
