"""Choosing what ships: finalists among the near-tied feasible trials, re-measured longer, with the
dense input model among them whenever it meets every budget; the least-violating plan when nothing
is feasible.

Validation scores of students distilled from one teacher often tie, and the screen's 0.1 s
measurements are too noisy to rank plans or to settle one at the edge of the latency budget. So
plans tied with the best feasible score form a tier (within ``f1_tolerance`` or one standard error of
the paired difference on the validation samples: :mod:`~edgeopt.pipeline.ties`); its fastest few distinct plans
are measured again (``remeasure``); those whose latency the release gate could not confirm drop out
(:mod:`~edgeopt.pipeline.finalists`: the upper confidence bound on the budget's percentile, not the point
p95, must be within the budget), and of the rest those whose bound clears the budget with the headroom a
re-measurement needs (:func:`margin_ms`) count; of these the fastest at the budget's percentile (within
3%), then the one with fewest nodes, ships. With none in a tier the next is tried (a lower tier's pick
measured beside the better tiers' finalists it passes over: :mod:`~edgeopt.pipeline.second_look`); with
none in any, dense ships if it meets every budget, else the budget is refused (``shipped: refused``) with
the finalists' numbers and the budget that would be confirmed: it sits inside the noise, and a plan
shipped there fails its release gate about as often as it passes.

The dense input model (fp32; its int8 variant too, when a trial measured it) is a finalist whenever
it meets every budget: it is re-measured like the plans, in the same round (before and after them,
the faster of the two counts), and takes the tier of its validation score. On such loose budgets a
plan that measures slower than dense (p50, by more than 3%) never ships, whatever its tier; among the
tied, dense ships unless a plan is faster by more than 3%. F1 stays first: a plan in a better tier
than dense ships when it is not slower than dense beyond those 3% (dense's p50 is the faster of two
windows, so a plan as fast as dense reads slower about half the time: decision 0109). What shipped
and why is in :attr:`Choice.decision` (and ``compile.json``'s ``selection``), and in a note.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from edgeopt.compiler.formats import is_dense_plan
from edgeopt.pipeline.config import FINALISTS
from edgeopt.pipeline.finalists import (
    BOUND,
    Bounded,
    DenseRef,
    Remeasure,
    dense_record,
    margin_ms,
    measure_together,
    screened,
)
from edgeopt.pipeline.record import DType, TrialRecord
from edgeopt.pipeline.second_look import OVER, SAME_SPEED, passed_over, second_look
from edgeopt.pipeline.ties import tagged, tier_of
from edgeopt.runtime.retake import REPRODUCE

TIERS = 3  # tiers of F1 tried at least
MAX_REMEASURED = 4 * FINALISTS  # plans re-measured at most, tiers past TIERS included, before giving up
QUALITY_MARGIN = 0.02  # with nothing feasible, a plan ships only within 2 pt of the quality floor
# A finalist ships first when its bound clears the budget with headroom (:func:`margin_ms`); with none in a
# tier the next is tried, within the budget without headroom or over it (decision 0108). Never one without.
DENSE = "dense"  # the ``trial`` of the dense input model's finalist row (it is no trial)
BASELINE_NOTE = "dense shipped: it met every budget and no plan beat it"


@dataclass
class Choice:
    """The trial to ship (None: the input model), why, and the finalists measured on the way.

    ``decision``: ``shipped`` ("dense", "plan", "closest", "screen-best" or "refused"), ``trial``, ``reason``
    (a code: dense-not-beaten, better-f1, faster-at-tied-f1, dense-over-budget, nothing-feasible,
    nothing-held-up, not-confirmed), ``why`` (the sentence also in ``notes``), ``dense`` (its re-measurement, or
    None when it misses a budget) and, for a plan, its re-measured ``latency_p50_ms``/``latency_ms``."""

    record: TrialRecord | None
    notes: list[str] = field(default_factory=list)
    finalists: list[dict[str, Any]] = field(default_factory=list)
    decision: dict[str, Any] = field(default_factory=dict)


def candidates(records: list[TrialRecord]) -> list[TrialRecord]:
    """Complete trials selection chooses from: those with a plan, or dense in int8 (dense in fp32 is
    the input model itself, which :func:`select` adds as :class:`DenseRef`)."""
    return [r for r in records if r.state == "complete" and not (is_dense_plan(r.plan) and r.dtype is DType.FP32)]


def _distinct_by_score(feasible: list[TrialRecord]) -> list[TrialRecord]:
    """One trial per (plan, dtype), best validation score first (then the fastest on the screen)."""
    unique: dict[str, TrialRecord] = {}
    for r in sorted(feasible, key=lambda r: (-r.score, r.latency_p50_ms)):
        unique.setdefault(json.dumps([r.plan, r.dtype.value], sort_keys=True), r)
    return list(unique.values())


def _dropped(
    r: TrialRecord, m: dict[str, Any], latency_budget: float | None, dense: DenseRef | None, f1_tolerance: float = 0.0
) -> str | None:
    """Why a re-measured finalist may not ship (None: it may): over the latency budget; on budgets dense
    meets, slower than dense by more than :data:`SAME_SPEED`, or (its val F1 tied with dense's, within
    ``f1_tolerance``) not faster by more than :data:`SAME_SPEED`. Dense itself is held to its release
    measurement (its gate), not to these."""
    if dense is not None and r is dense.record:
        return None
    if latency_budget is not None and m.get(BOUND, m["latency_ms"]) > latency_budget:
        return OVER
    if dense is None:
        return None
    p50, d = m["latency_p50_ms"], dense.measured["latency_p50_ms"]
    if p50 > SAME_SPEED * d:  # dense's p50 is the faster of two windows: within 3 % is the same speed
        return f"slower than dense (p50 {p50:.4f} vs {d:.4f} ms)"
    if r.score <= dense.record.score + f1_tolerance and SAME_SPEED * p50 > d:
        return f"val F1 tied with dense's and not {100 * (SAME_SPEED - 1):.0f}% faster (p50 {p50:.4f} vs {d:.4f} ms)"
    return None


def _fastest(
    within: list[TrialRecord], measured: dict[Any, dict[str, Any]], is_dense: Any, dropped: dict[Any, str | None]
) -> TrialRecord:
    """The one to ship among ``within``: the fastest at the budget's percentile (within :data:`SAME_SPEED`),
    dense first among those, then the fewest nodes; when dense wins, the others' rows say why (``dropped``)."""
    fastest = min(measured[r.number]["latency_ms"] for r in within)
    quick = [r for r in within if measured[r.number]["latency_ms"] <= SAME_SPEED * fastest]
    best = min(
        quick,
        key=lambda r: (
            not is_dense(r),
            measured[r.number]["nodes"],
            -r.score,
            r.params if r.params is not None else math.inf,
        ),
    )
    d95 = measured[best.number]["latency_ms"]  # dense wins: faster at the p50, not at the budget's percentile
    for r in within if is_dense(best) else ():
        why = f"not {100 * (SAME_SPEED - 1):.0f}% faster than dense at the budget's percentile"
        dropped[r.number] = None if r is best else f"{why} ({measured[r.number]['latency_ms']:.4f} vs {d95:.4f} ms)"
    return best


