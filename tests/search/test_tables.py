"""The per-layer tables, built for real: latencies measured in onnxruntime, the
whole-graph additivity fit, the refusal check before any sensitivity, a time-bounded calibration."""

from __future__ import annotations

import json
import math

import pytest

from edgeopt.search.allocation.tables import SCHEMA

torch = pytest.importorskip("torch")


ROUNDED = 1e-5  # tables.json keeps 5 decimals of a ms: a 0.004 ms graph is off by up to 0.1 % from rounding alone


@pytest.fixture(scope="module")
def built(small_mlp_task, tmp_path_factory):
    from edgeopt.compiler.decompose import decomposable_layers
    from edgeopt.runtime.targets import Target
    from edgeopt.search.allocation.build import build_tables

    from .conftest import TARGET_TOML

    out = tmp_path_factory.mktemp("tables")
    profile = out / "t.toml"
    profile.write_text(TARGET_TOML.format(name="testhost", budget="latency_ms = 1.0"))
    target = Target.load(str(profile))
    layers = decomposable_layers(small_mlp_task.model.eval(), small_mlp_task.example_input)
    seen = []

    def check(tables):  # what the refusal sees: latencies, and no sensitivity yet
        seen.append([c.sensitivity for cands in tables.layers.values() for c in cands])

    tables = build_tables(small_mlp_task.model, small_mlp_task, target, out, layers, check=check, int8=True)
    return tables, seen, out, target, layers


def test_refusal_check_runs_on_latencies_before_any_sensitivity(built):
    tables, seen, *_ = built
    assert len(seen) == 1
    assert all(s == 0.0 or math.isnan(s) for s in seen[0])  # dense rows are 0, the rest not computed yet
    assert any(math.isnan(s) for s in seen[0])
    sens = [c.sensitivity for cands in tables.layers.values() for c in cands if c.entry]
    assert sens and all(math.isfinite(s) and s >= 0 for s in sens)
    assert 48 <= tables.calibration <= 256


def test_additivity_fit_reproduces_the_two_measured_graphs_and_reports_a_held_out_error(built):
    from edgeopt.search.allocation.additivity import fastest_fp32

    tables, *_ = built
    a = tables.additivity
    # with int8 rungs, the fastest fp32 plan is measured whole too (a refusal must hold against it)
    extra = (
        {"fastest_fp32"}
        if any(c.entry.get("precision") == "int8" for cs in tables.layers.values() for c in cs)
        else set()
    )
    # and when the fastest (int8) plan measured slower than it, the fit went through the fp32 one instead
    slower_int8 = "fastest_int8" in a["graphs"]
    # and when it went through an fp32 plan otherwise, the int8 rungs were priced through a whole int8 graph
    repriced = "whole_int8" in a["graphs"] and a["graphs"]["whole_int8"].get("priced_through") is not False
    more = ({"fastest_int8"} if slower_int8 else set()) | ({"whole_int8"} if "whole_int8" in a["graphs"] else set())
    assert set(a["graphs"]) == {"dense", "fastest", "middle"} | extra | more
    assert a["held_out"] == "middle" and (not slower_int8 or extra) and not (slower_int8 and repriced)
    assert 0.25 <= a["scale"] <= 4.0 and a["rest_ms"] >= 0
    for name, g in a["graphs"].items():
        assert g["measured_ms"] > 0 and math.isfinite(g["error_pct"]), (name, g)
    fastest = (
        fastest_fp32(tables)
        if slower_int8 or repriced
        else {n: min(range(len(c)), key=lambda i: c[i].latency_ms) for n, c in tables.layers.items()}
    )
    predicted = tables.rest_ms + sum(tables.layers[n][i].latency_ms for n, i in fastest.items())
    assert predicted == pytest.approx(a["graphs"]["fastest"]["table_ms"], rel=1e-3, abs=ROUNDED)
    dense = tables.rest_ms + sum(c[0].latency_ms for c in tables.layers.values())
    if a["fit"].startswith("through both graphs"):  # otherwise clipped, in ratio, or not fitted
        assert dense == pytest.approx(a["graphs"]["dense"]["measured_ms"], rel=1e-3, abs=ROUNDED)
        assert predicted == pytest.approx(a["graphs"]["fastest"]["measured_ms"], rel=1e-3, abs=ROUNDED)
    if slower_int8:  # its int8 rungs charged: the table gives the int8 plan what it measured
        g = a["graphs"]["fastest_int8"]
        assert g["table_ms"] == pytest.approx(g["measured_ms"], rel=1e-3, abs=ROUNDED) or g["charge_ms"] == 0


