"""The screens correct the per-layer table as the search goes (``knobs.table_correction``): real Optuna
studies on SQLite, real trials asked from them."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from edgeopt.pipeline.record import DType, ScreenResult, Status, TrialRecord
from edgeopt.runtime.retake import REPRODUCE
from edgeopt.search.allocation.knapsack import floor
from edgeopt.search.allocation.knobs import FEEDBACK_MIN, MAX_UNDER, AllocationSpace, TableFit, table_correction

from .test_knapsack import _tables


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")


def _screened(
    study,
    table_ms: float,
    measured_ms: float,
    *,
    dtype: DType = DType.FP32,
    repeat_of: int | None = None,
    state: optuna.trial.TrialState = optuna.trial.TrialState.COMPLETE,
) -> None:
    rec = TrialRecord(
        status=Status.TRAINED,
        dtype=dtype,
        repeat_of=repeat_of,
        screen=ScreenResult(measured_ms, measured_ms, "measured", 10.0, 1000, 5),
    )
    attrs = {**rec.user_attrs(), "allocation": {"table_latency_ms": table_ms}}
    study.add_trial(
        optuna.trial.create_trial(state=state, value=0.9 if state.name == "COMPLETE" else None, user_attrs=attrs)
    )


def test_the_fit_is_the_median_offset_of_the_screened_allocations(study):
    assert table_correction(study) == TableFit(count=0)
    for table, measured in ((0.02, 0.025), (0.03, 0.036), (0.06, 0.065), (0.07, 0.074)):
        _screened(study, table, measured)
    assert table_correction(study) == TableFit(count=4)  # fewer than FEEDBACK_MIN: the table as it is
    _screened(study, 0.05, 0.055, state=optuna.trial.TrialState.PRUNED)  # pruned trials were screened too
    _screened(study, 0.04, 5.0, dtype=DType.INT8)  # an int8 graph is not what the fp32 table measures
    _screened(study, 0.04, 5.0, repeat_of=0)  # a repeated plan counts once
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.5))  # no allocation
    fit = table_correction(study)
    assert FEEDBACK_MIN == 5 and fit.count == 5
    assert fit.offset_ms == pytest.approx(0.005)  # every screen 4-6 µs over: the MAD is 0, nothing to shrink
    for _ in range(2):
        _screened(study, 0.04, 100.0)  # noise spikes, two in seven: the median holds, shrunk by 2 SE
    assert 0.003 < table_correction(study).offset_ms < 0.005


def test_noise_is_not_corrected_and_a_consistent_offset_is(study, tmp_path):
    for table, measured in ((1.0, 1.3), (1.1, 0.85), (1.2, 1.25), (1.3, 1.0), (1.4, 1.7)):  # -25..+30 %: noise
        _screened(study, table, measured)
    assert table_correction(study) == TableFit(0.0, 5)
    other = optuna.create_study(storage=f"sqlite:///{tmp_path / 'other.db'}", direction="maximize")
    for table, over in ((1.0, 0.21), (1.1, 0.19), (1.2, 0.2), (1.3, 0.22), (1.4, 0.18)):  # 20 % over, every one
        _screened(other, table, table + over)
    assert 0.18 < table_correction(other).offset_ms <= 0.2


def test_a_trial_allocates_under_the_budget_through_the_fit(study):
    tables = _tables(np.random.default_rng(3), layers=4, cands=6)
    dense = tables.rest_ms + sum(c[0].latency_ms for c in tables.layers.values())
    space = AllocationSpace(tables, latency_ms=0.8 * dense, max_params=None)
    knobs = {"fraction": 1.0, "size_weight": 0.0}

    def sampled() -> dict:
        study.enqueue_trial({**knobs, **{f"stage{i}": 1.0 for i, _ in enumerate(space.stages)}})
        trial = study.ask()
        space.sample(trial)
        study.tell(trial, 0.0)
        return study.trials[-1].user_attrs["allocation"]

    first = sampled()
    assert first["fit"] == TableFit().to_dict() and first["table_latency_ms"] <= 0.8 * dense
    for table in (0.5, 0.6, 0.7, 0.8, 0.9):  # the screens measured 15 % of dense over the table
        _screened(study, table * dense, (table + 0.15) * dense)
    later = sampled()
    fit = TableFit(0.15 * dense, FEEDBACK_MIN)
    assert later["fit"] == pytest.approx(fit.to_dict(), rel=1e-3)
    room = space.aim_ms - floor(tables).latency_ms
    assert space.cap(1.0, fit) == pytest.approx(space.aim_ms - min(0.15 * dense, 0.5 * room))
    assert later["table_latency_ms"] <= space.cap(1.0, fit) < first["table_latency_ms"]
    assert later["table_latency_ms"] == pytest.approx(space.allocation(knobs, fit).latency_ms, abs=1e-5)


def test_the_fraction_is_of_the_budget_squeezed_above_the_floor_and_the_offset_bounded():
    tables = _tables(np.random.default_rng(5), layers=4, cands=6)
    lo = floor(tables).latency_ms
    # the headroom apart (0): the squeeze and the offset's bounds (test_the_search_aims_under_the_budget_...)
    loose = AllocationSpace(tables, latency_ms=3 * lo, max_params=None, headroom=0.0)  # the floor: a third
    assert [loose.cap(f) for f in (0.5, 0.7, 1.0)] == pytest.approx([1.5 * lo, 2.1 * lo, 3 * lo])
    tight = AllocationSpace(tables, latency_ms=lo / 0.8, max_params=None, headroom=0.0)  # the floor: 0.8
    assert [tight.cap(f) for f in (0.5, 0.75, 1.0)] == pytest.approx([lo, 0.5 * (lo + lo / 0.8), lo / 0.8])
    for f in (0.5, 0.7, 0.85, 1.0):  # no fraction falls below the floor: each is a plan of its own
        a = tight.allocation({"fraction": f, "size_weight": 0.0})
        assert a.feasible and lo - 1e-9 <= a.latency_ms <= tight.cap(f) + 1e-9
    burst = TableFit(10 * lo, FEEDBACK_MIN)  # screens in a burst of noise: the offset takes half the room
    assert tight.cap(1.0, burst) == pytest.approx(lo + 0.5 * (lo / 0.8 - lo))
    assert tight.allocation({"fraction": 0.7}, burst).feasible
    # screens under the table are no noise: the offset counts in full, up to MAX_UNDER of the floor
    assert loose.cap(1.0, TableFit(-0.2 * lo, FEEDBACK_MIN)) == pytest.approx(3 * lo + 0.2 * lo)
    assert loose.cap(1.0, TableFit(-10 * lo, FEEDBACK_MIN)) == pytest.approx(3 * lo + MAX_UNDER * lo)
    assert AllocationSpace(tables, latency_ms=None, max_params=None).cap(0.7) is None


def test_a_table_that_reads_slow_at_its_floor_leaves_the_search_room_above_it():
    """cnn1d at 1/3 of its dense p95 (decision 0118): the budget sat at the table's floor, the screens ran
    the floor 20 % under the table, and every trial was the floor plan. Measured as the screens measure,
    the floor is well under the budget: the search aims at the budget less selection's headroom, above the
    table's floor, and the warm start's fractions are distinct plans again."""
    tables = _tables(np.random.default_rng(5), layers=4, cands=6)
    lo = floor(tables).latency_ms
    space = AllocationSpace(tables, latency_ms=1.02 * lo, max_params=None)  # the table: at its floor
    assert space.cap(1.0) == pytest.approx(1.02 * lo)  # no fit yet: the budget itself, as before
    slow = TableFit(-0.2 * lo, FEEDBACK_MIN)  # the screens: the table reads 20 % of its floor slow
    aim = 1.02 * lo / (1 + REPRODUCE)  # above the floor as measured (0.8 lo): the headroom is kept
    assert space.cap(1.0, slow) == pytest.approx(aim + 0.2 * lo)
    plans = {json.dumps(space.allocation({"fraction": f, "size_weight": 0.0}, slow).choice) for f in (1.0, 0.85, 0.7)}
    assert len(plans) > 1
    noisy = TableFit(0.2 * lo, FEEDBACK_MIN)  # over the table: maybe a burst, half the room at most
    assert space.cap(1.0, noisy) == pytest.approx(1.02 * lo - 0.5 * 0.02 * lo)


def test_the_search_aims_under_the_budget_by_selections_headroom():
    """A plan the table puts at the top of the search's range is one selection confirms: its bound plus
    selection's headroom (``finalists.margin_ms``) is the budget. Near the floor, where no plan can have the
    headroom, the search aims at the budget itself rather than below the floor."""
    from edgeopt.pipeline.finalists import BOUND, margin_ms

    tables = _tables(np.random.default_rng(5), layers=4, cands=6)
    lo = floor(tables).latency_ms
    space = AllocationSpace(tables, latency_ms=3 * lo, max_params=None)
    aim = space.aim_ms
    assert aim < 3 * lo and aim + margin_ms({BOUND: aim}) == pytest.approx(3 * lo)
    assert space.cap(1.0) == pytest.approx(aim) and space.cap(0.5) == pytest.approx(0.5 * aim)
    for f in (0.7, 1.0):
        assert space.allocation({"fraction": f, "size_weight": 0.0}).latency_ms <= space.cap(f) + 1e-9
    edge = AllocationSpace(tables, latency_ms=1.02 * lo, max_params=None)  # under the floor once less 5 %
    assert edge.aim_ms == pytest.approx(1.02 * lo)
    assert edge.allocation({"fraction": 1.0, "size_weight": 0.0}).feasible
    assert AllocationSpace(tables, latency_ms=None, max_params=None).aim_ms is None


def test_the_report_says_the_screens_offset():
    from edgeopt.report.markdown import _md_tables

    base = {"layers": 3, "candidates": 9, "build_s": 1.0}
    md = "\n".join(_md_tables({**base, "screens": {"offset_ms": -0.0101, "count": 7}}))
    assert "7 allocations measured whole, -10.1 µs off the table" in md and "after the first 5" in md
    assert "too few to correct the table" in "\n".join(_md_tables({**base, "screens": {"offset_ms": 0.0, "count": 2}}))
    assert "screens against" not in "\n".join(_md_tables({**base, "screens": {"offset_ms": 0.0, "count": 0}}))
