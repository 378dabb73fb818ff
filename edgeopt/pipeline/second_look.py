"""A plan of a lower tier ships only after the better tiers' finalists it passes over are measured beside it.

Selection tries tiers of validation score in turn and ships the first tier's fastest finalist whose
latency bound clears the budget with headroom (:mod:`edgeopt.pipeline.select`). Each tier is re-measured
in its own window, so on a busy host a better tier can miss the budget in a loaded window and a worse tier
clear it in a quieter one: resnet8 with one core busy (plans_stable_under_load, d766103, fourth compile),
uniform keep ¼ (trial #10, val 0.9717) re-measured at p50 0.0905 / p95 0.1203 ms against a 0.1147 ms
budget, and three tiers down trial #16 (val 0.9262) at p50 0.0740 / p95 0.0950 ms shipped, test F1 4.5 pt
lower; in the compile before, timed side by side as finalists, #16 had read p50 0.0924 against #10's
0.0824. The windows the tiers fell in, not a comparison of the plans, decided (decision 0120).

So when the plan to ship comes from a lower tier, the finalists of the better tiers that missed only on
latency (over the budget, or within it but short of the headroom) are measured again side by side with it,
in one window; the best of them that now clears the budget with headroom ships instead (the fastest of
its tier), and its row carries the second measurement, which its release gate starts from. None clearing:
the lower tier's plan ships, as before, now shown to be the one that fits in the window they shared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeopt.pipeline.config import FINALISTS
from edgeopt.pipeline.finalists import BOUND, DENSE_NUMBER, margin_ms, measure_together
from edgeopt.pipeline.record import TrialRecord
from edgeopt.pipeline.ties import tier_of

OVER = "latency not confirmed within the budget (upper bound over it)"  # a finalist's row: why it may not ship
SAME_SPEED = 1.03  # finalists within 3% of the fastest count as equally fast
MEASURED = ("latency_p50_ms", "latency_ms", BOUND, "gate")


def passed_over(tier: list[TrialRecord], rows: list[dict[str, Any]]) -> list[TrialRecord]:
    """The finalists of ``tier`` (its ``rows``) that missed only on latency: over the budget, or within it
    without the headroom; not dense, nor one dropped for being slower than dense."""
    missed = {r["trial"] for r in rows if not r["shipped"] and not r["dense"] and r["dropped"] in (None, OVER)}
    return [r for r in tier if r.number in missed]


def second_look(
    pick: TrialRecord,
    passed: list[TrialRecord],
    measure: Any,
    budget: float | None,
    rows: list[dict[str, Any]],
    tolerance: float,
    fastest: Callable[..., TrialRecord],
) -> TrialRecord:
    """``pick`` (a plan from a lower tier; the dense model is left to its release gate), or the best of
    ``passed`` (better tiers' finalists, best first) that clears ``budget`` with headroom when measured side
    by side with it, chosen among its tied tier by ``fastest`` (selection's own rule, ``select._fastest``, with no
    dense among them); ``rows`` (selection's finalist rows) updated with the second measurement and what shipped."""
    if not passed or budget is None or pick.number == DENSE_NUMBER:  # dense is held to its own release gate
        return pick
    again = measure_together(measure, [pick, *passed[:FINALISTS]])
    cleared = [r for r in passed[:FINALISTS] if again[r.number][BOUND] + margin_ms(again[r.number]) <= budget]
    by_trial = {row["trial"]: row for row in rows}
    for number, m in again.items():
        by_trial[number]["second_look"] = {k: m[k] for k in MEASURED if k in m}
    if not cleared:
        return pick
    best = fastest(tier_of(sorted(cleared, key=lambda r: -r.score), tolerance), again, lambda r: False, {})
    row = by_trial[best.number]
    row["first_look"] = {k: row[k] for k in MEASURED if k in row}
    row.update({k: again[best.number][k] for k in MEASURED if k in again[best.number]})
    row.update(shipped=True, dropped=None, within_budget=True, beside=pick.number)
    was = by_trial[pick.number]
    was.update(
        shipped=False,
        dropped=f"trial #{best.number}, a better tier, cleared the budget measured beside it (p95 "
        f"{again[best.number]['latency_ms']:.4f} vs {again[pick.number]['latency_ms']:.4f} ms)",
    )
    return best


__all__ = ["OVER", "SAME_SPEED", "passed_over", "second_look"]