def pick_from_tier(
    tier: list[TrialRecord],
    measure: Remeasure,
    latency_budget: float | None,
    dense: DenseRef | None = None,
    f1_tolerance: float = 0.0,
) -> tuple[TrialRecord | None, list[dict[str, Any]], bool]:
    """The fastest few of one tier re-measured (and dense, when it is in the tier); the one to ship (or
    None), a row per finalist, and whether it is confirmed: its bound clears the budget with headroom. The
    fastest is taken at the budget's percentile, which holds between windows where the p50 does not."""

    def is_dense(r: TrialRecord) -> bool:
        return dense is not None and r is dense.record

    finalists = sorted([r for r in tier if not is_dense(r)], key=lambda r: r.latency_p50_ms)[:FINALISTS]
    measured = measure_together(measure, finalists)  # side by side: the fastest of them ships
    if dense is not None:
        dense.confirm(measure)
        if dense.record in tier:
            finalists.append(dense.record)
            measured[dense.record.number] = dense.measured
    dropped = {r.number: _dropped(r, measured[r.number], latency_budget, dense, f1_tolerance) for r in finalists}
    within = [r for r in finalists if dropped[r.number] is None]
    safe = [
        r
        for r in within
        if is_dense(r)
        or latency_budget is None
        or measured[r.number][BOUND] + margin_ms(measured[r.number]) <= latency_budget
    ]
    confirmed = bool(safe)
    within = safe or within
    best = _fastest(within, measured, is_dense, dropped) if within else None
    rows = [
        dict(
            measured[r.number],
            trial=DENSE if is_dense(r) else r.number,
            plan=r.plan,
            dtype=r.dtype.value,
            val_score=r.score,
            within_budget=dropped[r.number] != OVER,
            shipped=r is best and confirmed,
            dropped=dropped[r.number],
            dense=is_dense(r) or is_dense_plan(r.plan),
        )
        for r in finalists
    ]
    return best, rows, confirmed


