"""The search-strategy registry's contract, shown with a strategy defined only here: a "uniform" one that
gives every layer the same rung (one format, one rank, sampled), run through a real tiny compile."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

pytestmark = pytest.mark.compile
torch = pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

import edgeopt  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.errors import InputError  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.search.strategies import (  # noqa: E402 - after the pytest.importorskip guards
    STRATEGY_NAMES,
    SearchStrategy,
    StrategyConfig,
    StrategyContext,
    make_strategy,
    register_strategy,
    strategy_names,
    unregister_strategy,
)

from .conftest import FAST  # noqa: E402 - after the pytest.importorskip guards


@dataclass(frozen=True)
class UniformConfig(StrategyConfig):
    strategy: ClassVar[str] = "uniform"
    fmt: str = "lowrank"
    max_rank: int = 8  # below every layer's largest lowrank rank: one entry for all


class UniformStrategy(SearchStrategy):
    """Every layer at one sampled rank of one format; counts what the compile asked of it."""

    name = "uniform"
    config_cls = UniformConfig
    made: ClassVar[list[UniformStrategy]] = []  # every instance, for the test to look into

    def __init__(self, config: UniformConfig | None = None) -> None:
        super().__init__(config)
        self.calls: dict[str, int] = {}
        UniformStrategy.made.append(self)

    def _count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    def prepare(self, ctx: StrategyContext) -> None:
        super().prepare(ctx)
        self._count("prepare")
        assert ctx.layers and ctx.space and ctx.base_cost.params > 0 and ctx.out.is_dir()

    def warm_start(self, fits_size: Callable[[dict[str, Any]], bool]) -> list[tuple[str, dict[str, Any]]]:
        self._count("warm_start")
        return [("uniform rank 8", {"uniform_rank": 8})]

    def plan(self, trial: Any) -> dict[str, Any]:
        self._count("plan")
        rank = trial.suggest_int("uniform_rank", 1, self.config.max_rank, log=True)
        return self.ctx.space.uniform_plan(self.config.fmt, rank)

    def after_trial(self, study: Any, trial: Any) -> None:
        self._count("after_trial")

    def report(self, study: Any, shipped: Any) -> dict[str, Any] | None:
        self._count("report")
        return {"uniform": {"format": self.config.fmt, "shipped": shipped.plan}}


@pytest.fixture
def uniform():
    register_strategy(UniformStrategy)
    UniformStrategy.made.clear()
    try:
        yield UniformStrategy
    finally:
        unregister_strategy("uniform")


def test_lookup_by_name_and_by_config(uniform):
    assert {"allocation", "layers", "uniform"} <= set(strategy_names())
    assert "uniform" in STRATEGY_NAMES
    assert isinstance(make_strategy("uniform"), UniformStrategy)
    s = make_strategy(UniformConfig(max_rank=4))
    assert isinstance(s, UniformStrategy) and s.config.max_rank == 4
    with pytest.raises(InputError) as info:
        make_strategy("nope")
    assert str(info.value).startswith("compile(): search: expected one of 'allocation', 'layers'")
    with pytest.raises(ValueError):
        register_strategy(type("Other", (UniformStrategy,), {}))  # another class under a taken name


def test_an_unregistered_name_is_bad_input():
    from edgeopt.pipeline.config import CompileConfig

    with pytest.raises(InputError) as info:
        CompileConfig(search="uniform")
    assert "search: expected one of" in str(info.value) and "\n" not in str(info.value)


def test_a_strategy_defined_in_a_test_runs_a_real_compile(uniform, small_mlp_task, make_target, tmp_path):
    out = tmp_path / "run"
    res = edgeopt.compile(
        small_mlp_task, make_target(model_size_mb=0.2), trials=3, out=out, progress=False, search="uniform", **FAST
    )
    (strategy,) = uniform.made
    assert strategy.calls == {"prepare": 1, "warm_start": 1, "plan": 3, "after_trial": 3, "report": 1}
    study = optuna.load_study(study_name="small-mlp-testhost", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[0].user_attrs["warm_start"] == "uniform rank 8"
    for t in study.trials:  # every trial's plan is uniform: one entry for every layer
        plan = t.user_attrs["plan"]
        assert len({json.dumps(e, sort_keys=True) for e in plan.values()}) == 1, plan
    state = json.loads((out / "compile.json").read_text())
    assert state["strategy"] == "uniform" and state["uniform"] == {"format": "lowrank", "shipped": res.best_plan}
    assert (out / "model.onnx").exists() and not (out / "tables.json").exists()