def test_tables_are_cached_with_their_additivity(built, small_mlp_task):
    from edgeopt.search.allocation.build import build_tables

    tables, _, out, target, layers = built
    doc = json.loads((out / "tables.json").read_text())
    assert doc["schema"] == SCHEMA and doc["additivity"] == tables.additivity
    calls = []
    again = build_tables(small_mlp_task.model, small_mlp_task, target, out, layers, check=calls.append, int8=True)
    assert again.cached and calls == [again]  # read back, nothing measured, and the budget checked again
    assert again.additivity == tables.additivity and again.calibration == tables.calibration


def test_the_report_compares_the_shipped_plan_with_the_table_and_says_why_per_layer(built):
    tables, *_ = built
    name = next(iter(tables.layers))
    rung = next(c for c in tables.layers[name] if c.entry)
    rep = tables.report({name: rung.entry}, measured_ms=0.5)
    expected = tables.latency_of({name: rung.entry})
    assert rep["shipped"]["table_ms"] == pytest.approx(expected, abs=1e-5)
    assert rep["shipped"]["error_pct"] == pytest.approx(100 * (expected / 0.5 - 1), abs=0.01)
    rows = {r["layer"]: r for r in rep["rows"]}
    assert rows[name]["chosen"] == rung.label and rows[name]["why"].startswith("saves")
    assert all(r["chosen"] == "dense" and r["why"].startswith("dense") for n, r in rows.items() if n != name)
    assert "shipped" not in tables.report({name: rung.entry}, measured_ms=None)  # an int8 artifact: no comparison


def test_a_costly_forward_pass_shrinks_the_calibration_batch_then_the_rungs(built, small_mlp_task):
    import copy
    import math

    from edgeopt.search.allocation.sensitivity import (
        CALIBRATION,
        MIN_CALIBRATION,
        calibration_plan,
        fill_sensitivities,
    )

    assert calibration_plan(100, 50, 1000) == (CALIBRATION, False)  # a small model: the whole batch
    assert calibration_plan(100, 50, 10**8)[0] == 100  # 1e12 / (100 rungs x 1e8 MACs)
    assert calibration_plan(100, 50, 205 * 10**6) == (MIN_CALIBRATION, False)  # 48 x 2.05e10 fits in 1e12
    assert calibration_plan(100, 50, 10**9) == (MIN_CALIBRATION, True)  # 48 x 1e11 does not: the coarse rungs
    assert calibration_plan(100, 100, 10**9) == (MIN_CALIBRATION, False)  # nothing coarser to measure

    full, tables = copy.deepcopy(built[0]), copy.deepcopy(built[0])  # the module's fixture stays as built
    fill_sensitivities(small_mlp_task.model, small_mlp_task, full)
    assert full.calibration == CALIBRATION and not full.timings["sensitivity_rungs"]["coarse"]
    assert full.timings["sensitivity_rungs"]["threads"] >= 1
    fill_sensitivities(small_mlp_task.model, small_mlp_task, tables, work=1.0)
    rungs = tables.timings["sensitivity_rungs"]
    assert tables.calibration == MIN_CALIBRATION and rungs["coarse"] and rungs["measured"] < rungs["of"]
    assert rungs["of"] == full.timings["sensitivity_rungs"]["measured"]
    for name, cands in tables.layers.items():  # every rung has a sensitivity, measured or interpolated
        assert all(not math.isnan(c.sensitivity) and c.sensitivity >= 0 for c in cands if c.entry), name


