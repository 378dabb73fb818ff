"""The implicit quality floor: with no ``min_f1``, the input model's score less ``max_quality_drop``
on the same split; a plan far below the input model does not count as meeting the budget."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgeopt.runtime.targets import Target


def _baseline(val: float):
    return SimpleNamespace(metrics={"val": {"score": val}, "test": {"score": val - 0.06}})


def _target(**budget) -> Target:
    return Target.from_dict({"name": "t", "description": "t", "device": {"detect": True}, "budget": budget})


def test_floor_is_the_input_model_less_the_drop_unless_the_profile_sets_one():
    from edgeopt.search.prepare import with_quality_floor

    t, implicit = with_quality_floor(_target(latency_ms=1.0), _baseline(0.95), 0.05, "f1_macro")
    assert t.budget.min_f1 == pytest.approx(0.90) and implicit == {"min_f1": 0.9, "input_score": 0.95, "max_drop": 0.05}
    assert t.budget.latency_ms == 1.0
    t2, implicit2 = with_quality_floor(_target(min_f1=0.5), _baseline(0.95), 0.05, "f1_macro")
    assert t2.budget.min_f1 == 0.5 and implicit2 is None  # the profile's own floor wins
    t3, implicit3 = with_quality_floor(_target(), _baseline(0.95), None, "f1_macro")
    assert t3.budget.min_f1 is None and implicit3 is None  # turned off


def test_the_artifact_is_checked_against_the_input_model_on_the_same_split():
    from edgeopt.search.report import quality_check

    budget = _target(min_f1=0.90).budget
    implicit = {"min_f1": 0.90, "max_drop": 0.05, "scores": {"val": 0.95, "test": 0.89}}
    good = quality_check({"val": {"score": 0.94}, "test": {"score": 0.85}}, budget, "f1_macro", implicit)
    assert good["budget"] == pytest.approx(0.84) and good["passed"]  # test floor 0.89 - 0.05, not 0.90
    assert "input model less 5 pt" in good["name"] and "test" in good["name"]
    bad = quality_check({"val": {"score": 0.94}, "test": {"score": 0.80}}, budget, "f1_macro", implicit)
    assert not bad["passed"]
    plain = quality_check({"test": {"score": 0.85}}, budget, "f1_macro")
    assert plain["budget"] == 0.90 and not plain["passed"]


def test_max_quality_drop_is_validated():
    from edgeopt.errors import InputError
    from edgeopt.search.config import CompileConfig

    assert CompileConfig().max_quality_drop == 0.05
    with pytest.raises(InputError, match="max_quality_drop"):
        CompileConfig(max_quality_drop=1.5)
