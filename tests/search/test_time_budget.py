"""``compile(time_budget_s=...)`` / ``--time-budget``: the whole compile within the budget, split
between the search and the final fine-tune."""

from __future__ import annotations

import logging
import time

import pytest

pytest.importorskip("optuna")


def test_time_budget_is_validated():
    from edgeopt.errors import InputError
    from edgeopt.pipeline.config import CompileConfig

    assert CompileConfig(time_budget_s=30).time_budget_s == 30
    with pytest.raises(InputError, match="time_budget_s"):
        CompileConfig(time_budget_s=0)


@pytest.mark.slow
def test_time_budget_bounds_the_search_and_the_final_fine_tune(small_mlp_task, make_target, tmp_path, caplog):
    import edgeopt

    caplog.set_level(logging.INFO, logger="edgeopt.compile")
    budget = 30.0
    t0 = time.perf_counter()
    res = edgeopt.compile(
        small_mlp_task,
        make_target(latency_ms=100.0),
        trials=500,
        out=tmp_path / "run",
        progress=False,
        time_budget_s=budget,
        trial_epochs=3,
        final_epochs=2000,
        final_bench={"min_iters": 60, "min_time_s": 0.2, "max_iters": 5000},
    )
    wall = time.perf_counter() - t0
    assert wall <= budget * 1.2 + 5, wall  # a generous margin: two shared cores
    n = len(res.report["trials"]) if isinstance(res.report.get("trials"), list) else None
    assert n is None or 0 < n < 500
    messages = [r.getMessage() for r in caplog.records]
    assert any("stopped by the time budget" in m or "no trial runs" in m for m in messages), messages[-5:]
    assert any("the final fine-tune runs" in m for m in messages) or res.best_plan == {}
    ft = res.report["best"].get("finetune")  # the fine-tune record reaches the report (it did not before)
    assert ft is not None or res.best_plan == {}
    if ft:  # the cut is said where a user reads it, whether the fine-tune or the trial's student shipped
        assert ft["cut_from"] == 2000 and 0 < ft["cut_to"] < 2000 and ft["epochs"] <= max(ft["cut_to"], 3)
        assert ft["continued"]  # cut short, it went on from the trial's kept weights instead of starting again
        assert any("the time budget cut the final fine-tune" in m for m in messages)
        assert "The time budget cut the final fine-tune" in (tmp_path / "run" / "report.md").read_text()
    assert not (tmp_path / "run" / ".students").exists()  # the kept students are gone once the artifact is written


def test_the_cut_fine_tune_is_sized_by_the_chosen_trials_own_epochs():
    """The final fine-tune trains the chosen plan, not the median trial: a wide plan chosen among narrow ones
    gets the epochs its own trial's speed allows (mobilenet: 7.0 s an epoch against the median's 5.4; sized
    by the median, the compile ran 605 s of a 600 s budget)."""
    from edgeopt.pipeline.config import TIME_SPLIT, CompileConfig
    from edgeopt.pipeline.loop import _final_config
    from edgeopt.pipeline.record import DType, Status, TrialRecord

    def trial(number: int, distill_s: float) -> TrialRecord:
        return TrialRecord(
            number=number,
            status=Status.TRAINED,
            plan={"fc1": {"format": "prune", "rank": 8}},
            dtype=DType.FP32,
            timings={"distill": distill_s},
            state="complete",
        )

    config = CompileConfig(time_budget_s=100.0, trial_epochs=10, final_epochs=1000)
    narrow = [trial(0, 10.0), trial(1, 10.0), trial(2, 10.0)]  # 1 s an epoch
    wide = trial(3, 40.0)  # 4 s an epoch
    recs = [*narrow, wide]
    t_start = time.perf_counter()  # nearly all of the budget is left
    left = (1 - TIME_SPLIT["ship_reserve"]) * 100.0
    by_wide = _final_config(config, recs, t_start, wide).final_epochs
    assert int(left / 4.0) - 1 <= by_wide <= int(left / 4.0)
    by_median = _final_config(config, recs, t_start, narrow[0]).final_epochs  # its own speed is the median's
    assert by_median > 3 * by_wide
    # Without a trained chosen trial (the dense model, a repeat), the trials' median stands in.
    assert _final_config(config, recs, t_start, None).final_epochs == _final_config(config, recs, t_start).final_epochs