def choose_finalist(
    records: list[TrialRecord],
    f1_tolerance: float = 0.0,
    remeasure: Remeasure | None = None,
    latency_budget: float | None = None,
    quality_floor: float | None = None,
    dense: TrialRecord | None = None,
    latency_percentile: float = 95.0,
) -> Choice:
    """The plan to ship among complete trials: the best feasible tier's fastest re-measured finalist
    whose latency bound (at ``latency_percentile``, as the gate takes it) is within the latency budget;
    tiers further down are tried while none is (:data:`TIERS`, then up to :data:`MAX_REMEASURED` plans).
    ``dense``: the input model as a finalist (:func:`dense_record`), given when it meets every budget; no
    plan slower than it then ships, and it ships when no plan holds up. With neither a feasible trial nor
    ``dense``, the least-violating trial (within :data:`QUALITY_MARGIN` of ``quality_floor`` when given)."""
    trials = candidates(records)
    feasible = [r for r in trials if r.feasible]
    if not feasible and dense is None:
        return closest(trials, quality_floor)
    raw = (remeasure or screened) if feasible else screened  # dense alone: its release measurement
    measure = Bounded(raw, latency_percentile, latency_budget)
    ref = DenseRef.measure(dense, measure) if dense is not None else None
    remaining = _distinct_by_score(feasible + ([dense] if dense is not None else []))
    rows: list[dict[str, Any]] = []
    tiers, passed = 0, []  # passed: better tiers' finalists that missed on latency alone (pipeline/second_look.py)
    within = False  # some tier's pick was within the budget, though not with headroom
    while remaining and (tiers < TIERS or sum(r["trial"] != DENSE for r in rows) < MAX_REMEASURED):
        tier = tier_of(remaining, f1_tolerance)  # the best and the plans tied with it (pipeline/ties.py)
        best, tier_rows, confirmed = pick_from_tier(tier, measure, latency_budget, ref, f1_tolerance)
        rows += tagged(tier_rows, tier, f1_tolerance, tiers)  # what tied them, for the report
        if best is not None and confirmed:
            best = second_look(best, passed, measure, latency_budget, rows, f1_tolerance, _fastest) if tiers else best
            return decide(best, rows, ref, f1_tolerance)
        passed += passed_over(tier, tier_rows)
        within = within or best is not None
        remaining = [r for r in remaining if r not in tier]
        tiers += 1
    if ref is not None:  # no plan beat dense (confirmed: it met every budget) within the tiers tried
        return decide(ref.record, rows, ref, f1_tolerance)
    if latency_budget is None or not rows:  # nothing was measured against a latency budget
        best = max(feasible, key=lambda r: (r.score, -r.latency_p50_ms))
        why = "no finalist was measured again; shipping the best plan by the screen"
        decision = {"shipped": "screen-best", "trial": best.number, "reason": "nothing-held-up", "why": why}
        return Choice(best, [why], rows, {**decision, "dense": None})
    return _refused(rows, latency_budget, within)


