"""The search's walk down the best tier's speed: bisection on the ``fraction`` knob (decision 0122).

Selection ships the fastest plan of the best tier (the best validation score and the plans tied with it,
:mod:`edgeopt.pipeline.ties`). The sampler does not aim there: its objective is the validation score
(the tie-break toward faster plans is worth a fraction of one validation sample), so among the tier's
plans it has no reason to try faster ones, and the fastest it finds is luck. ResNet-8's five compiles
with one core busy (plans_stable_under_load, a31bc77) shipped five plans of one quality at 0.095 to
0.118 ms: each search's own fastest member of a tier that spans at least that.

So once a few allocations are known, the study's fastest tier member that has knobs (its anchor, by
table latency) is walked down: the next step is a trial with the anchor's knobs and a smaller fraction
(a cap under the anchor's table latency), :data:`STEP` lower at first, then halfway to the highest
fraction with those knobs that fell out of the tier (trained below it, pruned, screened out or failed),
until the bracket is narrower than :data:`MIN_STEP`. A step that stays in the tier is the next anchor.
Steps are enqueued trials of the same study (the ``descent`` user attribute names the anchor), trained
whole like the alternatives (the pruner's median at early epochs is what cut ResNet-8's fast plans,
whose smaller students learn slower), and alternate with the sampler's own trials; they count in
``--trials``. With ``--objective pareto`` there is no tier and no walk.
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger("edgeopt.compile")

DESCENT_ATTR = "descent"  # the trial's anchor, e.g. "trial 24": a step of the walk
START_AFTER = 6  # finished trials with knobs (the warm start's and the sampler's) before the first step
STEP = 0.1  # the first step down in fraction from an anchor with no known failure below it
MIN_STEP = 0.02  # the walk from an anchor ends when its bracket is narrower than this


def is_step(trial: Any) -> bool:
    """Whether ``trial`` (Optuna's) is a step of the walk: trained whole, not pruned."""
    return DESCENT_ATTR in trial.user_attrs


def next_step(study: Any, space: Any, tolerance: float) -> tuple[dict[str, float], int] | None:
    """The next step's Optuna params and its anchor's trial number, or None: a step is waiting or running,
    the last finished trial was one (steps alternate with the sampler's), too few allocations are known,
    the tier has no member with knobs, or the anchor's bracket is closed."""
    import optuna

    from edgeopt.search.allocation.knobs import table_correction

    trials = study.get_trials(deepcopy=False)
    live = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    if any(is_step(t) for t in trials if t.state in live):
        return None
    done = [t for t in trials if t.state.is_finished()]
    if done and is_step(max(done, key=lambda t: t.number)):
        return None
    knobbed = [t for t in done if "fraction" in t.params]
    if len(knobbed) < START_AFTER:
        return None
    tier = _tier(done, tolerance)
    members = [t for t in knobbed if t.number in tier and _table_ms(t) is not None]
    if not members:
        return None
    anchor = min(members, key=lambda t: (_table_ms(t), t.number))
    hi = space.fraction_at(_table_ms(anchor), table_correction(study))
    if hi is None:
        return None
    hi = min(hi, float(anchor.params["fraction"]))
    knobs = {k: v for k, v in anchor.params.items() if k != "fraction"}
    same = [t for t in knobbed if {k: v for k, v in t.params.items() if k != "fraction"} == knobs]
    below = [float(t.params["fraction"]) for t in same if t.number not in tier and t.params["fraction"] < hi]
    lo = max(below, default=None)
    fraction = hi - STEP if lo is None else 0.5 * (hi + lo)
    fraction = max(0.5, fraction)
    if hi - fraction < MIN_STEP or any(math.isclose(t.params["fraction"], fraction) for t in same):
        return None
    return {**knobs, "fraction": fraction}, anchor.number


def _table_ms(trial: Any) -> float | None:
    value = (trial.user_attrs.get("allocation") or {}).get("table_latency_ms")
    return float(value) if value is not None else None


def _tier(done: list[Any], tolerance: float) -> set[int]:
    """Trial numbers of the best tier among the finished trials, as selection forms it (its feasible
    candidates, one per plan, best validation score first: :func:`edgeopt.pipeline.ties.tier_of`)."""
    from edgeopt.compiler.formats import is_dense_plan
    from edgeopt.pipeline.record import DType, TrialRecord
    from edgeopt.pipeline.ties import tier_of

    def candidate(r: TrialRecord) -> bool:  # dense fp32 is the input model, not a candidate (select.candidates)
        dense_fp32 = is_dense_plan(r.plan) and r.dtype is DType.FP32
        return r.state == "complete" and r.feasible and r.repeat_of is None and not dense_fp32

    feasible = [r for r in map(TrialRecord.from_trial, done) if candidate(r)]
    if not feasible:
        return set()
    ranked = sorted(feasible, key=lambda r: (-r.score, r.latency_p50_ms))
    return {r.number for r in tier_of(ranked, tolerance)}


def enqueue(study: Any, space: Any, tolerance: float) -> bool:
    """Enqueue the next step, if any (:func:`next_step`); whether one was."""
    step = next_step(study, space, tolerance)
    if step is None:
        return False
    params, anchor = step
    study.enqueue_trial(params, user_attrs={DESCENT_ATTR: f"trial {anchor}"})
    log.info("next trial: a step down the best tier's speed from trial %d (fraction %.3f)", anchor, params["fraction"])
    return True


__all__ = ["DESCENT_ATTR", "MIN_STEP", "START_AFTER", "STEP", "enqueue", "is_step", "next_step"]
