"""The final fine-tune keeps the epoch whose window of epochs scores best on validation (decision 0115), and
never ships below the selected trial (beyond the tolerance) without falling back to the trial's student and
saying so."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.compile
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from edgeopt.compiler.train import evaluate  # noqa: E402 - after the importorskips
from edgeopt.pipeline.config import CompileConfig  # noqa: E402
from edgeopt.pipeline.evaluate import onnx_metrics  # noqa: E402
from edgeopt.pipeline.finetune import (  # noqa: E402
    EARLIER,
    KEEP_P,
    LAST,
    START,
    Peak,
    Tuned,
    epochs_text,
    fine_tune,
    half_window,
    keep_weights,
    retrain_trial,
)
from edgeopt.pipeline.record import Status, TrialRecord  # noqa: E402
from edgeopt.pipeline.ship import ship  # noqa: E402
from edgeopt.runtime.targets import Target  # noqa: E402

QUICK = {"min_iters": 20, "min_time_s": 0.05, "max_iters": 500}
PLAN = {"2": {"format": "lowrank", "rank": 2}}  # the 256x256 layer at rank 2: one epoch does not recover it


def _val(model, task):
    return evaluate(model, (task.X_val, task.y_val), task.metric).score


def test_the_fine_tune_ends_with_the_epoch_whose_window_scores_best(small_mlp_task):
    tuned = fine_tune(small_mlp_task.model, PLAN, small_mlp_task, CompileConfig(final_epochs=5))
    assert len(tuned.history) == 5 and half_window(5) == 0 and tuned.kept in (LAST, EARLIER)
    latest_best = max(i for i, v in enumerate(tuned.history) if v == max(tuned.history))
    assert tuned.epoch == latest_best + 1 and _val(tuned.student, small_mlp_task) == tuned.history[latest_best]


def test_a_window_of_epochs_chooses_by_its_mean_not_one_lucky_reading():
    class Weights:  # the one thing Peak asks of a student
        def __init__(self):
            self.epoch = 0

        def state_dict(self):
            return {"epoch": self.epoch}

    student, peak = Weights(), Peak(1)
    # one high reading at epoch 2; the mean of three is best around epochs 7 and 8 (a tie: the later)
    for epoch, score in enumerate([0.90, 0.99, 0.90, 0.91, 0.93, 0.95, 0.95, 0.95, 0.95, 0.80], start=1):
        student.epoch = epoch
        peak.update(student, score, epoch)
    peak.finish()
    assert peak.epoch == 8 and peak.state == {"epoch": 8} and peak.score == pytest.approx(0.95)
    rising = Peak(1)  # still rising at the end: the last window, cut short, is the best
    for epoch, score in enumerate([0.90, 0.91, 0.92, 0.96], start=1):
        student.epoch = epoch
        rising.update(student, score, epoch)
    rising.finish()
    assert rising.epoch == 4 and rising.state == {"epoch": 4}
    assert half_window(80) == 4 and half_window(26) == 1 and half_window(5) == 0


def _kept(task, best_student, best_epoch, last_student, history, start=None, start_score=None):
    """``keep_weights`` on a fine-tune that ended with ``last_student`` after reading ``history``, its best
    window ending at ``best_epoch`` with ``best_student``'s weights; ``start``: the weights it continued from."""
    best = Peak()
    best.update(best_student, max(history), best_epoch)
    tuned = Tuned(last_student, history=history, start_score=start_score)
    keep_weights(tuned, best, task, start)
    return tuned


