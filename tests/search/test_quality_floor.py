"""The implicit quality floor: with no ``min_f1``, the artifact must score the input model's score less
``max_quality_drop`` on the same split, or the compile says so and exits 1 (trials are not held to it)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgeopt.runtime.targets import Target


def _baseline(val: float):
    return SimpleNamespace(metrics={"val": {"score": val}, "test": {"score": val - 0.06}})


def _target(**budget) -> Target:
    return Target.from_dict({"name": "t", "description": "t", "device": {"detect": True}, "budget": budget})


def test_floor_is_the_input_model_less_the_drop_unless_the_profile_sets_one():
    from edgeopt.pipeline.prepare import implicit_floor

    assert implicit_floor(_target(latency_ms=1.0), _baseline(0.95), 0.05) == {
        "max_drop": 0.05,
        "scores": {"val": 0.95, "test": pytest.approx(0.89)},
    }
    assert implicit_floor(_target(min_f1=0.5), _baseline(0.95), 0.05) is None  # the profile's own floor wins
    assert implicit_floor(_target(), _baseline(0.95), None) is None  # turned off


def test_the_artifact_is_checked_against_the_input_model_on_the_same_split():
    from edgeopt.report import quality_check

    budget = _target(latency_ms=1.0).budget
    implicit = {"max_drop": 0.05, "scores": {"val": 0.95, "test": 0.89}}
    good = quality_check({"val": {"score": 0.94}, "test": {"score": 0.85}}, budget, "f1_macro", implicit)
    assert good["budget"] == pytest.approx(0.84) and good["passed"]  # test floor 0.89 - 0.05
    assert "input model less 5 pt" in good["name"] and "test" in good["name"]
    bad = quality_check({"val": {"score": 0.94}, "test": {"score": 0.80}}, budget, "f1_macro", implicit)
    assert not bad["passed"]
    assert quality_check({"test": {"score": 0.85}}, budget, "f1_macro") is None  # no floor at all
    plain = quality_check({"test": {"score": 0.85}}, _target(min_f1=0.90).budget, "f1_macro", implicit)
    assert plain["budget"] == 0.90 and not plain["passed"]  # the profile's floor, not the implicit one


def test_max_quality_drop_is_validated():
    from edgeopt.errors import InputError
    from edgeopt.pipeline.config import CompileConfig

    assert CompileConfig().max_quality_drop == 0.05
    with pytest.raises(InputError, match="max_quality_drop"):
        CompileConfig(max_quality_drop=1.5)
