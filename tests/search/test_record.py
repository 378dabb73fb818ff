"""The trial record: one conversion to and from Optuna's user attributes; constraints own their rules."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from edgeopt.pipeline.record import (
    CONSTRAINT_NAMES,
    MIB,
    Constraints,
    DType,
    ScreenResult,
    Status,
    TrialRecord,
    quality_floor_label,
)

BUDGET = NS(latency_ms=0.5, peak_memory_mb=32.0, model_size_mb=0.14, min_f1=0.9)


def test_constraints_are_relative_violations_and_unmeasured_ones_count_as_met():
    c = Constraints.measure(BUDGET, latency_ms=0.75, peak_memory_mb=16.0, size_bytes=0.07 * MIB, score=0.81)
    assert c.values() == pytest.approx([0.5, -0.5, -0.5, 0.1])
    assert c.violated() == ["latency", "min_f1"] and not c.feasible
    assert c.total_violation() == pytest.approx(0.6)
    assert Constraints.measure(BUDGET).values() == [0.0] * 4
    assert Constraints.measure(
        NS(latency_ms=None, peak_memory_mb=None, model_size_mb=None, min_f1=None), latency_ms=9.0, score=0.1
    ).feasible
    assert list(c.to_dict()) == list(CONSTRAINT_NAMES)


def test_constraints_are_told_to_optuna_by_name_in_order():
    told = []
    trial = NS(set_constraint=lambda k, v: told.append((k, v)))
    Constraints(latency=0.1, min_f1=-0.2).tell(trial, CONSTRAINT_NAMES[:3])
    assert told == [("latency", 0.1), ("peak_memory", 0.0), ("model_size", 0.0)]


def test_record_round_trips_through_user_attributes():
    rec = TrialRecord(
        number=3,
        status=Status.TRAINED,
        plan={"fc1": {"format": "lowrank", "rank": 8}},
        dtype=DType.INT8,
        params=100,
        macs=200,
        size_bytes=400,
        screen=ScreenResult(0.2, 0.1, "predicted", 12.0, 400, 8),
        val={"score": 0.95, "f1": 0.95},
        constraints=Constraints(latency=-0.5),
        timings={"distill": 1.234567},
        repeat_of=1,
    )
    attrs = rec.user_attrs()
    assert attrs["dtype"] == "int8" and attrs["status"] == "trained" and "precision" not in attrs
    back = TrialRecord.from_attrs(attrs, number=3, state="complete")
    assert back.plan == rec.plan and back.dtype is DType.INT8 and back.screen == rec.screen
    assert back.constraints == rec.constraints and back.val == rec.val and back.repeat_of == 1
    assert back.timings == {"distill": 1.2346} and back.feasible


def test_records_of_older_studies_still_read():
    """Studies written before the record: ``precision`` for the dtype, latency at the top level."""
    old = {
        "plan": {"fc": {"format": "tt", "ranks": 4}},
        "precision": "int8",
        "status": "screened-out",
        "latency_ms": 0.7,
        "latency_source": "predicted",
        "size_bytes": 10,
        "val": {},
        "constraints": [0.4, 0, 0, 0],
    }
    rec = TrialRecord.from_attrs(old, number=0, state="complete")
    assert rec.dtype is DType.INT8 and rec.status is Status.SCREENED_OUT and rec.latency_ms == 0.7
    assert rec.constraints.violated() == ["latency"] and not rec.feasible


def test_feasible_means_trained_and_within_every_budget():
    ok = Constraints()
    assert TrialRecord(status=Status.TRAINED, constraints=ok).feasible
    assert not TrialRecord(status=Status.PRUNED, constraints=ok).feasible
    assert not TrialRecord(status=Status.SCREENED_OUT, constraints=ok).feasible
    assert not TrialRecord(status=Status.TRAINED, constraints=None).feasible
    assert not TrialRecord(status=Status.TRAINED, constraints=Constraints(model_size=0.01)).feasible


def test_quality_floor_is_named_after_the_tasks_metric():
    assert quality_floor_label("accuracy") == "quality floor (accuracy)"
    assert quality_floor_label("f1_macro", "test") == "quality floor (f1_macro, test)"
