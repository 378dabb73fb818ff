"""Selection, through its public functions: finalists re-measured, tiers, the dense model, best effort."""

from __future__ import annotations

from types import SimpleNamespace as NS

from edgeopt.search.record import Constraints, DType, ScreenResult, Status, TrialRecord
from edgeopt.search.select import BASELINE_NOTE, baseline_wins, choose_finalist, select

MET = Constraints()


def _rec(n, score, p50, *, status=Status.TRAINED, constraints=MET, nodes=4, state="complete"):
    screen = ScreenResult(latency_ms=p50 * 1.1, latency_p50_ms=p50, latency_source="measured", peak_memory_mb=10.0,
                          size_bytes=1000, nodes=nodes)
    return TrialRecord(number=n, status=status, plan={"fc": {"format": "lowrank", "rank": n}}, dtype=DType.FP32,
                       params=100 + n, screen=screen, val={"score": score}, constraints=constraints, state=state)


def test_finalists_over_the_latency_budget_when_remeasured_are_dropped():
    recs = [_rec(1, 0.99, 0.10), _rec(2, 0.99, 0.20), _rec(3, 0.95, 0.30)]
    # Re-measured: trial 1 is really over the 0.25 ms budget; trial 2 is within it.
    truth = {1: 0.30, 2: 0.22, 3: 0.20}

    def remeasure(r):
        return {"latency_p50_ms": truth[r.number] * 0.8, "latency_ms": truth[r.number], "nodes": 4}

    choice = choose_finalist(recs, 0.005, remeasure, latency_budget=0.25)
    assert choice.record.number == 2 and not choice.notes
    assert {f["trial"]: f["within_budget"] for f in choice.finalists} == {1: False, 2: True}
    # When the whole top tier fails, the next tier of F1 is tried.
    truth[2] = 0.40
    assert choose_finalist(recs, 0.005, remeasure, latency_budget=0.25).record.number == 3
    # When every tier fails, the screen's best ships, and the note says so.
    truth[3] = 0.40
    choice = choose_finalist(recs, 0.005, remeasure, latency_budget=0.25)
    assert choice.record.number == 1 and "measured again" in choice.notes[0]


def test_a_finalist_with_headroom_under_the_budget_is_preferred_to_one_at_its_edge():
    recs = [_rec(1, 0.99, 0.10), _rec(2, 0.99, 0.11)]
    truth = {1: 0.249, 2: 0.23}  # trial 1 is faster but 0.4 % under the 0.25 ms budget, trial 2 8 % under

    def remeasure(r):
        return {"latency_p50_ms": truth[r.number] * 0.9, "latency_ms": truth[r.number], "nodes": 4}

    assert choose_finalist(recs, 0.005, remeasure, latency_budget=0.25).record.number == 2
    truth[2] = 0.2499  # no finalist has headroom: the fastest within the budget still ships
    assert choose_finalist(recs, 0.005, remeasure, latency_budget=0.25).record.number == 1


def test_among_equally_fast_finalists_the_fewest_nodes_ship():
    recs = [_rec(1, 0.99, 0.100, nodes=8), _rec(2, 0.99, 0.101, nodes=4), _rec(3, 0.99, 0.2, nodes=2)]
    choice = choose_finalist(recs, 0.005)  # without remeasure: the screen's own figures
    assert choice.record.number == 2


def test_repeated_plans_are_one_finalist_and_unfinished_trials_are_ignored():
    a, b = _rec(1, 0.99, 0.1), _rec(2, 0.99, 0.1)
    b.plan = a.plan
    running = _rec(3, 1.0, 0.01, state="running")
    choice = choose_finalist([a, b, running], 0.005)
    assert [f["trial"] for f in choice.finalists] == [1]


def test_no_feasible_trial_ships_the_closest_and_names_the_budgets_it_misses():
    over = _rec(1, 0.99, 0.1, constraints=Constraints(model_size=0.5))
    worse = _rec(2, 0.99, 0.1, constraints=Constraints(model_size=2.0, latency=0.1))
    choice = choose_finalist([worse, over], 0.005)
    assert choice.record.number == 1
    assert choice.notes == ["no trial met every budget in the search; shipping the closest plan (over on: model_size), "
                            "after the longer final fine-tune"]
    assert choose_finalist([], 0.005).record is None


def _baseline(verdict="pass", score=0.95, p50=0.10):
    return NS(gate=NS(verdict=verdict), metrics={"val": {"score": score}}, bench=NS(latency_ms={"p50": p50}))


def test_dense_model_within_budget_is_shipped_when_nothing_beats_it():
    budget = NS(min_f1=0.9, latency_ms=None)
    base = _baseline()
    assert baseline_wins(base, None, budget, 0.002)                        # nothing feasible found
    assert baseline_wins(base, _rec(1, 0.90, 0.01), budget, 0.002)         # faster but clearly worse F1
    assert baseline_wins(base, _rec(1, 0.95, 0.20), budget, 0.002)         # same F1, slower
    assert not baseline_wins(base, _rec(1, 0.95, 0.05), budget, 0.002)     # same F1, faster: ship the plan
    assert not baseline_wins(base, _rec(1, 0.97, 0.20), budget, 0.002)     # better F1
    assert not baseline_wins(_baseline("fail"), None, budget, 0.002)       # over budget: never shipped as best
    assert not baseline_wins(_baseline(score=0.85), None, budget, 0.002)   # under the quality floor
    infeasible = _rec(1, 0.99, 0.01, constraints=Constraints(latency=1.0))
    assert baseline_wins(base, infeasible, budget, 0.002)                  # an infeasible plan never beats it


def test_select_ships_the_dense_model_with_a_note_and_keeps_the_finalists():
    budget = NS(min_f1=0.9, latency_ms=None)
    choice = select([_rec(1, 0.95, 0.20)], _baseline(), budget, 0.002, None)
    assert choice.record is None and choice.notes == [BASELINE_NOTE] and len(choice.finalists) == 1
    choice = select([_rec(1, 0.95, 0.05)], _baseline(), budget, 0.002, None)
    assert choice.record.number == 1


def test_nothing_feasible_never_ships_a_plan_far_below_the_quality_floor():
    # A plan closest to the budgets but 69 pt below the teacher (the ViT that shipped at F1 0.25) is not shipped.
    garbage = _rec(1, 0.25, 0.1, constraints=Constraints(latency=0.05))
    decent = _rec(2, 0.935, 0.1, constraints=Constraints(latency=0.2))
    budget = NS(min_f1=None, latency_ms=0.05)
    base = _baseline("fail", score=0.94)
    assert select([garbage, decent], base, budget, 0.002, None).record.number == 2
    choice = select([garbage], base, budget, 0.002, None)
    assert choice.record is None
    assert "69.0 pt below" in choice.notes[0] and "input model is shipped" in choice.notes[0]
    # With a floor in the budget, the floor is what counts.
    assert select([decent], base, NS(min_f1=0.99, latency_ms=0.05), 0.002, None).record is None
