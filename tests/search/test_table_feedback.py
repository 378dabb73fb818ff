"""The screens correct the per-layer table as the search goes (``knobs.table_correction``): real Optuna
studies on SQLite, real trials asked from them."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from edgeopt.search.knobs import FEEDBACK_MIN, FEEDBACK_RANGE, AllocationSpace, table_correction
from edgeopt.search.record import DType, ScreenResult, Status, TrialRecord

from .test_knapsack import _tables


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")


def _screened(study, table_ms: float, measured_ms: float, *, dtype: DType = DType.FP32, repeat_of: int | None = None,
              state: optuna.trial.TrialState = optuna.trial.TrialState.COMPLETE) -> None:
    rec = TrialRecord(status=Status.TRAINED, dtype=dtype, repeat_of=repeat_of,
                      screen=ScreenResult(measured_ms, measured_ms, "measured", 10.0, 1000, 5))
    attrs = {**rec.user_attrs(), "allocation": {"table_latency_ms": table_ms}}
    study.add_trial(optuna.trial.create_trial(state=state, value=0.9 if state.name == "COMPLETE" else None,
                                              user_attrs=attrs))


def test_the_correction_is_the_median_ratio_of_the_screened_allocations(study):
    assert table_correction(study) == (1.0, 0)
    for measured in (1.2, 1.3):
        _screened(study, 1.0, measured)
    assert table_correction(study) == (1.0, 2)  # fewer than FEEDBACK_MIN: the table as it is
    _screened(study, 2.0, 2.5, state=optuna.trial.TrialState.PRUNED)  # pruned trials were screened too
    _screened(study, 1.0, 5.0, dtype=DType.INT8)  # an int8 graph is not what the fp32 table measures
    _screened(study, 1.0, 5.0, repeat_of=0)  # a repeated plan counts once
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.5))  # no allocation
    assert FEEDBACK_MIN == 3 and table_correction(study) == (pytest.approx(1.25), 3)
    for _ in range(4):
        _screened(study, 1.0, 9.0)
    assert table_correction(study) == (FEEDBACK_RANGE[1], 7)  # clipped


def test_a_trial_allocates_under_the_budget_divided_by_the_correction(study):
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
    assert first["correction"] == 1.0 and first["screens"] == 0 and first["table_latency_ms"] <= 0.8 * dense
    for _ in range(FEEDBACK_MIN):  # the table said t, the screens measured 1.5 t
        _screened(study, first["table_latency_ms"], 1.5 * first["table_latency_ms"])
    later = sampled()
    assert later["correction"] == pytest.approx(1.5) and later["screens"] == FEEDBACK_MIN
    assert later["table_latency_ms"] <= 0.8 * dense / 1.5 < first["table_latency_ms"]
    assert later["table_latency_ms"] == round(space.allocation(knobs, 1.5).latency_ms, 4)
