"""A lower tier's plan ships only after the better tiers' finalists it passes over were measured beside it
(decision 0120, pipeline/second_look.py)."""

from __future__ import annotations

from edgeopt.pipeline.record import TrialRecord
from edgeopt.pipeline.select import choose_finalist

from .records import trained

BUDGET = 0.1147  # resnet8's in the run that showed it (d766103, fourth compile)


def _rec(number: int, score: float, p50: float) -> TrialRecord:
    return trained(number, score, p50, nodes=22)


class Windows:
    """Re-measurements whose host slows by ``load[k]`` in the k-th window (one per call, as selection
    times a tier, or a second look, side by side); each plan's quiet p50 is its own."""

    def __init__(self, quiet: dict[int, float], load: list[float]):
        self.quiet, self.load, self.calls = quiet, load, []

    def together(self, records):
        k = min(len(self.calls), len(self.load) - 1)
        self.calls.append([r.number for r in records])
        return {r.number: self._one(r.number, self.load[k]) for r in records}

    def __call__(self, record):
        return self.together([record])[record.number]

    def _one(self, number, slow):
        p50 = self.quiet[number] * slow
        return {"latency_p50_ms": p50, "latency_ms": p50 * 1.15 * slow, "nodes": 22}


def test_a_better_tier_missed_in_a_loaded_window_ships_when_it_clears_beside_the_lower_pick():
    uniform, small = _rec(10, 0.9717, 0.080), _rec(16, 0.9262, 0.085)
    # Tier 1 (uniform) timed in a loaded window (1.2x: p95 0.1325 > budget), tier 2 (small) in a quiet one;
    # side by side, quiet, uniform is the faster of the two.
    windows = Windows({10: 0.078, 16: 0.082}, [1.2, 1.0, 1.0])
    choice = choose_finalist([uniform, small], 0.005, windows, latency_budget=BUDGET)
    assert windows.calls == [[10], [16], [16, 10]]
    assert choice.record is uniform
    rows = {f["trial"]: f for f in choice.finalists}
    assert (
        rows[10]["shipped"]
        and not rows[16]["shipped"]
        and "cleared the budget measured beside it" in rows[16]["dropped"]
    )
    assert rows[10]["first_look"]["latency_ms"] > BUDGET > rows[10]["latency_ms"]  # the release starts from this
    assert choice.decision["latency_ms"] == rows[10]["latency_ms"]


def test_the_lower_pick_ships_when_the_better_tier_misses_beside_it_too():
    uniform, small = _rec(10, 0.9717, 0.080), _rec(16, 0.9262, 0.060)
    windows = Windows({10: 0.098, 16: 0.070}, [1.0])  # uniform really is over the budget: p95 0.113 + headroom
    choice = choose_finalist([uniform, small], 0.005, windows, latency_budget=BUDGET)
    assert windows.calls == [[10], [16], [16, 10]] and choice.record is small
    rows = {f["trial"]: f for f in choice.finalists}
    assert rows[16]["shipped"] and "second_look" in rows[10] and "second_look" in rows[16]


def test_a_pick_from_the_first_tier_is_not_measured_again():
    uniform, small = _rec(10, 0.9717, 0.080), _rec(16, 0.9262, 0.060)
    windows = Windows({10: 0.070, 16: 0.060}, [1.0])
    choice = choose_finalist([uniform, small], 0.005, windows, latency_budget=BUDGET)
    assert windows.calls == [[10]] and choice.record is uniform


def test_the_report_says_which_finalist_shipped_after_a_second_look():
    from edgeopt.report.markdown import second_looks

    uniform, small = _rec(10, 0.9717, 0.080), _rec(16, 0.9262, 0.085)
    windows = Windows({10: 0.078, 16: 0.082}, [1.2, 1.0, 1.0])
    choice = choose_finalist([uniform, small], 0.005, windows, latency_budget=BUDGET)
    (line,) = second_looks(choice.finalists)
    assert line.startswith("Trial #10 missed the budget in its tier's window (p95 0.1292 ms")
    assert "beside trial #16, the lower tier's pick (p95 0.0897 vs 0.0943 ms)" in line
    windows = Windows({10: 0.098, 16: 0.070}, [1.0])  # no second look shipped anything: nothing said
    assert second_looks(choose_finalist([uniform, small], 0.005, windows, latency_budget=BUDGET).finalists) == []
