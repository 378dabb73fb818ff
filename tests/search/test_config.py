"""CompileConfig: frozen, validated with the one message template; compile() builds one from its keywords."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgeopt.errors import InputError
from edgeopt.search.config import FINAL_BENCH, FINAL_EPOCHS, CompileConfig


def test_defaults_and_frozen():
    c = CompileConfig()
    assert c.trials == 30 and c.final_epochs == FINAL_EPOCHS and c.out == Path("runs/x")
    assert c.directions == ["maximize"] and CompileConfig(objective="pareto").directions == ["maximize", "minimize"]
    assert c.artifact_bench() == dict(FINAL_BENCH)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.trials = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trials": -1}, "compile(): trials: expected an integer >= 0, found an integer -1"),
        ({"trials": 2.5}, "compile(): trials: expected an integer >= 0, found a float 2.5"),
        ({"objective": "speed"}, "compile(): objective: expected one of 'f1', 'pareto', found a string 'speed'"),
        ({"sampler": "grid"}, "compile(): sampler: expected one of 'tpe', 'random', found a string 'grid'"),
        ({"lr": 0}, "compile(): lr: expected a number > 0, found an integer 0"),
        ({"f1_tolerance": 2}, "compile(): f1_tolerance: expected a number in [0, 1], found an integer 2"),
        ({"int8": "yes"}, "compile(): int8: expected a boolean, found a string 'yes'"),
        ({"budget": {"latency": 1}}, "compile(): budget['latency']: expected one of the keys latency_ms"),
        ({"timeout": -5.0}, "compile(): timeout: expected a number > 0, found a float -5.0"),
    ],
)
def test_bad_values_fail_with_the_one_template(kwargs, message):
    with pytest.raises(InputError) as info:
        CompileConfig(**kwargs)
    assert str(info.value).startswith(message)


def test_budget_overrides_drop_none_and_cannot_be_mutated():
    c = CompileConfig(budget={"latency_ms": 0.3, "min_f1": None}, out="runs/y")
    assert dict(c.budget) == {"latency_ms": 0.3} and c.out == Path("runs/y")
    with pytest.raises(TypeError):
        c.budget["min_f1"] = 0.5  # type: ignore[index]


def test_compile_takes_either_config_or_keywords(small_mlp_task, tmp_path):
    import edgeopt

    with pytest.raises(InputError, match="either config= or the keyword settings"):
        edgeopt.compile(small_mlp_task, "host", trials=2, config=CompileConfig(out=tmp_path))
    with pytest.raises(InputError, match="compile\\(\\): trials: expected an integer >= 0"):
        edgeopt.compile(small_mlp_task, "host", trials=-2, out=tmp_path)
