"""The search space: rank bounds from the layers and the size budget, warm-start plans, Optuna round trip."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.compile
torch = pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

from edgeopt.compiler.decompose import decomposable_layers, plan_cost  # noqa: E402  (imported after the importorskip guards)
from edgeopt.compiler.formats import DEFAULT_FORMAT, get_handler, registered_handlers  # noqa: E402  (imported after the importorskip guards)
from edgeopt.pipeline.prepare import MIB, rank_caps  # noqa: E402  (imported after the importorskip guards)
from edgeopt.runtime.targets import Target  # noqa: E402  (imported after the importorskip guards)
from edgeopt.search.space import SearchSpace  # noqa: E402  (imported after the importorskip guards)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )


class _Task:
    example_input = torch.zeros(1, 64)


def test_rank_caps_keep_every_layer_alone_within_the_size_budget():
    model = _model()
    layers = decomposable_layers(model, _Task.example_input)
    base = plan_cost(model, {}, _Task.example_input)
    target = Target.load("host").with_budget(model_size_mb=0.03)
    caps = rank_caps(model, _Task, layers, target, base, int8=False)
    assert caps, "a size budget must bound the ranks"
    limit = 0.03 * MIB / 4
    for (name, fmt), cap in caps.items():
        if cap == 0:
            continue
        entry = get_handler(fmt).plan_entry(cap)
        assert plan_cost(model, {name: entry}).layers[name].params <= limit
        if cap < layers[name].max_rank[fmt]:  # the cap is the largest such rank
            bigger = get_handler(fmt).plan_entry(cap + 1)
            assert plan_cost(model, {name: bigger}).layers[name].params > limit
    space = SearchSpace(layers, rank_caps=caps)
    for choice in space.choices:
        for fmt, (lo, hi) in choice.rank_bounds.items():
            assert 1 <= lo <= hi <= max(1, caps.get((choice.name, fmt), hi))


def test_largest_uniform_plan_is_the_largest_that_fits_and_round_trips_through_optuna():
    model = _model()
    layers = decomposable_layers(model, _Task.example_input)
    space = SearchSpace(layers)
    limit = 40_000

    def fits(plan):
        return plan_cost(model, plan).params <= limit

    for handler in registered_handlers():
        if not handler.has_rank or handler.graph_level:  # prune: offered by the allocation only
            continue
        plan = space.largest_uniform_plan(handler.name, fits)
        assert plan is not None and fits(plan)
        ranks = {e["rank"] for e in plan.values() if e["format"] == handler.name}
        r = max(ranks)
        assert r == space.choices[0].rank_bounds[handler.name][1] or not fits(space.uniform_plan(handler.name, r + 1))
        assert space.largest_uniform_plan(handler.name, lambda p: False) is None

        study = optuna.create_study(direction="maximize")
        study.enqueue_trial(space.trial_params(plan))
        trial = study.ask()
        assert space.sample(trial) == plan


def test_sampled_ranks_are_logarithmic_ints_within_bounds():
    model = _model()
    space = SearchSpace(decomposable_layers(model, _Task.example_input))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        plan = space.sample(trial)
        study.tell(trial, 0.0)
        for name, entry in plan.items():
            choice = next(c for c in space.choices if c.name == name)
            if entry["format"] != DEFAULT_FORMAT:
                assert set(entry) == {"format", "rank"}  # the one rank key, for every format
                r = entry["rank"]
                lo, hi = choice.rank_bounds[entry["format"]]
                assert isinstance(r, int) and lo <= r <= hi
    dist = study.trials[0].distributions
    assert any(getattr(d, "log", False) for d in dist.values())


def test_rank_bounds_are_the_handlers_search_limits():
    model = _model()
    layers = decomposable_layers(model, _Task.example_input)
    space = SearchSpace(layers)
    for choice in space.choices:
        assert choice.formats[0] == DEFAULT_FORMAT
        for fmt, (lo, hi) in choice.rank_bounds.items():
            assert lo == 1 and hi == get_handler(fmt).max_search_rank(layers[choice.name])
    some = next(iter(space.choices[0].rank_bounds))
    narrow = SearchSpace(layers, formats=[some], rank_limits={some: 2})
    assert all(c.formats == (DEFAULT_FORMAT, some) and c.rank_bounds[some] == (1, 2) for c in narrow.choices)


def test_layer_latency_estimate_uses_the_targets_performance_model():
    from edgeopt.report import layer_breakdown

    device = Target.load("rpi4").to_dict()["device"]
    layers = [
        {
            "name": "big",
            "kind": "linear",
            "format": "dense",
            "ranks": None,
            "params": 1_049_600,
            "dense_params": 1_049_600,
            "macs": 1_048_576,
        },
        {
            "name": "lr",
            "kind": "linear",
            "format": "lowrank",
            "ranks": [1, 8, 1],
            "params": 17_408,
            "dense_params": 1_049_600,
            "macs": 16_384,
        },
        {
            "name": "tt",
            "kind": "linear",
            "format": "tt",
            "ranks": [1, 4, 1],
            "params": 2_048,
            "dense_params": 65_600,
            "macs": 20_000,
        },
    ]
    rows = layer_breakdown({"target": {"device": device}, "layers": layers})
    shares = {r["name"]: r["latency_share"] for r in rows}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["big"] > shares["lr"]  # 4 MB of weights at 4 GB/s dominate
    assert shares["tt"] > 0  # six nodes of dispatch cost even with few bytes
    # No performance model (an uncalibrated profile): no share is invented.
    rows = layer_breakdown({"target": {"device": {"arch": "x86_64"}}, "layers": layers})
    assert all(r["latency_share"] is None for r in rows)
