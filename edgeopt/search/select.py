"""Choosing what ships: finalists among the near-tied feasible trials, re-measured longer; the dense
input model when no plan beats it; the least-violating plan when nothing is feasible.

Validation scores of students distilled from one teacher often tie, and the screen's 0.1 s
measurements are too noisy to rank plans or to settle one at the edge of the latency budget. So
plans within ``f1_tolerance`` of the best feasible score form a tier; its fastest few distinct plans
are measured again (``remeasure``); those over the latency budget drop out (then the next tier is
tried), and those with 3% of headroom under it are preferred; of the rest the fastest (within 3%),
then the one with fewest nodes, ships.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeopt.search.config import FINALISTS
from edgeopt.search.record import TrialRecord

Remeasure = Callable[[TrialRecord], dict[str, Any]]
TIERS = 3
QUALITY_MARGIN = 0.02  # with nothing feasible, a plan ships only within 2 pt of the quality floor
SAME_SPEED = 1.03  # finalists within 3% of the fastest count as equally fast
# Finalists with this much headroom under the latency budget are preferred: the release measurement of a
# plan at the very edge fails about half the time (resnet8: 65.3 µs against a 64.9 µs budget).
HEADROOM = 0.97


@dataclass
class Choice:
    """The trial to ship (None: the input model), why, and the finalists measured on the way."""

    record: TrialRecord | None
    notes: list[str] = field(default_factory=list)
    finalists: list[dict[str, Any]] = field(default_factory=list)


def screened(record: TrialRecord) -> dict[str, Any]:
    """The screen's own figures of a trial, in the shape ``remeasure`` returns."""
    s = record.screen
    return {"latency_p50_ms": s.latency_p50_ms if s else math.inf, "latency_ms": s.latency_ms if s else math.inf,
            "nodes": s.nodes if s else 0}


def candidates(records: list[TrialRecord]) -> list[TrialRecord]:
    """Complete trials that have a plan: what selection chooses from."""
    return [r for r in records if r.state == "complete" and r.plan]


def _distinct_by_score(feasible: list[TrialRecord]) -> list[TrialRecord]:
    """One trial per (plan, dtype), best validation score first (then the fastest on the screen)."""
    unique: dict[str, TrialRecord] = {}
    for r in sorted(feasible, key=lambda r: (-r.score, r.latency_p50_ms)):
        unique.setdefault(json.dumps([r.plan, r.dtype.value], sort_keys=True), r)
    return list(unique.values())


def pick_from_tier(tier: list[TrialRecord], measure: Remeasure,
                   latency_budget: float | None) -> tuple[TrialRecord | None, list[dict[str, Any]]]:
    """The fastest few of one tier re-measured; the one to ship (or None) and a row per finalist."""
    finalists = sorted(tier, key=lambda r: r.latency_p50_ms)[:FINALISTS]
    measured = {r.number: measure(r) for r in finalists}
    within = [r for r in finalists if latency_budget is None or measured[r.number]["latency_ms"] <= latency_budget]
    safe = [r for r in within if latency_budget is None or measured[r.number]["latency_ms"] <= HEADROOM * latency_budget]
    within = safe or within
    best = None
    if within:
        fastest = min(measured[r.number]["latency_p50_ms"] for r in within)
        quick = [r for r in within if measured[r.number]["latency_p50_ms"] <= SAME_SPEED * fastest]
        best = min(quick, key=lambda r: (measured[r.number]["nodes"], -r.score,
                                         r.params if r.params is not None else math.inf))
    rows = [dict(measured[r.number], trial=r.number, plan=r.plan, dtype=r.dtype.value, val_score=r.score,
                 within_budget=r in within, shipped=r is best) for r in finalists]
    return best, rows


