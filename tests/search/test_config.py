"""CompileConfig: sections, frozen, validated with the one message template; settings by name too."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from edgeopt.errors import InputError
from edgeopt.pipeline.config import (
    FINAL_BENCH,
    FINAL_EPOCHS,
    SECTIONS,
    BudgetSettings,
    CompileConfig,
    OptimizeSettings,
)


def test_defaults_and_frozen():
    c = CompileConfig()
    assert c.trials == 30 and c.final_epochs == FINAL_EPOCHS and c.out == Path("runs/x")
    assert c.optimize.trials == 30 and c.objective == "score"
    assert c.directions == ["maximize"] and CompileConfig(objective="pareto").directions == ["maximize", "minimize"]
    assert c.artifact_bench() == dict(FINAL_BENCH)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.optimize.trials = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        c.trails  # noqa: B018 - a typo is an error, not None


def test_every_setting_has_one_home_and_a_help():
    names = [f.name for s in SECTIONS for f in dataclasses.fields(s)]
    assert len(names) == len(set(names))
    assert all(f.metadata.get("doc") for s in SECTIONS for f in dataclasses.fields(s))


def test_sections_and_names_build_the_same_config():
    by_name = CompileConfig(trials=3, latency_ms=0.5, out="o")
    by_section = CompileConfig(
        optimize=OptimizeSettings(trials=3), budget=BudgetSettings(latency_ms=0.5), output=by_name.output
    )
    assert by_name == by_section
    assert dataclasses.replace(by_name, final_epochs=2).final_epochs == 2  # as the loop replaces a setting
    assert by_name.replace(trials=5).trials == 5 and by_name.trials == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trials": -1}, "compile(): trials: expected an integer >= 0, found an integer -1"),
        ({"trials": 2.5}, "compile(): trials: expected an integer >= 0, found a float 2.5"),
        ({"objective": "speed"}, "compile(): objective: expected one of 'score', 'pareto', found a string 'speed'"),
        ({"sampler": "grid"}, "compile(): sampler: expected one of 'tpe', 'random', found a string 'grid'"),
        ({"lr": 0}, "compile(): lr: expected a number > 0, found an integer 0"),
        ({"f1_tolerance": 2}, "compile(): f1_tolerance: expected a number in [0, 1], found an integer 2"),
        ({"int8": "yes"}, "compile(): int8: expected true or false, found a string 'yes'"),
        ({"budget": {"latency": 1}}, "compile(): budget['latency']: expected one of the keys latency_ms"),
        ({"latency_ms": 0}, "compile(): latency_ms: expected a number > 0, found an integer 0"),
        ({"timeout": -5.0}, "compile(): timeout: expected a number > 0, found a float -5.0"),
        ({"trails": 3}, "compile(): trails: unknown key"),
    ],
)
def test_bad_values_fail_with_the_one_template(kwargs, message):
    with pytest.raises(InputError) as info:
        CompileConfig(**kwargs)
    assert str(info.value).startswith(message)


def test_objective_f1_is_read_as_score_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="'f1' is deprecated: use 'score'"):
        c = CompileConfig(objective="f1")
    assert c.objective == "score" and c == CompileConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CompileConfig(objective="score")


def test_budget_overrides_drop_none_and_cannot_be_mutated():
    c = CompileConfig(budget={"latency_ms": 0.3, "min_f1": None}, out="runs/y")
    assert dict(c.budget.overrides()) == {"latency_ms": 0.3} and c.out == Path("runs/y")
    with pytest.raises(TypeError):
        c.budget.overrides()["min_f1"] = 0.5  # type: ignore[index]


def test_compile_takes_either_config_or_keywords(small_mlp_task, tmp_path):
    import edgeopt

    with pytest.raises(InputError, match="either config= or the keyword settings"):
        edgeopt.compile(small_mlp_task, "host", CompileConfig(out=tmp_path), trials=2)
    with pytest.raises(InputError, match="compile\\(\\): trials: expected an integer >= 0"):
        edgeopt.compile(small_mlp_task, "host", trials=-2, out=tmp_path)
    with pytest.raises(InputError, match="config: expected an edgeopt CompileConfig, found dict"):
        edgeopt.compile(small_mlp_task, "host", {"trials": 2})
