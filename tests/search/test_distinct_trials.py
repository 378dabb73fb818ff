"""A search that explores: the knobs never hand a trial an allocation the study already tried while an
untried one fits (the MILP's no-good cuts), and ``--trials N`` is N distinct plans (repeats not counted).
Real Optuna studies on SQLite, real tables, the real MILP."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import optuna
import pytest

from edgeopt.pipeline.objective import find_repeat
from edgeopt.pipeline.progress import REPEATS_ALLOWED, run_search
from edgeopt.pipeline.record import Constraints, DType, Status, TrialRecord
from edgeopt.search.allocation.knapsack import allocate
from edgeopt.search.allocation.knobs import AllocationSpace, tried_allocations

from .test_knapsack import _tables


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")


def _ranked(tables, lat_cap):
    """Every allocation under the cap, cheapest first (brute force): the order the cuts must follow."""
    names = list(tables.layers)
    out = []
    for combo in itertools.product(*[range(len(tables.layers[n])) for n in names]):
        cs = [tables.layers[n][j] for n, j in zip(names, combo)]
        if tables.rest_ms + sum(c.latency_ms for c in cs) <= lat_cap:
            out.append((sum(c.sensitivity for c in cs), dict(zip(names, combo))))
    return sorted(out, key=lambda t: t[0])


@pytest.mark.parametrize("seed", range(4))
def test_no_good_cuts_give_the_next_ranked_distinct_allocation(seed):
    tables = _tables(np.random.default_rng(seed), layers=3, cands=4)
    cap = tables.rest_ms + sum(c[0].latency_ms for c in tables.layers.values()) * 0.6
    ranked = _ranked(tables, cap)
    tried = []
    for cost, _ in ranked[:6]:
        a = allocate(tables, latency_ms=cap, exclude=tried)
        assert a.feasible and a.choice not in tried
        assert a.sensitivity == pytest.approx(cost, abs=1e-9)  # the next in rank, ties aside
        tried.append(a.choice)
    everything = [c for _, c in ranked]
    assert not allocate(tables, latency_ms=cap, exclude=everything).feasible  # all tried: none left


def _ask(study, space, knobs):
    study.enqueue_trial(knobs)
    trial = study.ask()
    plan = space.sample(trial)
    study.tell(trial, 0.0)
    return plan, study.trials[-1].user_attrs["allocation"]


def test_the_same_knobs_yield_distinct_allocations_until_none_is_left(study):
    tables = _tables(np.random.default_rng(1), layers=3, cands=3)  # 27 allocations in all
    dense = tables.rest_ms + sum(c[0].latency_ms for c in tables.layers.values())
    space = AllocationSpace(tables, latency_ms=0.8 * dense, max_params=None)
    knobs = {"fraction": 0.7, "size_weight": 0.0, **{f"stage{i}": 1.0 for i, _ in enumerate(space.stages)}}
    under = len(_ranked(tables, space.cap(0.7)))
    assert 3 <= under < 27
    plans = [_ask(study, space, knobs) for _ in range(under)]
    choices = [a["choice"] for _, a in plans]
    assert len({str(sorted(c.items())) for c in choices}) == under  # every trial a distinct allocation
    assert [a["perturbed"] for _, a in plans] == [False] + [True] * (under - 1)
    assert all(a["table_latency_ms"] <= space.cap(0.7) + 1e-5 for _, a in plans)
    # Every allocation under the cap tried: the knobs' own allocation comes back, a repeat.
    plan, again = _ask(study, space, knobs)
    assert again["choice"] == choices[0] and not again["perturbed"] and plan == plans[0][0]
    assert len(tried_allocations(study, -1)) == under


def _objective(study, plans):
    """A trial of ``plans[number]``: a repeat of the trial that had it first, as the compile's objective does."""

    def objective(trial):
        rec = TrialRecord(number=trial.number, plan=plans[trial.number % len(plans)], status=Status.TRAINED)
        rec.val, rec.constraints = {"score": 0.9}, Constraints()
        repeat = find_repeat(study, rec.plan, DType.FP32)
        if repeat is not None:
            rec.copy_result_of(repeat[1])
        rec.save(trial)
        return 0.9

    return objective


def _run(study, objective, trials):
    return run_search(study, objective, trials=trials, timeout=None, metric_name="f1", progress=False)


def test_repeats_are_not_counted_as_trials(study):
    a, b, c = ({"fc": {"format": "lowrank", "rank": r}} for r in (1, 2, 3))
    _run(study, _objective(study, [a, a, b, a, b, c, c]), trials=3)
    recs = [TrialRecord.from_trial(t) for t in study.trials]
    assert len(recs) == 6  # three repeats run, and the search went on to the third distinct plan
    assert [r.repeat_of for r in recs] == [None, 0, None, 0, 2, None]


def test_a_space_with_fewer_plans_than_trials_stops_after_the_repeats_allowed(study, caplog):
    caplog.set_level(logging.INFO, logger="edgeopt.compile")
    plans = [{"fc": {"format": "lowrank", "rank": r}} for r in (1, 2)]
    _run(study, _objective(study, plans), trials=5)
    recs = [TrialRecord.from_trial(t) for t in study.trials]
    assert sum(r.repeat_of is None for r in recs) == 2
    assert sum(r.repeat_of is not None for r in recs) == max(int(REPEATS_ALLOWED[0] * 5), REPEATS_ALLOWED[1])
    assert any("few new plans" in r.getMessage() for r in caplog.records)