def test_the_calibration_batch_takes_the_classes_in_turn():
    import numpy as np

    from edgeopt.search.allocation.sensitivity import balanced_order

    y = np.array([0] * 95 + [1] * 5)
    first = balanced_order(y, 10)
    assert y[first].sum() == 5 and len(set(first.tolist())) == 10  # every positive, no repeats
    assert sorted(balanced_order(y, 1000).tolist()) == list(range(100))  # all of them when n is larger
    assert balanced_order(np.linspace(0, 1, 5), 3).tolist() == [0, 1, 2]  # regression targets: in order


def test_prune_rungs_are_offered_where_pruning_keeps_the_output(built):
    """Structured pruning: the hidden layers get rungs at 1/8, 3/16, 1/4..7/8 of their width, measured
    in the whole graph; the classifier, whose width is the output, gets none and the notes say why."""
    tables, *_ = built
    names = list(tables.layers)
    assert not any(c.entry.get("format") == "prune" for c in tables.layers[names[-1]])
    assert any(names[-1] in note and "cannot be pruned" in note for note in tables.notes)
    hidden = [c for c in tables.layers[names[0]] if c.entry.get("format") == "prune" and "precision" not in c.entry]
    assert [c.entry["rank"] for c in hidden] == [32, 48, 64, 96, 128, 160, 192, 224]
    assert all(math.isfinite(c.latency_ms) and math.isfinite(c.sensitivity) for c in hidden)
    assert hidden[0].sensitivity > hidden[-1].sensitivity  # an eighth of the channels drifts more than 7/8
    # priced from the dense latencies measured alone: the layer at r of its width, less what its consumer
    # (the next Linear, narrowed to the same r of its inputs) saves
    own, consumer = tables.layers[names[0]][0].latency_ms, tables.layers[names[1]][0].latency_ms
    lats = [c.latency_ms for c in hidden]
    assert lats == sorted(lats) and lats[0] < lats[-1] < own
    assert lats[0] == pytest.approx(0.125 * own - 0.875 * consumer, rel=1e-6, abs=1e-9)  # 32 of 256 kept


def test_every_rung_has_an_int8_twin_with_a_measured_latency_and_its_own_sensitivity(built):
    """int8 is a rung like a rank: the dense int8 rung is measured alone with its Q/DQ boundaries, its KL
    measured by onnxruntime on the quantized export; a narrowed or low-rank int8 rung adds its twin's KL."""
    tables, *_ = built
    for name, cands in tables.layers.items():
        fp32 = [c for c in cands if "precision" not in c.entry]
        int8 = {json.dumps({k: v for k, v in c.entry.items() if k != "precision"}, sort_keys=True): c for c in cands}
        assert len(cands) == 2 * len(fp32), name
        dense8 = next(c for c in cands if c.entry == {"format": "dense", "precision": "int8"})
        assert math.isfinite(dense8.latency_ms) and dense8.latency_ms >= 0 and dense8.label == "dense int8"
        assert math.isfinite(dense8.sensitivity) and dense8.sensitivity >= 0
        for c in fp32[1:]:
            twin = int8[json.dumps(c.entry, sort_keys=True)]
            assert twin.params == c.params and math.isfinite(twin.latency_ms)
            assert twin.sensitivity == pytest.approx(c.sensitivity + dense8.sensitivity, rel=1e-9, abs=1e-12)
    name = next(iter(tables.layers))
    assert tables.latency_of({name: {"format": "dense", "precision": "int8"}}) == pytest.approx(
        tables.latency_of({}) - tables.layers[name][0].latency_ms + dense8_of(tables, name).latency_ms
    )


