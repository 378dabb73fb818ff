"""When the final fine-tune reads below the selected trial on validation, should the trial's student ship?

The compile holds the fine-tuned artifact to the trial it selected (decision 0071): when the artifact's
validation score is more than the tolerance (0.5 pt) under the trial's, the trial's student ships instead.
The two figures are not alike: the trial's is the best of its epochs (early stopping restores the best
one) and, in a compile, the best of many trials; the fine-tune's is one epoch chosen by a window of
epochs (decision 0115). This benchmark measures what the rule costs or gains on test, against a paired
rule: fall back only when McNemar on the validation samples says the trial's student is better
(p < :data:`~edgeopt.pipeline.finetune.KEEP_P`, as a continued fine-tune keeps the trial's weights).

Per model, uniform torch-pruning at each ratio (the students the frontier's alternatives are), with each
seed, is distilled twice from the same start: as a trial (compile's defaults: ``trial_epochs``, constant
rate, early stopping, the best epoch restored) and as the final fine-tune (``epochs`` on the cosine
schedule, the epoch :func:`~edgeopt.pipeline.finetune.keep_weights` keeps). Both are scored on
validation and test with torch. Each rule's shipped student is then the one it picks; the table gives how
often each falls back and the test score it ships against the fine-tune's. What this leaves out: a
compile's trial is also the best of its search (its validation score higher still than one run's).

    flock /tmp/edgeopt-bench.lock python -m benchmarks fallback_to_trial [--set models=cnn1d]
"""

from __future__ import annotations

import copy
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks.suite import Outcome

TOLERANCE = 0.005  # compile()'s f1_tolerance: the fall-back's tolerance (pipeline.finetune.tolerance)


def _scored(student: Any, task: Any) -> dict[str, Any]:
    """Val and test scores (the task's metric, torch) and the per-sample correctness on val."""
    from edgeopt.compiler.metrics import compute_metrics
    from edgeopt.compiler.train import predict_labels

    out: dict[str, Any] = {}
    for split, X, y in (("val", task.X_val, task.y_val), ("test", task.X_test, task.y_test)):
        y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
        pred = predict_labels(student, X)
        out[split] = float(compute_metrics(y, pred, task.metric).score)
        out[f"{split}_right"] = pred == y
    return out


def _as_trial(student: Any, task: Any, *, epochs: int, seed: int) -> None:
    """``student`` distilled as a compile's trial: ``epochs``, constant rate, early stopping, best epoch."""
    from benchmarks.edgeopt_vs_baselines import distill_like_compile

    distill_like_compile(student, task, epochs=epochs, seed=seed)


def _as_final(student: Any, task: Any, *, epochs: int, seed: int) -> int:
    """``student`` fine-tuned as the final fine-tune (cosine, the window's epoch kept); the kept epoch."""
    from benchmarks.edgeopt_vs_baselines import distill_like_shipped

    tuned = distill_like_shipped(student, task, epochs=epochs, seed=seed)
    student.eval()
    return tuned.epoch


def one_run(task: Any, ratio: float, seed: int, trial_epochs: int, epochs: int) -> dict[str, Any]:
    """The trial and the fine-tune of one uniform-pruned student, and what each rule ships."""
    from benchmarks.edgeopt_vs_baselines import torch_pruning_uniform
    from edgeopt.compiler.metrics import mcnemar
    from edgeopt.pipeline.finetune import KEEP_P

    t0 = time.perf_counter()
    start = torch_pruning_uniform(task.model, task.example_input, ratio)
    trial, final = copy.deepcopy(start), copy.deepcopy(start)
    _as_trial(trial, task, epochs=trial_epochs, seed=seed)
    kept_epoch = _as_final(final, task, epochs=epochs, seed=seed)
    t, f = _scored(trial, task), _scored(final, task)
    _, _, p = mcnemar(t["val_right"], f["val_right"])
    by_tolerance = f["val"] < t["val"] - TOLERANCE  # the trial's student is then the better on val: it ships
    by_mcnemar = t["val"] > f["val"] and p < KEEP_P
    return {
        "ratio": ratio,
        "seed": seed,
        "seconds": round(time.perf_counter() - t0, 1),
        "kept_epoch": kept_epoch,
        "trial_val": t["val"],
        "trial_test": t["test"],
        "final_val": f["val"],
        "final_test": f["test"],
        "val_p": round(p, 4),
        "falls_back_tolerance": bool(by_tolerance),
        "falls_back_mcnemar": bool(by_mcnemar),
        "test_tolerance": t["test"] if by_tolerance else f["test"],
        "test_mcnemar": t["test"] if by_mcnemar else f["test"],
    }


def _row(label: str, runs: list[dict[str, Any]]) -> str:
    """One table row: runs, val gap, fall-backs and shipped test (mean pt against the fine-tune) per rule."""

    def mean_pt(key: str) -> float:
        return float(np.mean([100 * (r[key] - r["final_test"]) for r in runs]))

    gap = np.median([100 * (r["trial_val"] - r["final_val"]) for r in runs])
    tol = [r for r in runs if r["falls_back_tolerance"]]
    fell = (
        f"{np.mean([100 * (r['trial_test'] - r['final_test']) for r in tol]):+.2f}" if tol else "–"
    )  # in the runs the tolerance rule fell back on, what falling back did to test
    paired = sum(r["falls_back_mcnemar"] for r in runs)
    return (
        f"| {label} | {len(runs)} | {gap:+.2f} | {len(tol)} | {fell} | {mean_pt('test_tolerance'):+.2f} | "
        f"{paired} | {mean_pt('test_mcnemar'):+.2f} | {mean_pt('trial_test'):+.2f} |"
    )


def run(args: SimpleNamespace) -> Outcome:
    """Every (model, ratio, seed) run, then per model and over all: fall-backs and test under each rule."""
    from benchmarks.final_epoch_choice import per_model

    models = per_model(
        args, lambda task, ratio, seed: one_run(task, ratio, seed, int(args.trial_epochs), int(args.epochs))
    )
    every = [r for m in models for r in m["runs"]]
    lines = [
        "| model | runs | val: trial − fine-tune (median pt) | falls back (0.5 pt) | there, test: trial − fine-tune "
        "(mean pt) | shipped test − fine-tune's (mean pt) | falls back (McNemar) | shipped test − fine-tune's | "
        "always the trial: test − fine-tune's |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(m["model"], m["runs"]) for m in models] + [_row("all", every)]
    notes = [
        "Test scores in the task's metric, torch's. The trial and the fine-tune start from the same pruned "
        "student with the same seed; 'falls back' counts the runs whose rule would ship the trial's student.",
    ]
    return Outcome({"models": models}, "\n".join(lines) + "\n", notes)