def choose_finalist(records: list[TrialRecord], f1_tolerance: float = 0.0, remeasure: Remeasure | None = None,
                    latency_budget: float | None = None, quality_floor: float | None = None) -> Choice:
    """The plan to ship among complete trials: the best feasible tier's fastest re-measured finalist
    within the latency budget; with no feasible trial, the least-violating one (within
    :data:`QUALITY_MARGIN` of ``quality_floor`` when given)."""
    trials = candidates(records)
    feasible = [r for r in trials if r.feasible]
    if not feasible:
        return closest(trials, quality_floor)
    measure = remeasure or screened
    remaining = _distinct_by_score(feasible)
    rows: list[dict[str, Any]] = []
    for _ in range(TIERS):
        if not remaining:
            break
        top = remaining[0].score
        tier = [r for r in remaining if r.score >= top - f1_tolerance]
        best, tier_rows = pick_from_tier(tier, measure, latency_budget)
        rows += tier_rows
        if best is not None:
            return Choice(best, [], rows)
        remaining = [r for r in remaining if r not in tier]
    # Nothing held up under the longer measurement: ship the screen's best, and say so.
    best = max(feasible, key=lambda r: (r.score, -r.latency_p50_ms))
    return Choice(best, ["no finalist met the latency budget when measured again for longer; shipping the "
                         "best plan by the screen"], rows)


def closest(trials: list[TrialRecord], quality_floor: float | None = None) -> Choice:
    """Best effort when no trial is feasible: the plan closest to the budgets (sum of relative
    violations), then the best score; with ``quality_floor``, only among the trained plans within
    :data:`QUALITY_MARGIN` of it (none: the input model ships, and the note says how far the best was)."""
    if not trials:
        return Choice(None, ["no trial completed: the input model is shipped as it is"])
    if quality_floor is not None:
        trained = [r for r in trials if r.val and r.val.get("score") is not None]
        near = [r for r in trained if r.score >= quality_floor - QUALITY_MARGIN]
        if not near:
            best = max(trained, key=lambda r: r.score, default=None)
            how = "none was trained" if best is None else (
                f"the best trained plan (trial {best.number}) scores {best.score:.4f}, "
                f"{100 * (quality_floor - best.score):.1f} pt below")
            return Choice(None, [f"no trial met every budget, and no plan is within {100 * QUALITY_MARGIN:.0f} pt of "
                                 f"the quality floor {quality_floor:.4f} ({how}): the input model is shipped as it is"])
        trials = near

    def violation(r: TrialRecord) -> float:
        return r.constraints.total_violation() if r.constraints is not None else math.inf

    best = min(trials, key=lambda r: (violation(r), -(r.score or 0.0)))
    names = best.constraints.violated() if best.constraints is not None else []
    return Choice(best, [f"no trial met every budget in the search; shipping the closest plan (over on: "
                         f"{', '.join(names) or 'none'}), after the longer final fine-tune"])


def baseline_wins(baseline: Any, best: TrialRecord | None, budget: Any, f1_tolerance: float) -> bool:
    """Whether the dense input model (``baseline``: gate, bench, metrics), already within every budget
    and the quality floor, is at least as good as ``best``: better score, or as good and as fast."""
    if baseline.gate.verdict != "pass":
        return False
    score = baseline.metrics["val"]["score"]
    if budget.min_f1 is not None and score < budget.min_f1:
        return False
    if best is None or not best.feasible:
        return True
    base_p50 = float(baseline.bench.latency_ms["p50"])
    return best.score < score - f1_tolerance or (best.score <= score + f1_tolerance and base_p50 <= best.latency_p50_ms)


BASELINE_NOTE = ("the dense input model meets every budget and no feasible plan beat it on F1 or latency: it is "
                 "shipped as it is")


def select(records: list[TrialRecord], baseline: Any, budget: Any, f1_tolerance: float,
           remeasure: Remeasure | None) -> Choice:
    """The whole selection: :func:`choose_finalist`, then the dense model if :func:`baseline_wins`."""
    floor = budget.min_f1 if budget.min_f1 is not None else baseline.metrics["val"]["score"]
    choice = choose_finalist(records, f1_tolerance, remeasure, budget.latency_ms, quality_floor=floor)
    if baseline_wins(baseline, choice.record, budget, f1_tolerance):
        return Choice(None, [BASELINE_NOTE], choice.finalists)
    return choice


__all__ = ["QUALITY_MARGIN", "BASELINE_NOTE", "Choice", "baseline_wins", "candidates", "choose_finalist", "closest", "pick_from_tier",
           "screened", "select"]