def test_the_best_window_ships_and_the_trial_weights_only_when_mcnemar_says_so(small_mlp_task):
    import copy

    task = small_mlp_task
    good, _ = _trained(task, CompileConfig(trial_epochs=3))
    broken = copy.deepcopy(good)
    with torch.no_grad():
        for p in broken.parameters():
            p.mul_(0.0)  # every prediction one class: far worse on val
    good_score, bad_score = _val(good, task), _val(broken, task)
    tuned = _kept(task, good, 2, copy.deepcopy(broken), [0.5, good_score, 0.4, bad_score])
    assert tuned.kept == EARLIER and tuned.epoch == 2 and _val(tuned.student, task) == good_score
    tuned = _kept(task, broken, 4, copy.deepcopy(broken), [0.5, good_score, 0.4, bad_score])
    assert tuned.kept == LAST and tuned.epoch == 4 and tuned.kept_p is None
    # continued from a trial's weights that training then broke: the trial's weights stay, said with p
    tuned = _kept(task, broken, 1, copy.deepcopy(broken), [bad_score], good.state_dict(), good_score)
    assert tuned.kept == START and tuned.epoch == 0 and tuned.kept_p < KEEP_P
    assert _val(tuned.student, task) == good_score
    assert "the trial's weights it continued from" in epochs_text({"kept": START, "kept_p": tuned.kept_p})
    # ... and the fine-tune's weights stay when the trial's score no higher
    tuned = _kept(task, good, 1, copy.deepcopy(good), [good_score], broken.state_dict(), bad_score)
    assert tuned.kept == LAST and _val(tuned.student, task) == good_score


