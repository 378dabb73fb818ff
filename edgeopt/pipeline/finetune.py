"""The final fine-tune, held to the trial that was selected.

The chosen plan's student is distilled for ``final_epochs`` on a cosine schedule, scored on validation
after every epoch (torch), and ends with the weights of the epoch whose *window* scores best: the mean
validation score of the epochs around it (:func:`half_window` on each side, a twentieth of the schedule:
nine epochs of 80), the latest on a tie. The best single reading of 80 is partly luck (it read 0.3 pt
above the last epoch on validation, not on test); the last epoch loses what a student that overfits
late had gained (vit: 0.66 pt of test); the window's mean follows the curve's plateau (decision 0115).
A fine-tune that continued from the selected trial's weights keeps those instead when
McNemar on the validation samples says they are better (p < :data:`KEEP_P`). The shipped file is then
scored on validation with onnxruntime (the figure the report prints); when it is more than
:func:`tolerance` below the selected trial's validation score, the trial's student is taken as the trial
left it (or trained again exactly as the trial was), and it ships instead when it is better on the
validation samples by the same paired test (:func:`prefer_trial`), said in :class:`FineTune`'s note either
way. The trial's figure is the best of its epochs and of the search's trials, so it reads high: on 359
val samples a ViT's trial read 0.3–0.5 pt above its 80-epoch fine-tune in 2 of 4 runs and scored 1.9–2.7
pt lower on test (``python -m benchmarks fallback_to_trial``; decision 0116). The trial's score is
torch's for fp32 trials and onnxruntime's for int8 ones; onnxruntime and torch agree on fp32 predictions
to the export's verified tolerance, so the two scores differ only where a prediction sits on a decision
boundary.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeopt.pipeline.config import CompileConfig

log = logging.getLogger("edgeopt.compile")


KEEP_P = 0.05  # a continued fine-tune keeps the trial's weights when McNemar on val gives p below this
HALF_WINDOW_SHARE = 0.05  # epochs on each side of one whose mean validation score chooses it: 4 of 80
LAST, EARLIER, START = "last", "earlier", "start"  # which weights a fine-tune kept (:attr:`Tuned.kept`)


@dataclass
class Tuned:
    """A fine-tuned student, the time it took and its validation score after each epoch.

    ``kept``: which weights the fine-tune ended with (:data:`LAST`, :data:`EARLIER` or, continued,
    :data:`START`) and ``kept_epoch`` their epoch (from 1; 0 for the trial's weights); None when it was not
    fine-tuned but trained as a trial is (its best validation epoch, :attr:`epoch`). ``kept_p``: McNemar's p
    of the trial's weights against the fine-tune's on val (None when no test was needed)."""

    student: Any
    timings: dict[str, float] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)
    start_score: float | None = None  # continued: the trial's weights' val score before the first epoch
    kept: str | None = None
    kept_epoch: int | None = None
    kept_p: float | None = None

    @property
    def continued(self) -> bool:
        """Whether it was trained on from the selected trial's weights, not from the teacher."""
        return self.start_score is not None

    @property
    def epoch(self) -> int:
        """The epoch (from 1) whose weights the student ends with; 0 when it was not trained, or ends with
        the trial's weights it continued from."""
        if self.kept_epoch is not None:
            return self.kept_epoch
        return 1 + self.history.index(max(self.history)) if self.history else 0


@dataclass(frozen=True)
class FineTune:
    """What the final fine-tune shipped against the trial it started from (``compile.json``'s ``finetune``).

    ``epochs`` and ``epoch`` (from 1) are those of the training whose weights shipped: the fine-tune's, or
    after a fall-back the trial's trained again; ``kept`` and ``kept_p`` as :class:`Tuned`'s; ``tolerance_pt``
    is in points (0.5 = 0.005)."""

    selected_trial: int
    trial_val_score: float | None
    artifact_val_score: float
    tolerance_pt: float
    epoch: int
    epochs: int
    fell_back: bool
    note: str
    cut_from: int | None = None  # the fine-tune's epochs before ``--time-budget`` cut them (None: not cut)
    cut_to: int | None = None  # ... and after
    continued: bool = False  # the fine-tune started from the trial's kept weights, not from the teacher
    kept: str | None = None
    kept_p: float | None = None
    fallback_p: float | None = None  # below the tolerance: McNemar's p of the trial's student against the file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tolerance(config: CompileConfig) -> float:
    """How far below the selected trial's validation score the artifact may land: the selection's own
    ``f1_tolerance`` (0.5 pt), the margin within which it already calls two scores equal."""
    return float(config.f1_tolerance)


def cut_note(ft: dict[str, Any]) -> str | None:
    """The sentence, for the console and the report, when the time budget cut the fine-tune short (``ft``:
    a :class:`FineTune`'s ``to_dict``), else None."""
    if not ft.get("cut_from") or not ft.get("cut_to"):
        return None
    after = ", continued from the selected trial's weights" if ft.get("continued") else ""
    return (
        f"the time budget cut the final fine-tune to {ft['cut_to']} of its {ft['cut_from']} epochs{after}: "
        f"a longer --time-budget fine-tunes for all {ft['cut_from']}"
    )


def distill_student(student: Any, teacher: Any, task: Any, config: CompileConfig, epochs: int, **options: Any) -> None:
    """Distill ``student`` from ``teacher`` on the task's splits with the compile's rate, seed, metric and
    device: the one call a trial, the final fine-tune and a trial's retraining share (``options``:
    ``callback``, ``schedule``, ``patience``, ``restore_best``)."""
    from edgeopt.compiler.distill import distill

    distill(
        student,
        teacher,
        (task.X_train, task.y_train),
        (task.X_val, task.y_val),
        epochs=epochs,
        lr=config.lr,
        seed=config.seed,
        metric=task.metric,
        train_device=config.train_device,
        **options,
    )


def half_window(epochs: int) -> int:
    """How many epochs on each side of an epoch are averaged with its validation score to choose it (0: its
    own score alone, in a short fine-tune)."""
    return max(0, round(HALF_WINDOW_SHARE * epochs))


def fine_tune(
    teacher: Any, plan: dict[str, Any], task: Any, config: CompileConfig, start: dict[str, Any] | None = None
) -> Tuned:
    """The plan's student, distilled for ``final_epochs`` with a cosine schedule, ending with the weights of
    the epoch whose window scores best (:class:`Peak`; the dense teacher, and a plan that changes no layer,
    as they are). ``start``: the selected trial's trained weights (:mod:`~edgeopt.pipeline.students`) to
    continue from instead of the teacher's decomposition, kept when McNemar says they are better
    (:func:`keep_weights`)."""
    from edgeopt.compiler.decompose import decompose
    from edgeopt.compiler.formats import DEFAULT_FORMAT

    t0 = time.perf_counter()
    tuned = Tuned(decompose(teacher, plan, example_input=task.example_input) if plan else copy.deepcopy(teacher))
    tuned.timings["decompose"] = time.perf_counter() - t0
    if plan and any(v.get("format") != DEFAULT_FORMAT for v in plan.values()):
        if start is not None:  # load_state_dict copies: ``start`` itself stays the trial's weights
            tuned.student.load_state_dict(start)
            tuned.start_score = _val_score(tuned.student, task)
        how = "from the selected trial's weights" if start is not None else "from the teacher"
        log.info("fine-tuning the chosen plan for up to %d epochs, %s", config.final_epochs, how)
        t0 = time.perf_counter()
        best = Peak(half_window(config.final_epochs))

        def on_epoch(epoch: int, score: float) -> None:
            tuned.history.append(float(score))
            best.update(tuned.student, float(score), epoch + 1)

        # Every epoch runs (the cosine schedule's whole length); the epoch whose window scores best is kept.
        distill_student(
            tuned.student,
            teacher,
            task,
            config,
            config.final_epochs,
            schedule="cosine",
            patience=config.final_epochs,
            restore_best=False,
            callback=on_epoch,
        )
        tuned.timings["distill"] = time.perf_counter() - t0
        best.finish()
        keep_weights(tuned, best, task, start)
    tuned.student.eval()
    return tuned


class Peak:
    """The epoch whose window scores best: the mean validation score of the epochs from ``half`` before it
    to ``half`` after it (fewer at the ends of the schedule), the latest on a tie; its epoch (from 1), that
    mean, and a copy of its weights. An epoch's window is complete ``half`` epochs later, so the last
    ``half + 1`` epochs' weights are held until then; :meth:`finish` takes the last epochs' windows."""

    def __init__(self, half: int = 0) -> None:
        self.half, self.scores = max(0, int(half)), []
        self.recent: deque[tuple[int, dict[str, Any]]] = deque(maxlen=self.half + 1)
        self.score, self.epoch, self.state = float("-inf"), -1, None

    def update(self, student: Any, score: float, epoch: int) -> None:
        self.scores.append(float(score))
        self.recent.append((epoch, copy.deepcopy(student.state_dict())))
        if len(self.scores) > self.half:
            self._consider(len(self.scores) - 1 - self.half)

    def finish(self) -> None:
        """The windows of the last ``half`` epochs, cut short by the schedule's end."""
        for i in range(max(0, len(self.scores) - self.half), len(self.scores)):
            self._consider(i)

    def _consider(self, i: int) -> None:
        around = self.scores[max(0, i - self.half) : i + self.half + 1]
        mean = sum(around) / len(around)
        if mean >= self.score:
            epoch, state = self.recent[i - len(self.scores) + len(self.recent)]
            self.score, self.epoch, self.state = mean, epoch, state


def keep_weights(tuned: Tuned, best: Peak, task: Any, start: dict[str, Any] | None = None) -> None:
    """End ``tuned`` with ``best``'s weights (its own when ``best`` saw no epoch), or with ``start`` (the
    trial's weights it continued from) when they score higher on val and McNemar on the validation samples
    (correct against wrong, paired) gives p < :data:`KEEP_P`; sets :attr:`Tuned.kept`, ``kept_epoch`` and
    ``kept_p``."""
    from edgeopt.compiler.metrics import mcnemar
    from edgeopt.compiler.train import predict_labels

    last = len(tuned.history)
    tuned.kept, tuned.kept_epoch = LAST, last
    if best.state is not None and best.epoch != last:
        tuned.student.load_state_dict(best.state)
        tuned.kept, tuned.kept_epoch = EARLIER, best.epoch
    kept_score = tuned.history[tuned.kept_epoch - 1] if tuned.kept_epoch else None  # read after that epoch
    if start is None or tuned.start_score is None or kept_score is None or tuned.start_score <= kept_score:
        return
    y = _val_labels(task)
    kept_right = predict_labels(tuned.student, task.X_val) == y
    weights = copy.deepcopy(tuned.student.state_dict())
    tuned.student.load_state_dict(start)
    _, _, p = mcnemar(predict_labels(tuned.student, task.X_val) == y, kept_right)
    tuned.kept_p = p
    if p < KEEP_P:
        tuned.kept, tuned.kept_epoch = START, 0
    else:
        tuned.student.load_state_dict(weights)


def _val_labels(task: Any) -> Any:
    """The task's validation labels as a numpy array (they may be a tensor)."""
    import numpy as np

    return np.asarray(task.y_val.numpy() if hasattr(task.y_val, "numpy") else task.y_val)


def _val_score(student: Any, task: Any) -> float:
    from edgeopt.compiler.train import evaluate

    return float(evaluate(student, (task.X_val, task.y_val), task.metric).score)


def retrain_trial(
    teacher: Any, plan: dict[str, Any], task: Any, config: CompileConfig, kept: dict[str, Any] | None = None
) -> Tuned:
    """The selected trial's student again: its ``kept`` weights (:mod:`~edgeopt.pipeline.students`) when
    there are some, else trained as the objective trains a trial (``trial_epochs``, the compile's seed, early
    stopping on validation, best weights), which need not give its weights back (a MobileNetV3 here: val
    0.8783 against the trial's 0.8862)."""
    from edgeopt.compiler.decompose import decompose

    t0 = time.perf_counter()
    again = Tuned(decompose(teacher, plan, example_input=task.example_input) if plan else copy.deepcopy(teacher))
    if kept is not None:
        again.student.load_state_dict(kept)
        again.student.eval()
        return again
    distill_student(
        again.student,
        teacher,
        task,
        config,
        config.trial_epochs,
        callback=lambda _epoch, score: again.history.append(float(score)),
    )
    again.timings["retrain"] = time.perf_counter() - t0
    again.student.eval()
    return again


def verdict_note(trial: int, trial_score: float | None, tuned: float, tol: float, metric: str) -> str:
    """The note when the fine-tuned file stands: within the tolerance of the trial, or the trial unscored."""
    if trial_score is None:
        return f"trial {trial} has no validation score to hold the fine-tune to"
    head = f"the fine-tuned artifact's val {metric} {tuned:.4f}"
    if tuned >= trial_score:
        return f"{head} is not below trial {trial}'s {trial_score:.4f} ({(tuned - trial_score) * 100:+.2f} pt)"
    below = f"{head} is {(trial_score - tuned) * 100:.2f} pt below trial {trial}'s {trial_score:.4f}"
    return f"{below}, within the {tol * 100:.2f} pt tolerance" if tuned >= trial_score - tol else below


def prefer_trial(task: Any, trial_file: Any, tuned_file: Any, trial_score: float, tuned_score: float) -> float | None:
    """McNemar's p of the trial's student (``trial_file``) against the fine-tuned file on the validation
    samples when the trial's scores higher (None: it does not, and cannot be preferred); it ships instead
    of the fine-tuned file when p < :data:`KEEP_P` (decision 0116)."""
    from edgeopt.compiler.metrics import mcnemar
    from edgeopt.pipeline.evaluate import onnx_predict

    if trial_score <= tuned_score:
        return None
    y = _val_labels(task)
    return mcnemar(onnx_predict(trial_file, task.X_val) == y, onnx_predict(tuned_file, task.X_val) == y)[2]


def fallback_note(
    trial: int,
    trial_score: float,
    tuned: float,
    again: float,
    p: float | None,
    config: CompileConfig,
    metric: str,
    kept: bool = False,
) -> str:
    """The note after the trial's student was taken again (``kept``: as the trial left it; else trained
    again): which of the two files ships, and why (``p``: :func:`prefer_trial`'s)."""
    below = (
        f"the fine-tuned artifact's val {metric} {tuned:.4f} was {(trial_score - tuned) * 100:.2f} pt below "
        f"trial {trial}'s {trial_score:.4f}"
    )
    retrained = (
        f"trial {trial}'s student as the trial trained it"
        if kept
        else f"trial {trial}'s student trained again ({config.trial_epochs} epochs, seed {config.seed})"
    )
    if p is None:
        return f"{below}; {retrained} scored {again:.4f}, not higher: the fine-tuned one ships"
    if p < KEEP_P:
        return f"{below}; shipped {retrained}: val {metric} {again:.4f}, better on the val samples (McNemar p {p:.3f})"
    return (
        f"{below}; {retrained} scored {again:.4f}, not better on the val samples (McNemar p {p:.3f}): the "
        "fine-tuned one ships (a trial's score is the best of its epochs and of the search's trials: decision 0116)"
    )


def below_trial(ft: dict[str, Any]) -> bool:
    """Whether the shipped file scored beyond the tolerance below the selected trial on val (``ft``: a
    :class:`FineTune`'s ``to_dict``): the console warns and the report says why."""
    trial = ft.get("trial_val_score")
    return trial is not None and ft["artifact_val_score"] < trial - float(ft.get("tolerance_pt") or 0.0) / 100


def epochs_text(ft: dict[str, Any]) -> str:
    """Which weights shipped, for the console and the report (``ft``: a :class:`FineTune`'s ``to_dict``)."""
    epoch = ft.get("epoch", ft.get("best_epoch"))  # best_epoch: a compile.json written before decision 0115
    epochs, kept, p = ft.get("epochs"), ft.get("kept"), ft.get("kept_p")
    if ft.get("fell_back"):
        return f"the trial's student, best epoch {epoch} of {epochs}" if epoch else "the trial's weights as it left"
    if kept == START:
        return f"the trial's weights it continued from, better on val than the fine-tune's (McNemar p {p:.3f})"
    if kept == EARLIER:
        return f"epoch {epoch} of {epochs}, best on val as a mean of the {2 * half_window(epochs) + 1} epochs around it"
    if kept == LAST:
        return f"the last epoch of {epochs}"
    return f"best epoch {epoch} of {epochs}" if epoch else "not trained"


def report(ft: FineTune, metric: str) -> None:
    """The one console line: the trial's and the artifact's validation scores side by side."""
    trial = "unscored" if ft.trial_val_score is None else f"{ft.trial_val_score:.4f}"
    line = (
        f"final fine-tune: trial {ft.selected_trial} val {metric} {trial}, artifact {ft.artifact_val_score:.4f} "
        f"({epochs_text(ft.to_dict())}{'; fell back to the trial' if ft.fell_back else ''})"
    )
    why = [ft.note] if ft.fell_back or below_trial(ft.to_dict()) else []
    why += [c for c in (cut_note(ft.to_dict()),) if c]
    if why:  # not the fine-tune, below the trial, or cut short: said, with why
        log.warning("%s: %s", line, "; ".join(why))
    else:
        log.info("%s", line)


__all__ = [
    "KEEP_P",
    "below_trial",
    "FineTune",
    "Peak",
    "Tuned",
    "cut_note",
    "epochs_text",
    "fallback_note",
    "fine_tune",
    "keep_weights",
    "half_window",
    "prefer_trial",
    "report",
    "retrain_trial",
    "tolerance",
    "verdict_note",
]
