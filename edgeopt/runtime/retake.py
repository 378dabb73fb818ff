"""A gate measurement taken again while other work disturbed it and its latency did not pass.

On a shared host a neighbour's burst can put a model over its budget for the length of one
measurement. A verdict must not hang on that: when the latency check does not pass and the
measurement shows the disturbance (:attr:`~edgeopt.runtime.stats.Dispersion.noisy`: stalls past 1 %
of the runs, or a wide spread; or, when the model was measured before (:class:`Expected`), its p50 or
its latency at the budget's percentile over 1 + :data:`REPRODUCE` x the earlier one), it is taken again, up
to :data:`RETAKES` times in all, and the least disturbed try counts; with every try disturbed and the
model measured within the budget before, the latency is not decided (:func:`undecided`). A model that is
slow when measured quietly fails at once: nothing flags its measurement.
Used by ``edgeopt gate`` (budgets only; ``--against`` has its own counterbalanced protocol) and by the
compile's release measurement. Torch-free.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from edgeopt.runtime import gate as gate_mod  # gate_mod.gate looked up per call: the tests replay measurements
from edgeopt.runtime.checks import combine

RETAKES = 3  # measurements at most, while other work disturbs one whose latency did not pass
# A measurement whose p50 is this much over the model's own earlier one was slowed whole by other work: a
# file's median does not move 30 % in a minute by itself (vit, one core busy: finalist p50 0.152 ms, release
# 0.260 ms with a narrow spread and no stall, the same file 0.151 ms right after).
SHIFTED = 1.3
# Headroom for one more measurement of the latency at the budget's percentile. The same plans, re-measured
# as finalists by the five compiles of a stability run with one core busy, moved p95 max / min 1.02-1.47
# and p50 1.01-1.65 (median over plans, eight runs; decision 0108): a margin built on the p50 (the tail,
# p95 less p50) added the p50's noise to the p95's. A measurement whose p95 is over (1 + REPRODUCE) x the
# model's own earlier one was taken in another window than selection left room for: mobilenet, finalist
# p95 0.402 ms, release 0.564 ms, the p50 unmoved (0.368 / 0.370 ms), neither spread nor stalls flagged.
# Selection leaves the same headroom (pipeline/finalists.py ``margin_ms``).
REPRODUCE = 0.05


@dataclasses.dataclass(frozen=True)
class Expected:
    """The model as measured before (the compile's finalist measurement of the plan that ships): its p50
    and, when known, its latency at ``percentile`` (the budget's)."""

    p50_ms: float | None = None
    percentile: float = 95.0
    at_ms: float | None = None


def why_disturbed(g: Any, expected: Expected | None = None) -> str | None:
    """Why other work disturbed a gate's measurement (our own statistics; its p50 :data:`SHIFTED` over the
    model's own measured before, or its latency at the budget's percentile over 1 + :data:`REPRODUCE` x the
    earlier one: ``expected``), or None."""
    disp = getattr(g.bench, "dispersion", None)
    if disp is not None and disp.noisy is not None:
        return str(disp.noisy)
    if expected is None:
        return None
    e, p50 = expected, float(g.bench.latency_ms["p50"])
    if e.p50_ms and p50 > SHIFTED * e.p50_ms:
        return f"p50 {p50:.4g} ms, {p50 / e.p50_ms:.2f} x the model's own {e.p50_ms:.4g} ms before"
    if e.at_ms and (at := float(g.bench.latency_at(e.percentile))) > (1 + REPRODUCE) * e.at_ms:
        return (
            f"p{e.percentile:g} {at:.4g} ms, {at / e.at_ms:.2f} x the model's own {e.at_ms:.4g} ms before "
            f"(p50 {p50:.4g} ms): the window's tail"
        )
    return None


def disturbed(g: Any, expected: Expected | None = None) -> bool:
    """A measurement whose latency did not pass while other work disturbed it (:func:`why_disturbed`)."""
    latency = [c for c in g.checks if c.name.startswith("latency")]
    return any(c.status != "pass" for c in latency) and why_disturbed(g, expected) is not None


def disturbance(g: Any, expected: Expected | None = None) -> tuple[bool, bool, float, float, float, float]:
    """Flagged by its own statistics (stalls, spread), flagged against the model's own earlier measurement,
    then how far its latency reads against the budget (the largest measured / budget of its latency checks),
    stall share, relative spread and p50: the least disturbed measurement is the model's, not its
    neighbours'. (By stall share first, a try flagged for its spread, with fewer stalls, counted over one
    that nothing flagged: a resnet8 compile reported the disturbed try's p95. By stall share before the
    latency, of two tries both flagged for the window's tail, the first, inconclusive at p95 0.1552 ms
    against 0.1555, counted over the second, which passed at 0.1489, for 0.40 % stalls against 0.44 %:
    other work only adds time, so of two tries flagged alike the faster is the less disturbed.)"""
    disp = getattr(g.bench, "dispersion", None)
    stalls, spread = (disp.stall_share, disp.relative_spread) if disp is not None else (0.0, 0.0)
    own = disp is not None and disp.noisy is not None
    latency = [c for c in g.checks if c.name.startswith("latency") and c.measured is not None and c.budget]
    over = max((float(c.measured) / float(c.budget) for c in latency), default=0.0)
    return own, why_disturbed(g, expected) is not None, over, stalls, spread, float(g.bench.latency_ms["p50"])


def try_summary(g: Any, expected: Expected | None = None) -> dict[str, Any]:
    """One try as the result lists it: verdict, p50, stall share and why it was disturbed (None: it was not)."""
    disp = g.bench.dispersion
    return {
        "verdict": g.verdict,
        "p50_ms": float(g.bench.latency_ms["p50"]),
        "stall_share": round(disp.stall_share, 4) if disp is not None else None,
        "noisy": why_disturbed(g, expected),
    }


def gate_retaking(
    path: str | os.PathLike[str],
    target: Any,
    *,
    retakes: int = RETAKES,
    expected: Expected | None = None,
    **gate_kwargs: Any,
) -> Any:
    """:func:`~edgeopt.runtime.gate.gate` of ``path``, taken again (``retakes`` measurements in all at most)
    while its latency does not pass and other work disturbed it (``expected``: the model as measured
    before, :class:`Expected`); the least disturbed try, with every try in its ``tries`` when there were
    several."""
    tries = [gate_mod.gate(path, target, **gate_kwargs)]
    while len(tries) < max(1, int(retakes)) and disturbed(tries[-1], expected):
        tries.append(gate_mod.gate(path, target, **gate_kwargs))
    best = min(tries, key=lambda t: disturbance(t, expected))
    if len(tries) == 1:
        return best
    best = dataclasses.replace(best, tries=tuple(try_summary(t, expected) for t in tries))
    if len(tries) >= max(1, int(retakes)) and all(disturbed(t, expected) for t in tries):
        return undecided(best, expected)
    return best


def undecided(g: Any, expected: Expected | None) -> Any:
    """Every try disturbed, and the model measured within the budget before (``expected``, the compile's
    finalist): a latency check the windows failed is not decided (INCONCLUSIVE, exit 3), not FAIL. Other
    work in every window cannot overturn the quieter measurement; nor can it confirm it. (cnn1d at 5baed22,
    frontier: finalist p95 0.0193 ms against 0.0352; three release windows with 9.4 % stalls or the p50 1.6x
    the finalist's, FAIL at 0.0404 ms; the same file timed side by side after: p95 0.0206 ms.) Without an
    earlier measurement within the budget, the least disturbed try decides, as before."""
    if expected is None or expected.at_ms is None:
        return g
    at = expected.at_ms
    checks = tuple(
        dataclasses.replace(
            c,
            passed=None,
            detail=f"other work disturbed all {len(g.tries)} measurements; before, p{expected.percentile:g} "
            f"{at:.4g} ms was within it: measure again on a quieter host (edgeopt gate)",
        )
        if c.name.startswith("latency") and c.passed is False and at <= c.budget
        else c
        for c in g.checks
    )
    others = g.comparison.checks if g.comparison is not None else ()
    return dataclasses.replace(g, checks=checks, verdict=combine(checks + others))


__all__ = [
    "REPRODUCE",
    "RETAKES",
    "Expected",
    "SHIFTED",
    "disturbance",
    "disturbed",
    "gate_retaking",
    "try_summary",
    "undecided",
    "why_disturbed",
]
