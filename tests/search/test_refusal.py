"""A budget below the floor is refused before any training, and only on a fit the tables can bear."""

from __future__ import annotations

import json
import time

import pytest

from edgeopt.errors import BudgetRefused


@pytest.mark.slow
def test_latency_budget_below_the_floor_is_refused_fast(small_mlp_task, make_target, tmp_path):
    import edgeopt

    t0 = time.perf_counter()
    with pytest.raises(BudgetRefused) as info:
        edgeopt.compile(
            small_mlp_task, make_target(), trials=3, out=tmp_path / "run", budget={"latency_ms": 1e-4}, progress=False
        )
    assert time.perf_counter() - t0 < 60
    assert info.value.exit_code == 1
    msg = str(info.value)
    assert "floor of" in msg and " ms" in msg and "\n" not in msg
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["floor"]["latency_ms"] > 1e-4 and len(rep["floor"]["top"]) == 3
    assert not (tmp_path / "run" / "model.onnx").exists()


SUMS = {"dense": 0.25, "fastest": 0.08, "middle": 0.15}  # the isolated layers summed, per whole graph
QUIET = {"dense": 0.30, "fastest": 0.12, "middle": 0.20}  # the whole graphs measured on a quiet host
STALLED = {**QUIET, "dense": 7.6}  # one stall in the dense graph's measurement


def test_a_stalled_graph_is_measured_again_and_fitted_through_medians():
    from edgeopt.search.allocation.additivity import fit_scale, robust_fit

    once = fit_scale(SUMS, STALLED)  # what one round gives: the scale at its clip, a rest of ~6.6 ms
    assert once["scale"] == 4.0 and once["rest_ms"] > 6 and once["graphs"]["middle"]["error_pct"] > 1000
    rounds = iter([STALLED, QUIET, QUIET])
    fit = robust_fit(SUMS, lambda: next(rounds))
    assert fit["trusted"] and fit["rounds"] == 3
    assert fit["graphs"]["dense"]["measured_ms"] == pytest.approx(0.30)
    assert abs(fit["graphs"]["middle"]["error_pct"]) < 50 and fit["rest_ms"] < 0.3
    calls = []
    fit = robust_fit(SUMS, lambda: calls.append(1) or QUIET)
    assert fit["trusted"] and len(calls) == 1  # a fit within bounds is measured once


def _stalled_tables(rounds: list[dict[str, float]]):
    from edgeopt.search.allocation.additivity import robust_fit
    from edgeopt.search.allocation.tables import Candidate, Tables

    rows = {
        "fc1": [
            Candidate("dense", {}, 1000, 0.15, 0.0),
            Candidate("lowrank 1", {"format": "lowrank", "rank": 1}, 10, 0.04, 1.0),
        ],
        "fc2": [
            Candidate("dense", {}, 1000, 0.10, 0.0),
            Candidate("lowrank 1", {"format": "lowrank", "rank": 1}, 10, 0.04, 1.0),
        ],
    }
    it = iter(rounds)
    fit = robust_fit(SUMS, lambda: next(it))
    raw = fit.pop("raw")
    for cands in rows.values():
        for c in cands:
            c.latency_ms *= raw["scale"]
    return Tables(rows, raw["dense"], raw["rest_ms"], 0.0, additivity=fit)


def test_a_refusal_is_withheld_while_the_fit_stays_off(make_target, caplog):
    from edgeopt.runtime.targets import Target
    from edgeopt.search.allocation.knapsack import floor
    from edgeopt.search.allocation.refusal import refusal

    target = Target.load(make_target(latency_ms=0.5))
    stalled = _stalled_tables([STALLED] * 3)
    assert not stalled.additivity["trusted"] and stalled.additivity["rounds"] == 3
    assert floor(stalled).latency_ms > 0.5  # the floor the stalls made: a refusal, before
    with caplog.at_level("WARNING", logger="edgeopt.compile"):
        assert refusal(stalled, target, None) is None
    assert "not trusted" in caplog.text and "searching instead" in caplog.text
    tight = Target.load(make_target(latency_ms=0.05))
    quiet = _stalled_tables([STALLED, QUIET, QUIET])
    assert "below the floor" in refusal(quiet, tight, None)  # a trusted fit still refuses


