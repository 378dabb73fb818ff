"""The walk down the best tier's speed (decision 0122): real Optuna studies on SQLite, real tables, the real
MILP; a trial's score is a step function of its table latency (the tier: plans at least as slow as a
threshold), so where the tier's fast edge lies is known."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from edgeopt.pipeline.record import Constraints, DType, ScreenResult, Status, TrialRecord
from edgeopt.search.allocation import descent
from edgeopt.search.allocation.knobs import AllocationSpace

from .test_knapsack import _tables

TOLERANCE = 0.005


def _space(seed: int) -> AllocationSpace:
    tables = _tables(np.random.default_rng(seed), layers=3, cands=8)
    dense = tables.rest_ms + sum(c[0].latency_ms for c in tables.layers.values())
    return AllocationSpace(tables, latency_ms=0.8 * dense, max_params=None)


def _objective(space: AllocationSpace, edge_ms: float):
    """A trial scores 0.99 (the tier) when its table latency is at least ``edge_ms``, else 0.90."""

    def run(trial: optuna.Trial) -> float:
        plan = space.sample(trial)
        table = float(trial.user_attrs["allocation"]["table_latency_ms"])
        score = 0.99 if table >= edge_ms else 0.90
        screen = ScreenResult(table * 1.2, table, "measured", 1.0, 100, 4)
        TrialRecord(
            number=trial.number,
            status=Status.TRAINED,
            plan=plan,
            dtype=DType.FP32,
            screen=screen,
            val={"score": score},
            constraints=Constraints(),
        ).save(trial)
        return score

    return run


def _search(tmp_path, seed: int, *, walk: bool, trials: int = 25, tpe: bool = True) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = _space(seed)
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / f'walk{int(walk)}-{seed}.db'}",
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed) if tpe else optuna.samplers.RandomSampler(seed=seed),
    )
    for label, params in space.warm_params():
        study.enqueue_trial(params, user_attrs={"warm_start": label})
    edge = space.cap(0.62)  # the tier's fast edge: plans under the cap of fraction 0.62 fall out
    callbacks = [lambda s, t: descent.enqueue(s, space, TOLERANCE)] if walk else []
    study.optimize(_objective(space, edge), n_trials=trials, callbacks=callbacks)
    study.set_user_attr("edge_ms", edge)
    return study


def _fastest_in_tier(study: optuna.Study) -> float:
    return min(t.user_attrs["screen"]["latency_p50_ms"] for t in study.trials if t.value == 0.99)


@pytest.mark.parametrize("seed", range(4))
def test_the_walk_ends_on_a_bracket(tmp_path, seed):
    walked = _search(tmp_path, seed, walk=True, trials=40, tpe=False)  # random: the walk has room to end
    steps = [t for t in walked.trials if descent.is_step(t)]
    assert steps, "no step was taken"
    numbers = [t.number for t in steps]
    assert all(b - a >= 2 for a, b in zip(numbers, numbers[1:]))  # steps alternate with the sampler's trials
    # The walk ends on a bracket: a step in the tier and, with the same knobs, one out of it less than 2
    # MIN_STEP of fraction below the cap its table latency sits at (or the knob's floor, 0.5).
    knobs = {k: v for k, v in steps[-1].params.items() if k != "fraction"}
    same = [t for t in walked.trials if {k: v for k, v in t.params.items() if k != "fraction"} == knobs]
    tables = [t.user_attrs["allocation"]["table_latency_ms"] for t in same if t.value == 0.99]
    inside = _space(seed).fraction_at(min(tables))
    outside = [t.params["fraction"] for t in same if t.value != 0.99 and t.params["fraction"] < inside]
    assert inside - max(outside, default=0.5) <= 2 * descent.MIN_STEP
    assert _fastest_in_tier(walked) >= walked.user_attrs["edge_ms"] - 1e-9


def test_the_walk_gets_nearer_the_edge_than_the_sampler(tmp_path):
    """The same 25 trials with and without the walk (TPE, six seeds): the walk's fastest tier member is
    nearer the tier's edge in total and faster in most seeds (TPE keeps to the slow plans that tie)."""
    gaps = {True: [], False: []}
    for seed in range(6):
        for walk in (True, False):
            study = _search(tmp_path, seed, walk=walk)
            gaps[walk].append(_fastest_in_tier(study) - study.user_attrs["edge_ms"])
    assert sum(gaps[True]) < 0.6 * sum(gaps[False]), gaps
    assert sum(w < s - 1e-9 for w, s in zip(gaps[True], gaps[False])) >= 4, gaps


