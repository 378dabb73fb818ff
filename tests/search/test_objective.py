"""One trial through :class:`Objective`: plan → screen → distill → record, with a real study in memory."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.compile
torch = pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

from edgeopt.compiler.metrics import unpack_right  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.config import CompileConfig  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.evaluate import int8_predict  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.objective import TIE_BREAK, Objective, tie_break  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.prepare import prepare  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.record import DTYPE_ATTR, PLAN_ATTR, Status, TrialRecord  # noqa: E402
from edgeopt.pipeline.screen import Screen  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.runtime.targets import Target  # noqa: E402 - after the importorskips
from edgeopt.search.alternatives import LABEL_ATTR  # noqa: E402

QUICK = {"min_iters": 20, "min_time_s": 0.05, "max_iters": 500}


def _objective(task, tmp_path, search_only=False, **budget):
    config = CompileConfig(out=tmp_path, final_bench=QUICK, trial_epochs=2, search="layers", search_only=search_only)
    target = Target.load("host").with_budget(**budget)
    inputs = prepare(task, target, config)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    return Objective(inputs, config, study, Screen(task, target, tmp_path / "cache.json")), study, inputs


def test_plans_over_the_size_budget_on_paper_end_before_anything_is_built(small_mlp_task, tmp_path):
    objective, study, _ = _objective(small_mlp_task, tmp_path, model_size_mb=0.0001)
    study.optimize(objective, n_trials=2)
    for t in study.trials:
        rec = TrialRecord.from_trial(t)
        assert rec.status is Status.SCREENED_OUT and t.value == 0.0
        assert rec.constraints.model_size > 0 and rec.screen is None and "distill" not in rec.timings
        assert t.system_attrs["constraints:model_size"] == rec.constraints.model_size


@pytest.mark.slow
def test_a_trained_trial_records_everything_and_a_repeat_is_not_trained_again(small_mlp_task, tmp_path):
    objective, study, inputs = _objective(small_mlp_task, tmp_path, model_size_mb=0.3)
    plan = inputs.space.uniform_plan("lowrank", 8)
    study.enqueue_trial(inputs.space.trial_params(plan))
    study.enqueue_trial(inputs.space.trial_params(plan))
    study.optimize(objective, n_trials=2)
    first, second = (TrialRecord.from_trial(t) for t in study.trials)
    assert first.status is Status.TRAINED and first.feasible and first.plan == plan
    assert {"decompose", "export", "bench", "distill"} <= set(first.timings)
    assert first.screen is not None and first.screen.nodes > 0
    assert 0 < first.score - study.trials[0].value <= TIE_BREAK  # the tie-break, and no more
    assert second.repeat_of == first.number and second.val == first.val and "distill" not in second.timings
    right = unpack_right(first.val_right)  # which validation samples it got right: selection's ties (0120)
    assert right is not None and right.size == len(inputs.task.y_val)
    assert first.val["accuracy"] == pytest.approx(right.mean()) and second.val_right == first.val_right
    assert study.trials[1].value == study.trials[0].value


def _seed(study, *alternatives):
    for label, plan, dtype in alternatives:
        study.enqueue_trial({}, user_attrs={LABEL_ATTR: label, PLAN_ATTR: plan, DTYPE_ATTR: dtype})


@pytest.mark.slow
def test_int8_takes_its_fp32_twins_weights_and_a_plan_that_changes_nothing_is_the_teacher(small_mlp_task, tmp_path):
    """int8 is post-training: a plan's int8 quantizes the weights its trained fp32 trial kept (the user's
    static int8 of a trained model), and dense int8 is the teacher's, as the final fine-tune ships them."""
    objective, study, inputs = _objective(small_mlp_task, tmp_path, model_size_mb=0.3)
    plan = inputs.space.uniform_plan("lowrank", 8)
    _seed(study, ("lr8", plan, "fp32"), ("lr8 + int8", plan, "int8"), ("dense + int8", {}, "int8"))
    study.optimize(objective, n_trials=3)
    fp32, int8, dense = (TrialRecord.from_trial(t) for t in study.trials)
    assert fp32.status is Status.TRAINED and "distill" in fp32.timings and fp32.weights_of is None
    assert int8.status is Status.TRAINED and int8.weights_of == f"trial {fp32.number}"
    assert "distill" not in int8.timings and int8.repeat_of is None
    same = unpack_right(fp32.val_right) == unpack_right(int8.val_right)
    assert same.mean() >= 0.9  # the same weights, quantized: right and wrong on nearly the same samples
    task = inputs.task
    teacher = int8_predict(inputs.teacher, task.example_input, task.X_train, task.X_val, None)
    assert dense.weights_of == "teacher" and "distill" not in dense.timings
    assert dense.val["accuracy"] == pytest.approx((teacher == task.y_val).mean())


@pytest.mark.slow
def test_int8_trains_when_its_twins_weights_were_not_kept(small_mlp_task, tmp_path):
    """A search-only worker keeps no students: its int8 trial trains, as every trial did before."""
    objective, study, inputs = _objective(small_mlp_task, tmp_path, search_only=True, model_size_mb=0.3)
    plan = inputs.space.uniform_plan("lowrank", 8)
    _seed(study, ("lr8", plan, "fp32"), ("lr8 + int8", plan, "int8"))
    study.optimize(objective, n_trials=2)
    int8 = TrialRecord.from_trial(study.trials[1])
    assert int8.status is Status.TRAINED and int8.weights_of is None and "distill" in int8.timings


def test_tie_break_is_capped_and_favours_fast_small_plans():
    assert tie_break(0.0, 1.0, 0.0, 1.0) == 0.0
    assert tie_break(5.0, 1.0, 5.0, 1.0) == TIE_BREAK
    assert tie_break(0.5, 1.0, 0.5, 1.0) < tie_break(0.9, 1.0, 0.5, 1.0)


def test_the_screen_judges_latency_by_its_p50_not_its_short_p95(small_mlp_task, tmp_path):
    """A 0.1 s screen's p95 on a busy host is other work's: a plan whose screen p50 is within the budget is
    trained though its screen p95 is over it (the finalists judge the percentile); one whose p50 is over
    is screened out. The screens are real (exported, benched); their latencies are set as a burst would
    leave them, relative to the budget."""
    import dataclasses

    objective, study, inputs = _objective(small_mlp_task, tmp_path, latency_ms=1.0)
    real = objective.screen.measure
    p50s = iter([0.5, 1.5])  # ms, against the 1 ms budget; p95 3 ms both times

    def busy(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), latency_p50_ms=next(p50s), latency_ms=3.0)

    objective.screen.measure = busy
    for rank in (8, 4):
        study.enqueue_trial(inputs.space.trial_params(inputs.space.uniform_plan("lowrank", rank)))
    study.optimize(objective, n_trials=2)
    within, over = (TrialRecord.from_trial(t) for t in study.trials)
    assert within.status is Status.TRAINED and within.feasible and within.screen.latency_ms == 3.0
    assert over.status is Status.SCREENED_OUT and over.constraints.latency > 0