def _refused(rows: list[dict[str, Any]], budget: float, within: bool) -> Choice:
    """No finalist cleared the latency budget with headroom and the dense model misses it: the budget
    sits inside the measurements' noise, and the compile refuses it with the finalists' numbers rather
    than ship a plan whose release gate reads over it as often as under (vit with one core busy, budget
    on its fastest plans: the three compiles that shipped such a plan failed 2 release gates of 3).
    ``within``: some finalist's bound was within the budget, though not with headroom."""
    plans = sorted((r for r in rows if r["trial"] != DENSE), key=lambda r: r.get(BOUND, r["latency_ms"]) + margin_ms(r))
    need = plans[0].get(BOUND, plans[0]["latency_ms"]) + margin_ms(plans[0])
    shown = "; ".join(
        f"trial #{r['trial']} (val {r['val_score']:.4f}): p50 {r['latency_p50_ms']:.4f}, bound "
        f"{r.get(BOUND, r['latency_ms']):.4f} + headroom {margin_ms(r):.4f} ms"
        for r in plans[:3]
    )
    how = f"within it, but not with the {100 * REPRODUCE:g} % headroom another window needs" if within else "over it"
    why = (
        f"latency budget {budget:.4f} ms is within the noise of the plans that meet it: measured again for "
        f"longer, the finalists' upper bounds are {how} ({shown}). A budget of {need:.4f} ms would be "
        "confirmed here now; the release gate could not confirm this one"
    )
    decision = {"shipped": "refused", "trial": None, "reason": "not-confirmed", "why": why, "dense": None}
    decision["confirmable_ms"] = round(need, 6)
    return Choice(None, [why], rows, decision)


def _row_of(rows: list[dict[str, Any]], record: TrialRecord) -> dict[str, Any]:
    return next(r for r in reversed(rows) if r["trial"] == record.number and r["shipped"])


def decide(best: TrialRecord, rows: list[dict[str, Any]], ref: DenseRef | None, f1_tolerance: float) -> Choice:
    """The choice of ``best`` with the decision said: what shipped, the reason's code and sentence."""
    dense_m = None if ref is None else {k: ref.measured[k] for k in ("latency_p50_ms", "latency_ms")}
    decision: dict[str, Any] = {"dense": dense_m}
    if ref is not None and best is ref.record:
        plans = [r for r in rows if r["trial"] != DENSE]
        rival = max(plans, key=lambda r: (r["val_score"], -r["latency_p50_ms"]), default=None)
        detail = (
            "no feasible plan)"
            if rival is None
            else (
                f"the best plan, trial #{rival['trial']}: val F1 {rival['val_score']:.4f} vs {best.score:.4f}, "
                "re-measured "
                f"p50 {rival['latency_p50_ms']:.4f} vs {ref.measured['latency_p50_ms']:.4f} ms"
                + (f"; {rival['dropped'].split(' (')[0]}" if rival["dropped"] else "")
                + ")"
            )
        )
        why = f"{BASELINE_NOTE} ({detail}"
        decision.update(shipped="dense", trial=None, reason="dense-not-beaten", why=why)
        return Choice(None, [why], rows, decision)
    row = _row_of(rows, best)
    decision.update(
        shipped="plan", trial=best.number, latency_p50_ms=row["latency_p50_ms"], latency_ms=row["latency_ms"]
    )
    what = f"{'dense int8' if is_dense_plan(best.plan) else 'plan'} (trial #{best.number})"
    if ref is None:
        why = f"{what} shipped: the dense model misses a budget; this is the best feasible plan, fastest of its tier"
        decision.update(reason="dense-over-budget", why=why)
        return Choice(best, [why], rows, decision)
    d = ref.measured["latency_p50_ms"]
    speed = f"re-measured p50 {row['latency_p50_ms']:.4f} vs dense {d:.4f} ms"
    if best.score > ref.record.score + f1_tolerance:
        why = (
            f"{what} shipped: val F1 {best.score:.4f} beats dense's {ref.record.score:.4f}, "
            f"and it is not slower ({speed})"
        )
        decision.update(reason="better-f1", why=why)
    else:
        why = (
            f"{what} shipped: val F1 {best.score:.4f} tied with dense's {ref.record.score:.4f} (within "
            f"{f1_tolerance:g}), {100 * (1 - row['latency_p50_ms'] / d):.0f}% faster ({speed})"
        )
        decision.update(reason="faster-at-tied-f1", why=why)
    return Choice(best, [why], rows, decision)