def _finished(study, fraction: float, score: float, table_ms: float, *, step: str | None = None) -> None:
    """A finished allocation trial with neutral knobs at ``fraction``, scored ``score``."""
    knobs = {"fraction": fraction, "size_weight": 0.0, "stage0": 1.0, "stage1": 1.0, "stage2": 1.0}
    dists = {
        "fraction": optuna.distributions.FloatDistribution(0.5, 1.0),
        "size_weight": optuna.distributions.FloatDistribution(0.0, 1.0),
        **{f"stage{i}": optuna.distributions.FloatDistribution(0.25, 4.0, log=True) for i in range(3)},
    }
    screen = ScreenResult(table_ms * 1.2, table_ms, "measured", 1.0, 100, 4)
    attrs = TrialRecord(
        number=0,
        status=Status.TRAINED,
        plan={"l0": {"format": "lowrank", "rank": int(fraction * 100)}},
        dtype=DType.FP32,
        screen=screen,
        val={"score": score},
        constraints=Constraints(),
    ).user_attrs()
    attrs["allocation"] = {"table_latency_ms": table_ms}
    if step:
        attrs[descent.DESCENT_ATTR] = step
    study.add_trial(optuna.trial.create_trial(params=knobs, distributions=dists, value=score, user_attrs=attrs))


def test_a_step_waits_its_turn_and_bisects_after_a_failure(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = _space(0)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    for f in (1.0, 0.85, 0.7, 0.95, 0.9):
        _finished(study, f, 0.99, space.cap(f))
    assert descent.next_step(study, space, TOLERANCE) is None  # five allocations known: too few
    _finished(study, 0.8, 0.90, space.cap(0.8))  # out of the tier, but above the tier's fastest
    params, anchor = descent.next_step(study, space, TOLERANCE)
    assert anchor == 2  # the fastest in the tier: fraction 0.7
    assert params["fraction"] == pytest.approx(0.6)  # STEP below it: 0.8 failed above it, not below
    assert descent.enqueue(study, space, TOLERANCE)
    assert descent.next_step(study, space, TOLERANCE) is None  # one step waiting: no second one
    _run_waiting(study, space, 0.90, space.cap(0.6))  # the step: out of the tier
    assert descent.next_step(study, space, TOLERANCE) is None  # the last finished trial was a step
    _finished(study, 0.99, 0.90, space.cap(0.99))  # a sampler's trial
    params, anchor = descent.next_step(study, space, TOLERANCE)
    assert anchor == 2 and params["fraction"] == pytest.approx(0.65)  # halfway between 0.7 and 0.6
    _finished(study, 0.65, 0.99, space.cap(0.65), step="trial 2")  # in: the next anchor
    _finished(study, 0.97, 0.90, space.cap(0.97))
    params, anchor = descent.next_step(study, space, TOLERANCE)
    assert anchor == len(study.trials) - 2 and params["fraction"] == pytest.approx(0.625)
    _finished(study, 0.625, 0.90, space.cap(0.625), step=f"trial {anchor}")
    _finished(study, 0.96, 0.90, space.cap(0.96))
    assert descent.next_step(study, space, TOLERANCE) is None  # bracket 0.625-0.65, under 2 MIN_STEP: done


def _run_waiting(study, space: AllocationSpace, score: float, table_ms: float) -> None:
    """Run the waiting step (its knobs suggested, as a trial's plan is sampled): scored ``score`` at ``table_ms``."""
    trial = study.ask()
    space.knobs(trial)
    TrialRecord(
        number=trial.number,
        status=Status.TRAINED,
        plan={"l0": {"format": "lowrank", "rank": 60}},
        dtype=DType.FP32,
        screen=ScreenResult(table_ms * 1.2, table_ms, "measured", 1.0, 100, 4),
        val={"score": score},
        constraints=Constraints(),
    ).save(trial)
    trial.set_user_attr("allocation", {"table_latency_ms": table_ms})
    study.tell(trial, score)


def test_no_walk_without_tiers(tmp_path):
    """``--objective pareto`` has no tier: the strategy takes no step (its context has no tolerance)."""
    from edgeopt.search.allocation.strategy import AllocationStrategy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", direction="maximize")
    space = _space(0)
    for f in (1.0, 0.85, 0.7, 0.95, 0.9, 0.75):
        _finished(study, f, 0.99, space.cap(f))
    strategy = AllocationStrategy()
    strategy.space = space
    strategy.ctx = type("Ctx", (), {"f1_tolerance": None})()
    strategy.after_trial(study, study.trials[-1])
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    strategy.ctx.f1_tolerance = TOLERANCE
    strategy.after_trial(study, study.trials[-1])
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 1