def dense8_of(tables, name):
    return next(c for c in tables.layers[name] if c.entry.get("precision") == "int8" and c.entry["format"] == "dense")


def _latencies_only(task, tmp_path, int8):
    """The tables as the refusal check sees them (latencies, no sensitivity), built from scratch."""
    from edgeopt.compiler.decompose import decomposable_layers
    from edgeopt.runtime.targets import Target
    from edgeopt.search.allocation.build import build_tables

    from .conftest import TARGET_TOML

    profile = tmp_path / "t.toml"
    profile.write_text(TARGET_TOML.format(name="testhost", budget="latency_ms = 1.0"))
    layers = decomposable_layers(task.model.eval(), task.example_input)
    seen = []

    def stop(tables):
        seen.append(tables)
        raise StopIteration

    with pytest.raises(StopIteration):
        build_tables(task.model, task, Target.load(str(profile)), tmp_path, layers, check=stop, int8=int8)
    return seen[0], layers


def test_fp32_only_tables_have_no_int8_rung(small_mlp_task, tmp_path):
    """``--fp32`` (``int8=False``): the latencies are measured without any int8 rung (stopped before the
    sensitivities by the budget check)."""
    tables, _ = _latencies_only(small_mlp_task, tmp_path, int8=False)
    assert not any("precision" in c.entry for cands in tables.layers.values() for c in cands)


def test_the_sensitivities_take_the_thread_count_that_runs_faster_now():
    """1 thread or every core, whichever pass ran faster: a module that runs slow on the thread count a
    busy host would slow down (a parallel region waiting for a thread whose core is taken) is measured on
    the other one, either way round."""
    import time

    from edgeopt.search.allocation.sensitivity import fastest_threads

    class Waits(torch.nn.Module):
        def __init__(self, slow_on: int):
            super().__init__()
            self.slow_on = slow_on

        def forward(self, x):
            time.sleep(0.03 if torch.get_num_threads() == self.slow_on else 0.001)
            return x

    threads = torch.get_num_threads()
    try:
        X = torch.zeros(4, 2)
        assert fastest_threads(Waits(slow_on=2), X, 2) == 1
        assert fastest_threads(Waits(slow_on=1), X, 2) == 2
        assert fastest_threads(Waits(slow_on=2), X, 1) == 1  # one core: nothing to choose
    finally:
        torch.set_num_threads(threads)


def test_the_rungs_and_the_whole_graphs_are_timed_side_by_side_in_rounds(small_mlp_task, tmp_path, monkeypatch):
    """Every rung, with the empty graphs it is measured less, in one measurement process, a block of each
    per round (``pending.Pending``); the whole graphs of the fit in another. Timed one after another, a
    window of other work fell on a few rungs, and MobileNetV3's rungs read 2.5x apart (the median rung)
    between five compiles with one core busy."""
    from edgeopt.search.allocation.additivity import GRAPH_ROUNDS
    from edgeopt.search.allocation.pending import TABLE_ROUNDS
    from testkit.jobs import record_local_jobs

    jobs = record_local_jobs(monkeypatch)
    tables, layers = _latencies_only(small_mlp_task, tmp_path, int8=False)
    # the rungs, then the graphs; a fit the held-out check does not trust (a loaded test host) times the
    # graphs again, side by side as well
    assert len(jobs) >= 2 and all(j.get("many") for j in jobs), jobs
    rungs, graph_jobs = jobs[0], jobs[1:]
    assert rungs["many"]["rounds"] == TABLE_ROUNDS
    assert all(g["many"]["rounds"] == GRAPH_ROUNDS for g in graph_jobs)
    assert 1 + len(rungs["many"]["others"]) >= len(layers) + 1  # each layer's dense rung at least, and a floor
    assert sum(not math.isnan(c.latency_ms) for cands in tables.layers.values() for c in cands) > len(layers)
    assert 1 + len(graph_jobs[0]["many"]["others"]) == 3  # dense, the fastest plan, the middle plan
