"""The additivity fit when the table's fastest plan is int8 and runs slower, as one graph, than the fastest
fp32 plan (ResNet-8 on this host: 0.143 ms against 0.103 ms)."""

from __future__ import annotations

import pytest

I8 = {"format": "dense", "precision": "int8"}
MEASURED = {"dense": 0.25, "fastest": 0.30, "fastest_fp32": 0.15, "middle": 0.15}  # whole graphs, ms


def _tables():
    from edgeopt.search.allocation.tables import Candidate, Tables

    rows = {
        "fc1": [Candidate("dense", {}, 1000, 0.10, 0.0), Candidate("int8", I8, 1000, 0.03, 0.1)]
        + [Candidate("prune 8", {"format": "prune", "rank": 8}, 500, 0.06, 0.5)],
        "fc2": [Candidate("dense", {}, 1000, 0.10, 0.0), Candidate("int8", I8, 1000, 0.02, 0.1)]
        + [Candidate("lowrank 4", {"format": "lowrank", "rank": 4}, 200, 0.05, 0.5)],
    }
    return Tables(rows, 0.25, 0.05, 0.0)


def _fit(monkeypatch, measured, tables=None):
    """``tables`` (default :func:`_tables`) fitted on the whole graphs ``measured``; the plans it measured."""
    from edgeopt.search.allocation import additivity

    plans = {}

    def graphs_ms(teacher, asked, ctx):
        plans.update(asked)
        return {name: measured[name] for name in asked}

    monkeypatch.setattr(additivity, "graphs_ms", graphs_ms)
    tables = tables if tables is not None else _tables()
    additivity.fit_additivity(tables, None, {"int8": True})
    return tables, plans


def test_a_slower_int8_plan_is_not_the_fit_and_its_rungs_are_charged_the_difference(monkeypatch):
    from edgeopt.search.allocation.knapsack import allocate, floor

    tables, plans = _fit(monkeypatch, MEASURED)
    graphs = tables.additivity["graphs"]
    assert plans["fastest_fp32"] == {"fc1": {"format": "prune", "rank": 8}, "fc2": {"format": "lowrank", "rank": 4}}
    assert graphs["fastest"]["measured_ms"] == graphs["fastest_fp32"]["measured_ms"] == 0.15
    assert graphs["fastest_int8"]["measured_ms"] == 0.30 and graphs["fastest_int8"]["charge_ms"] > 0.05
    # the table now gives the fp32 plan exactly, and the int8 plan at no less than it measured
    assert floor(tables).latency_ms == pytest.approx(0.15, abs=1e-9)
    assert tables.latency_of({"fc1": I8, "fc2": I8}) == pytest.approx(0.30, abs=1e-9)
    assert "int8 rungs charged" in tables.notes[-1]
    # every graph is a row of the report's additivity table (a missing field crashed a compile's report)
    from edgeopt.report.tables import additivity_rows

    rows = additivity_rows(tables.to_dict())
    assert [r[0] for r in rows[1:]] == ["dense", "fastest", "middle", "fastest_fp32", "fastest_int8"]
    assert rows[-1][1] == "0.3000" and rows[-1][3] == "0.3000" and rows[-1][4] == "+0.0%"
    # a budget between the two: the knapsack fits an fp32 plan under it, no int8 rung
    alloc = allocate(tables, latency_ms=0.2, max_params=None)
    assert alloc.feasible and I8 not in tables.plan_of(alloc.choice).values()


def test_an_int8_plan_that_runs_faster_stays_the_fit(monkeypatch):
    tables, plans = _fit(monkeypatch, {**MEASURED, "fastest": 0.08})
    assert plans["fastest"] == {"fc1": I8, "fc2": I8}
    assert "fastest_int8" not in tables.additivity["graphs"]
    assert tables.additivity["graphs"]["fastest_fp32"]["measured_ms"] == 0.15
    assert tables.latency_of({"fc1": I8, "fc2": I8}) == pytest.approx(0.08, abs=1e-9)


def _fp32_fastest_tables():
    """int8 rungs priced above the pruned fp32 ones, as isolated layers with their own Q/DQ (vit here)."""
    from edgeopt.search.allocation.tables import Candidate, Tables

    rows = {
        name: [
            Candidate("dense", {}, 1000, 0.10, 0.0),
            Candidate("int8", I8, 1000, 0.08, 0.1),
            Candidate("prune 8", {"format": "prune", "rank": 8}, 500, 0.06, 0.5),
        ]
        for name in ("fc1", "fc2")
    }
    return Tables(rows, 0.25, 0.05, 0.0)


def _fit_fp32_fastest(monkeypatch, whole_int8_ms):
    measured = {"dense": 0.25, "fastest": 0.17, "middle": 0.21, "whole_int8": whole_int8_ms}
    return _fit(monkeypatch, measured, _fp32_fastest_tables())