def test_no_refusal_while_the_fastest_fp32_plan_measures_within_the_budget(make_target, caplog):
    """int8 rungs are priced alone: a graph of them can be slower than the fp32 plan, so a table floor
    set by them is no floor while the fastest fp32 plan, measured whole, meets the budget."""
    from edgeopt.runtime.targets import Target
    from edgeopt.search.allocation.knapsack import floor
    from edgeopt.search.allocation.refusal import refusal

    tables = _stalled_tables([STALLED, QUIET, QUIET])
    budget = 0.5 * floor(tables).latency_ms
    target = Target.load(make_target(latency_ms=budget))
    assert "below the floor" in refusal(tables, target, None)  # the floor alone refuses
    tables.additivity["graphs"]["fastest_fp32"] = {"measured_ms": 0.9 * budget}
    with caplog.at_level("WARNING", logger="edgeopt.compile"):
        assert refusal(tables, target, None) is None
    assert "without int8" in caplog.text and "searching instead" in caplog.text
    tables.additivity["graphs"]["fastest_fp32"] = {"measured_ms": 1.1 * budget}
    assert "below the floor" in refusal(tables, target, None)  # over the budget too: refused


def test_a_budget_far_below_the_fastest_plans_measured_whole_is_refused_even_on_an_untrusted_fit(make_target):
    from edgeopt.runtime.targets import Target
    from edgeopt.search.allocation.refusal import FAR_BELOW, refusal

    stalled = _stalled_tables([STALLED] * 3)
    assert not stalled.additivity["trusted"]
    fastest = stalled.additivity["graphs"]["fastest"]["measured_ms"]
    assert refusal(stalled, Target.load(make_target(latency_ms=1.1 * FAR_BELOW * fastest)), None) is None
    assert "below the floor" in refusal(stalled, Target.load(make_target(latency_ms=0.9 * FAR_BELOW * fastest)), None)


def test_a_table_floor_under_zero_does_not_let_a_budget_far_below_the_measured_graphs_through(make_target, tmp_path):
    """Prune rungs credit their consumers' saving to themselves, so the tables' floor can sum to less
    than nothing; the whole graphs measured still refuse a budget far below them (CI: 1e-4 ms passed)."""
    import json

    from edgeopt.runtime.targets import Target
    from edgeopt.search.allocation.knapsack import floor
    from edgeopt.search.allocation.refusal import FAR_BELOW, refusal, write_refusal
    from edgeopt.search.allocation.tables import Candidate, Tables

    rows = {
        "fc1": [Candidate("dense", {}, 1000, 0.004, 0.0), Candidate("prune 8", {"format": "prune"}, 80, -0.006, 1.0)],
        "fc2": [Candidate("dense", {}, 1000, 0.003, 0.0), Candidate("lowrank 1", {"format": "lowrank"}, 10, 0.001, 1)],
    }
    graphs = {
        "dense": {"measured_ms": 0.0101, "isolated_sum_ms": 0.0101},
        "fastest": {"measured_ms": 0.0126, "isolated_sum_ms": 0.0011},
        "middle": {"measured_ms": 0.011, "error_pct": 80.0},
    }
    tables = Tables(rows, 0.0101, 0.0031, 0.0, additivity={"graphs": graphs, "trusted": False, "rounds": 3})
    assert floor(tables).latency_ms < 1e-4
    why = refusal(tables, Target.load(make_target(latency_ms=1e-4)), None)
    assert why and "below the floor of 0.005 ms" in why and "(dense)" in why and "\n" not in why
    assert refusal(tables, Target.load(make_target(latency_ms=1.1 * FAR_BELOW * 0.0101)), None) is None
    write_refusal(tmp_path, why, tables, Target.load(make_target(latency_ms=1e-4)))
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["floor"]["latency_ms"] == FAR_BELOW * 0.0101 and rep["floor"]["table_ms"] < 1e-4