def closest(trials: list[TrialRecord], quality_floor: float | None = None) -> Choice:
    """Best effort when no trial is feasible: the plan closest to the budgets (sum of relative
    violations), then the best score; with ``quality_floor``, only among the trained plans within
    :data:`QUALITY_MARGIN` of it (none: the input model ships, and the note says how far the best was)."""
    if not trials:
        why = "no trial completed: the input model is shipped as it is"
        return Choice(
            None, [why], decision={"shipped": "dense", "trial": None, "reason": "nothing-feasible", "why": why}
        )
    if quality_floor is not None:
        trained = [r for r in trials if r.val and r.val.get("score") is not None]
        near = [r for r in trained if r.score >= quality_floor - QUALITY_MARGIN]
        if not near:
            best = max(trained, key=lambda r: r.score, default=None)
            how = (
                "none was trained"
                if best is None
                else (
                    f"the best trained plan (trial #{best.number}) scores {best.score:.4f}, "
                    f"{100 * (quality_floor - best.score):.1f} pt below"
                )
            )
            why = (
                f"no trial met every budget, and no plan is within {100 * QUALITY_MARGIN:.0f} pt of the quality "
                f"floor {quality_floor:.4f} ({how}): the input model is shipped as it is"
            )
            return Choice(
                None, [why], decision={"shipped": "dense", "trial": None, "reason": "nothing-feasible", "why": why}
            )
        trials = near

    def violation(r: TrialRecord) -> float:
        return r.constraints.total_violation() if r.constraints is not None else math.inf

    best = min(trials, key=lambda r: (violation(r), -(r.score or 0.0)))
    names = best.constraints.violated() if best.constraints is not None else []
    why = (
        f"no trial met every budget in the search; shipping the closest plan (over on: "
        f"{', '.join(names) or 'none'}), after the longer final fine-tune"
    )
    return Choice(
        best, [why], decision={"shipped": "closest", "trial": best.number, "reason": "nothing-feasible", "why": why}
    )


def _as_shipped(record: TrialRecord, dense_score: float) -> TrialRecord:
    """A dense int8 trial as it would ship: the input model quantized (``ship`` fine-tunes no dense plan),
    so its val score is taken as at most the input model's (its trial's is that of a distilled copy)."""
    if not is_dense_plan(record.plan) or record.score is None or record.score <= dense_score:
        return record
    return replace(record, val={**record.val, "score": dense_score})


def select(
    records: list[TrialRecord], baseline: Any, budget: Any, f1_tolerance: float, remeasure: Remeasure | None
) -> Choice:
    """The whole selection: :func:`choose_finalist` with the dense input model a finalist when it
    meets every budget (:func:`dense_record`); dense int8 trials scored as they would ship."""
    floor = budget.min_f1 if budget.min_f1 is not None else baseline.metrics["val"]["score"]
    base_score = baseline.metrics["val"]["score"]
    recs = [_as_shipped(r, base_score) for r in records]
    return choose_finalist(
        recs,
        f1_tolerance,
        remeasure,
        budget.latency_ms,
        quality_floor=floor,
        dense=dense_record(baseline, budget),
        latency_percentile=float(getattr(budget, "latency_percentile", None) or 95),
    )


__all__ = [
    "BASELINE_NOTE",
    "DENSE",
    "QUALITY_MARGIN",
    "Choice",
    "DenseRef",
    "candidates",
    "choose_finalist",
    "closest",
    "decide",
    "dense_record",
    "is_dense_plan",
    "pick_from_tier",
    "screened",
    "select",
]