def test_int8_rungs_are_priced_through_a_whole_int8_graph_that_runs_faster_than_the_table(monkeypatch):
    from edgeopt.search.allocation.knapsack import allocate

    tables, plans = _fit_fp32_fastest(monkeypatch, 0.10)
    assert plans["fastest"] == {"fc1": {"format": "prune", "rank": 8}, "fc2": {"format": "prune", "rank": 8}}
    assert plans["whole_int8"] == {"fc1": I8, "fc2": I8}  # measured: the table's fastest plan is fp32
    record = tables.additivity["graphs"]["whole_int8"]
    assert record["measured_ms"] == 0.10 and record["credit_factor"] < 0.5
    # the table now gives the whole int8 graph as measured, and the fp32 fit is untouched
    assert tables.latency_of({"fc1": I8, "fc2": I8}) == pytest.approx(0.10, abs=1e-9)
    assert tables.latency_of(plans["fastest"]) == pytest.approx(0.17, abs=1e-9)
    assert "int8 rungs scaled by" in tables.notes[-1]
    # under a budget only the int8 plan meets, the knapsack takes int8 rungs (before: no plan fitted)
    alloc = allocate(tables, latency_ms=0.12, max_params=None)
    assert alloc.feasible and set(map(str, tables.plan_of(alloc.choice).values())) == {str(I8)}


def test_a_whole_int8_graph_slower_than_the_table_charges_the_int8_rungs(monkeypatch):
    tables, _ = _fit_fp32_fastest(monkeypatch, 0.40)
    record = tables.additivity["graphs"]["whole_int8"]
    assert record["charge_ms"] > 0 and "credit_factor" not in record
    assert tables.latency_of({"fc1": I8, "fc2": I8}) == pytest.approx(0.40, abs=1e-9)


def test_a_credit_never_prices_an_int8_rung_below_its_floor(monkeypatch):
    from edgeopt.search.allocation.additivity import INT8_CREDIT_FLOOR

    tables, _ = _fit_fp32_fastest(monkeypatch, 0.01)  # faster than the rest alone: the layers' share is unknown
    assert tables.additivity["graphs"]["whole_int8"]["credit_factor"] == INT8_CREDIT_FLOOR
    assert tables.latency_of({"fc1": I8, "fc2": I8}) > 0.01


def test_int8_in_runs_is_priced_by_the_whole_int8_graph_though_a_mixed_plan_ran_slower(monkeypatch):
    """vit here: a table's fastest plan of int8 layers among fp32 ones ran slower than the fastest fp32
    plan, but every layer int8 ran faster than both; charged through the mixed plan, no plan took int8."""
    from edgeopt.search.allocation.tables import Candidate, Tables

    prune = {"format": "prune", "rank": 8}

    def rows():  # fresh candidates for each fit: a fit scales them in place
        return {
            "fc1": [Candidate("dense", {}, 1000, 0.10, 0.0), Candidate("int8", I8, 1000, 0.03, 0.1)]
            + [Candidate("prune 8", prune, 500, 0.06, 0.5)],
            "fc2": [Candidate("dense", {}, 1000, 0.10, 0.0), Candidate("int8", I8, 1000, 0.08, 0.1)]
            + [Candidate("prune 8", prune, 500, 0.06, 0.5)],
        }

    measured = {"dense": 0.25, "fastest": 0.30, "fastest_fp32": 0.17, "middle": 0.21, "whole_int8": 0.12}
    tables, asked = _fit(monkeypatch, measured, Tables(rows(), 0.25, 0.05, 0.0))
    graphs = tables.additivity["graphs"]
    assert asked["fastest"] == {"fc1": I8, "fc2": prune} and asked["whole_int8"] == {"fc1": I8, "fc2": I8}
    assert "fastest_int8" not in graphs and graphs["whole_int8"]["measured_ms"] == 0.12
    assert tables.latency_of({"fc1": I8, "fc2": I8}) == pytest.approx(0.12, abs=1e-9)
    # slower than the fastest fp32 plan, the whole int8 graph leaves the charge through the mixed plan as it was
    tables, _ = _fit(monkeypatch, {**measured, "whole_int8": 0.20}, Tables(rows(), 0.25, 0.05, 0.0))
    graphs = tables.additivity["graphs"]
    assert "fastest_int8" in graphs and graphs["whole_int8"] == {
        "measured_ms": 0.2,
        "table_ms": pytest.approx(graphs["whole_int8"]["table_ms"]),
        "error_pct": pytest.approx(graphs["whole_int8"]["error_pct"]),
        "priced_through": False,  # shown in the report as it ran, the rungs not priced through it
    }