def test_the_trial_student_is_trained_again_to_the_same_weights(small_mlp_task):
    config = CompileConfig(trial_epochs=3)
    a, b = (retrain_trial(small_mlp_task.model, PLAN, small_mlp_task, config).student for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_an_artifact_below_the_trial_falls_back_to_the_trial_and_says_so(small_mlp_task, tmp_path, caplog):
    config = CompileConfig(out=tmp_path, final_bench=QUICK, final_epochs=1, trial_epochs=10)
    trial_score = _val(retrain_trial(small_mlp_task.model, PLAN, small_mlp_task, config).student, small_mlp_task)
    chosen = TrialRecord(number=5, status=Status.TRAINED, plan=PLAN, val={"score": trial_score})
    shipped = ship(small_mlp_task.model, chosen, small_mlp_task, Target.load("host"), config)
    ft = shipped.finetune
    assert ft["fell_back"] and ft["selected_trial"] == 5 and ft["trial_val_score"] == trial_score
    assert ft["artifact_val_score"] == pytest.approx(trial_score, abs=0.005)  # onnxruntime's score of the file
    assert ft["artifact_val_score"] == shipped.measured.metrics["val"]["score"]
    assert (
        ft["tolerance_pt"] == pytest.approx(0.5)
        and ft["epochs"] <= 10
        and ft["epoch"] >= 1
        and "trained again" in ft["note"]
    )
    assert any("final fine-tune: trial 5" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert "retrain" in shipped.timings


def test_an_artifact_within_the_tolerance_ships_the_fine_tune(small_mlp_task, tmp_path):
    config = CompileConfig(out=tmp_path, final_bench=QUICK, final_epochs=3)
    chosen = TrialRecord(number=2, status=Status.TRAINED, plan=PLAN, val={"score": 0.1})
    shipped = ship(small_mlp_task.model, chosen, small_mlp_task, Target.load("host"), config)
    ft = shipped.finetune
    assert not ft["fell_back"] and ft["epochs"] == 3 and 1 <= ft["epoch"] <= 3 and "not below trial 2's" in ft["note"]
    score = onnx_metrics(shipped.path, small_mlp_task.X_val, small_mlp_task.y_val, small_mlp_task.metric)["score"]
    assert ft["artifact_val_score"] == score and "retrain" not in shipped.timings


def test_the_input_model_shipped_has_no_trial_to_hold_to(small_mlp_task, tmp_path):
    shipped = ship(
        small_mlp_task.model, None, small_mlp_task, Target.load("host"), CompileConfig(out=tmp_path, final_bench=QUICK)
    )
    assert shipped.finetune is None


def _trained(task, config):
    """A trial's student as the objective leaves it (trained for ``trial_epochs``) and its val score."""
    student = retrain_trial(task.model, PLAN, task, config).student
    return student, _val(student, task)


def test_a_kept_student_is_found_for_its_plan_only_and_cleared(small_mlp_task, tmp_path):
    from edgeopt.pipeline import students

    student, _ = _trained(small_mlp_task, CompileConfig(trial_epochs=1))
    students.keep(tmp_path / "workers" / "w1", 7, PLAN, student)  # a local worker's trial
    kept = students.load(tmp_path, 7, PLAN)
    assert kept is not None and all(torch.equal(kept[k], v) for k, v in student.state_dict().items())
    assert students.load(tmp_path, 7, {"2": {"format": "lowrank", "rank": 3}}) is None  # another plan, same number
    assert students.load(tmp_path, 8, PLAN) is None
    assert students.keeps(tmp_path / "workers" / "w1", search_only=True)
    assert not students.keeps(tmp_path / "elsewhere", search_only=True) and students.keeps(tmp_path, False)
    students.clear(tmp_path)
    assert students.load(tmp_path, 7, PLAN) is None and not (tmp_path / "workers" / "w1" / students.DIR).exists()


def test_a_fall_back_ships_the_kept_student_as_the_trial_trained_it(small_mlp_task, tmp_path):
    from edgeopt.pipeline import students

    config = CompileConfig(out=tmp_path, final_bench=QUICK, final_epochs=1, trial_epochs=10)
    student, trial_score = _trained(small_mlp_task, config)
    students.keep(tmp_path, 5, PLAN, student)
    chosen = TrialRecord(number=5, status=Status.TRAINED, plan=PLAN, val={"score": trial_score})
    shipped = ship(small_mlp_task.model, chosen, small_mlp_task, Target.load("host"), config)
    ft = shipped.finetune
    assert ft["fell_back"] and "as the trial trained it" in ft["note"] and "retrain" not in shipped.timings
    assert ft["artifact_val_score"] == pytest.approx(trial_score, abs=0.005) and ft["epochs"] == 10


def test_a_fine_tune_cut_by_the_time_budget_goes_on_from_the_trial(small_mlp_task, tmp_path, caplog):
    from edgeopt.pipeline import students
    from edgeopt.pipeline.finetune import cut_note

    config = CompileConfig(out=tmp_path, final_bench=QUICK, final_epochs=1, trial_epochs=10)
    student, trial_score = _trained(small_mlp_task, config)
    students.keep(tmp_path, 5, PLAN, student)
    from_scratch = _val(fine_tune(small_mlp_task.model, PLAN, small_mlp_task, config).student, small_mlp_task)
    chosen = TrialRecord(number=5, status=Status.TRAINED, plan=PLAN, val={"score": trial_score})
    shipped = ship(small_mlp_task.model, chosen, small_mlp_task, Target.load("host"), config, planned_epochs=80)
    ft = shipped.finetune
    assert ft["continued"] and ft["cut_from"] == 80 and ft["cut_to"] == 1
    # its last epoch ships, or the trial's own weights do (the epoch fell more than the tolerance below them)
    assert not ft["fell_back"] or ("as the trial trained it" in ft["note"] and "retrain" not in shipped.timings)
    # one epoch from the teacher is far below the trial; one more from the trial's weights is not
    assert from_scratch < trial_score - 0.05
    # and a file below the trial beyond the tolerance ships only where the val samples cannot tell it worse
    below = ft["artifact_val_score"] < trial_score - ft["tolerance_pt"] / 100
    assert not below or (ft["fallback_p"] >= KEEP_P and "the fine-tuned one ships" in ft["note"])
    assert "continued from the selected trial's weights" in cut_note(ft)


def test_the_students_trials_keep_are_gone_when_a_compile_fails_after_the_search(
    small_mlp_task, make_target, tmp_path, monkeypatch
):
    import edgeopt
    from edgeopt.pipeline import loop, students

    kept = []

    def failing_ship(teacher, chosen, *args, **kwargs):
        kept.extend(sorted(p.name for p in (tmp_path / "run" / students.DIR).glob("*.pt")))
        raise RuntimeError("ship failed")

    monkeypatch.setattr(loop, "ship", failing_ship)
    with pytest.raises(RuntimeError, match="ship failed"):
        target = make_target(latency_ms=100.0)
        edgeopt.compile(small_mlp_task, target, trials=2, trial_epochs=1, out=tmp_path / "run", progress=False)
    assert kept and all(name.startswith("trial-") for name in kept)  # the trained trials kept theirs
    assert not (tmp_path / "run" / students.DIR).exists()


def _logits_file(path, swap: bool):
    """An ONNX classifier whose logits are its 3 input features (``swap``: classes 0 and 1 swapped)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    perm = np.eye(3, dtype=np.float32)[[1, 0, 2]] if swap else np.eye(3, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "logits",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(perm, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(("only_trial", "only_tuned", "ships"), [(4, 1, False), (12, 0, True)])
def test_the_trials_student_ships_only_when_mcnemar_says_it_is_better(tmp_path, only_trial, only_tuned, ships):
    """Samples the trial's file gets right and the fine-tuned one wrong (class 0, which it reads as 1), the
    other way round (class 1 read as 0), and both right (class 2): 4 against 1 is 3 samples of val score,
    within the noise (p 0.375); 12 against 0 is not (p < 0.001)."""
    from types import SimpleNamespace

    import numpy as np

    from edgeopt.pipeline.finetune import fallback_note, prefer_trial

    rows = [0] * only_trial + [1] * only_tuned + [2] * 40
    X = np.eye(3, dtype=np.float32)[rows]
    y = np.array([0] * (only_trial + only_tuned) + [2] * 40)
    task = SimpleNamespace(X_val=X, y_val=y)
    trial, tuned = _logits_file(tmp_path / "trial.onnx", False), _logits_file(tmp_path / "tuned.onnx", True)
    score = {f: onnx_metrics(f, X, y, "accuracy")["score"] for f in (trial, tuned)}
    assert score[trial] > score[tuned]
    p = prefer_trial(task, trial, tuned, score[trial], score[tuned])
    assert (p < KEEP_P) is ships
    note = fallback_note(5, score[trial], score[tuned], score[trial], p, CompileConfig(), "accuracy", kept=True)
    assert ("shipped trial 5's student" in note) is ships and ("the fine-tuned one ships" in note) is not ships
    assert prefer_trial(task, tuned, trial, score[tuned], score[trial]) is None  # lower: never preferred


def test_an_artifact_below_the_trials_figure_but_not_its_samples_ships_the_fine_tune(small_mlp_task, tmp_path, caplog):
    """The trial's score reads 2 pt above the fine-tuned file while its student predicts the same: the
    fine-tuned file ships, and the console and the report say it is below the trial and why (decision 0116)."""
    from edgeopt.pipeline import students

    config = CompileConfig(out=tmp_path, final_bench=QUICK, final_epochs=2)
    tuned = fine_tune(small_mlp_task.model, PLAN, small_mlp_task, config).student  # what ship() will train
    students.keep(tmp_path, 5, PLAN, tuned)
    figure = _val(tuned, small_mlp_task) + 0.02
    chosen = TrialRecord(number=5, status=Status.TRAINED, plan=PLAN, val={"score": figure})
    shipped = ship(small_mlp_task.model, chosen, small_mlp_task, Target.load("host"), config)
    ft = shipped.finetune
    assert not ft["fell_back"] and ft["epochs"] == 2 and "the fine-tuned one ships" in ft["note"]
    assert ft["artifact_val_score"] < figure - ft["tolerance_pt"] / 100
    assert any("final fine-tune: trial 5" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
