"""The design and the statistics of ``gate --against``: tolerances, per-pair ratios and their
sign-test interval, the sequential looks and their alpha spending, and the checks built from them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeopt.errors import InputError
from edgeopt.runtime import stats
from edgeopt.runtime.checks import Check

DEFAULT_PAIRS = 16  # the fixed design's customary size (``pairs=DEFAULT_PAIRS``)
MIN_PAIRS = 5
# The sequential design (module docstring): at most LOOKS looks, the first after FIRST_LOOK pairs, each
# next one after GROWTH x as many (rounded up to even); each look but the final one spends
# alpha / ALPHA_SHARES, the final one the rest (Bonferroni alpha spending).
LOOKS, FIRST_LOOK, GROWTH, ALPHA_SHARES = 8, 10, 1.5, 16
DEFAULT_MAX_TIME_S = 60.0
MEMORY_SLACK_MB = 1.0  # peak-memory differences below this are allocator noise, not growth
MEDIAN = 50.0
SUB_BLOCKS = 8  # per model and pair, in the pair's one process (A B B A ...): even, so each model leads half
FRESH_PAIRS = 2  # in-process pairs: single-model fresh-process pairs measured first, for memory and profile


# --------------------------------------------------------------------------- tolerances
def parse_fraction(value: Any, name: str) -> float:
    """``"5%"`` -> 0.05, ``0.05`` -> 0.05; a plain number must be a fraction in [0, 1) (``5`` is
    refused: write ``5%``). Raises InputError naming ``name``."""
    text = str(value).strip()
    percent = text.endswith("%")
    try:
        out = float(text[:-1] if percent else text) / (100.0 if percent else 1.0)
    except ValueError:
        out = math.nan
    if isinstance(value, bool) or not math.isfinite(out) or out < 0:
        raise InputError(f"{name}: expected a fraction such as 0.05 or a percentage such as 5%, found {text!r}")
    if not percent and out >= 1:
        raise InputError(
            f"{name}: expected a fraction in [0, 1) such as 0.05 or a percentage such as 5%, "
            f"found {text} (write {text}% for a percentage)"
        )
    return out


@dataclass(frozen=True)
class Tolerances:
    """How much worse NEW may be than OLD. Fractions: 0.05 = 5%; ``"5%"`` strings are accepted."""

    max_slowdown: float = 0.05  # latency ratio NEW/OLD at the percentile and the median
    max_memory_growth: float = 0.10  # peak memory ratio (differences below MEMORY_SLACK_MB ignored)
    max_size_growth: float = 0.10  # file size ratio
    atol: float = 1e-4  # outputs: |new - old| <= atol + rtol * |old|, every element
    rtol: float = 1e-3
    max_top1_disagreement: float = 0.0  # classifier outputs: share of rows whose arg-max differs

    def __post_init__(self) -> None:
        for name in ("max_slowdown", "max_memory_growth", "max_size_growth", "max_top1_disagreement"):
            value = getattr(self, name)
            if isinstance(value, (str, bool)):
                object.__setattr__(self, name, parse_fraction(value, name))
            elif not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name}: expected a fraction >= 0 (0.05 = 5%), found {value!r}")
            else:
                object.__setattr__(self, name, float(value))
        if self.max_top1_disagreement > 1:
            raise InputError(f"max_top1_disagreement: expected a share in [0, 1], found {self.max_top1_disagreement}")
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise InputError(f"{name}: expected a number >= 0, found {value!r}")
            object.__setattr__(self, name, float(value))


# --------------------------------------------------------------------------- statistics
def pair_ratios(new_blocks: Sequence[Sequence[float]], old_blocks: Sequence[Sequence[float]], q: float) -> np.ndarray:
    """r_i = Q_q(NEW block i) / Q_q(OLD block i) for each pair i (nearest-rank percentiles)."""
    if len(new_blocks) != len(old_blocks) or not new_blocks:
        raise ValueError(
            f"need the same number (>= 1) of NEW and OLD blocks, got {len(new_blocks)} and {len(old_blocks)}"
        )
    return np.array([stats.percentile(a, q) / stats.percentile(b, q) for a, b in zip(new_blocks, old_blocks)])


def ratio_interval(
    new_blocks: Sequence[Sequence[float]], old_blocks: Sequence[Sequence[float]], q: float, confidence: float
) -> tuple[float, float | None, float | None]:
    """(ratio, lower, upper): the median of the per-pair ratios at percentile q and its one-sided
    sign-test bounds at ``confidence`` (order statistics of the ratios; None where there are too
    few pairs for that confidence)."""
    r = np.sort(pair_ratios(new_blocks, old_blocks, q))
    lo, hi = stats.order_statistic_bounds(r.size, MEDIAN, confidence)
    return float(np.median(r)), (float(r[lo - 1]) if lo else None), (float(r[hi - 1]) if hi else None)


def min_pairs(confidence: float) -> int:
    """Fewest pairs with both sign-test bounds at ``confidence``: 0.5^n <= 1 - confidence."""
    return max(MIN_PAIRS, math.ceil(math.log(1 - confidence) / math.log(0.5)))


def look_confidence(confidence: float, earlier_looks: int, final: bool) -> float:
    """One-sided confidence of a look's bounds in the sequential design (Bonferroni alpha spending):
    alpha / ALPHA_SHARES for each look but the final one, which spends what the ``earlier_looks``
    left; summed along any run, the levels spent are alpha, so the stopping look's bounds hold at
    ``confidence``."""
    alpha = 1.0 - confidence
    share = alpha / ALPHA_SHARES
    return 1.0 - (alpha - earlier_looks * share if final else share)


def sequential_looks(confidence: float) -> tuple[int, ...]:
    """Pair counts of the LOOKS looks: FIRST_LOOK (or the fewest pairs with bounds at a non-final
    look's confidence), then x GROWTH, each rounded up to an even count. 0.95: 10, 16, 24, 36, 54,
    82, 124, 186."""
    n = max(FIRST_LOOK, min_pairs(look_confidence(confidence, 0, final=False)))
    looks = [n + n % 2]
    while len(looks) < LOOKS:
        nxt = math.ceil(looks[-1] * GROWTH)
        looks.append(nxt + nxt % 2)
    return tuple(looks)


def ratio_check(
    name: str,
    ratio: float,
    lower: float | None,
    upper: float | None,
    limit: float,
    *,
    source: str = "measured",
    detail: str = "",
) -> Check:
    """A Check on a NEW/OLD ratio: ``budget`` is the limit 1 + tolerance, unit ``x``."""
    if upper is not None and upper <= limit:
        passed = True
    elif lower is not None and lower > limit:
        passed = False
    else:
        passed = None
        detail = detail or (
            f"the limit {limit:.4g}x lies inside the confidence interval; measure longer "
            f"(--pairs, --min-time) to decide"
        )
    return Check(name, limit, ratio, upper, lower, passed, "x", source, detail)


def memory_check(new_mb: np.ndarray, old_mb: np.ndarray, growth: float) -> Check:
    """Peak memory NEW/OLD from per-block peaks. The ratio is of the medians, the bounds are
    min(NEW)/max(OLD) and max(NEW)/min(OLD); PASS when even the largest NEW block is within
    (1 + growth) x the smallest OLD block + MEMORY_SLACK_MB, FAIL when even the smallest NEW block
    is over (1 + growth) x the largest OLD block + MEMORY_SLACK_MB."""
    limit = 1.0 + growth
    med_new, med_old = float(np.median(new_mb)), float(np.median(old_mb))
    tiny = 1e-9
    ratio = med_new / max(med_old, tiny)
    lower, upper = (
        float(new_mb.min()) / max(float(old_mb.max()), tiny),
        float(new_mb.max()) / max(float(old_mb.min()), tiny),
    )
    if new_mb.max() <= limit * old_mb.min() + MEMORY_SLACK_MB:
        passed = True
    elif new_mb.min() > limit * old_mb.max() + MEMORY_SLACK_MB:
        passed = False
    else:
        passed = None
    detail = (
        f"NEW {med_new:.3g} MB, OLD {med_old:.3g} MB (medians of the blocks); growth under "
        f"{MEMORY_SLACK_MB:g} MB is ignored"
    )
    return Check("peak_memory_ratio", limit, ratio, upper, lower, passed, "x", "measured", detail)


def agreement_checks(agree: Mapping[str, Any], tol: Tolerances) -> list[Check]:
    """``outputs_close`` (every element within atol + rtol x |old|) and, with a classifier-shaped
    output, ``top1_disagreement`` (share of rows whose arg-max differs)."""
    worst = max(agree["outputs"].items(), key=lambda kv: kv[1]["max_abs_diff"], default=None)
    where = ""
    if worst is not None:
        name, s = worst
        where = f" at {name}{s['max_abs_diff_at']}" if s["max_abs_diff"] > 0 else ""
    detail = (
        f"max abs diff {agree['max_abs_diff']:.3g}{where}, max rel diff {agree['max_rel_diff']:.3g}, "
        f"{agree['mismatched_share']:.2%} of elements outside atol {tol.atol:g} + rtol {tol.rtol:g} x |old| "
        f"({agree['samples']} generated inputs)"
    )
    out = [
        Check(
            "outputs_close", tol.atol, agree["max_abs_diff"], None, None, bool(agree["close"]), "", "measured", detail
        )
    ]
    if agree.get("top1_disagreement") is not None:
        share = agree["top1_disagreement"]
        out.append(
            Check(
                "top1_disagreement",
                tol.max_top1_disagreement,
                share,
                None,
                None,
                share <= tol.max_top1_disagreement,
                "",
                "measured",
                f"{agree['top1_disagreements']} of {agree['rows']} rows change their arg-max",
            )
        )
    return out
