"""Which epoch of the final fine-tune should ship: the one best on validation, the last of the cosine
schedule, or the epoch whose window of epochs around it has the best mean validation score (decision 0115)?

Per model, uniform torch-pruning at each ratio (the students the frontier's alternatives are) is distilled
for ``epochs`` on compile's final schedule (cosine, compile's rate, one torch thread) with each ``seed``;
after every epoch the student is scored on validation and on test. Each run gives the test score of the
best-validation epoch (what the fine-tune shipped before 0115), of the last epoch, and of the epoch that
:func:`edgeopt.pipeline.finetune.keep_weights` keeps (the best window's); the paired differences
over all runs are summarized by their median, mean, wins and losses, and a sign test
(``scipy.stats.binomtest`` on the non-zero ones).

    flock /tmp/edgeopt-bench.lock python -m benchmarks final_epoch_choice [--set models=cnn1d]
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks.suite import Outcome


def one_run(task: Any, ratio: float, seed: int, epochs: int) -> dict[str, Any]:
    """One 80-epoch (``epochs``) distillation of the uniform-pruned student: per-epoch val and test, and
    the three choices' test scores."""
    from benchmarks.edgeopt_vs_baselines import distill_like_final, torch_pruning_uniform
    from edgeopt.compiler.metrics import compute_metrics
    from edgeopt.compiler.train import predict_labels
    from edgeopt.pipeline.finetune import Peak, Tuned, half_window, keep_weights

    student = torch_pruning_uniform(task.model, task.example_input, ratio)
    val, test, peak = [], [], Peak(half_window(epochs))

    def on_epoch(epoch: int, score: float) -> None:
        val.append(float(score))
        peak.update(student, float(score), epoch + 1)
        test.append(float(compute_metrics(task.y_test, predict_labels(student, task.X_test), task.metric).score))
        student.train()

    t0 = time.perf_counter()
    distill_like_final(student, task, epochs=epochs, seed=seed, callback=on_epoch)
    tuned = Tuned(student, history=list(val))
    peak.finish()
    keep_weights(tuned, peak, task)
    best = int(np.argmax(val))
    rule = tuned.epoch - 1  # the kept epoch, from 1 (no start weights here: never 0)
    return {
        "ratio": ratio,
        "seed": seed,
        "seconds": round(time.perf_counter() - t0, 1),
        "best_val_epoch": best + 1,
        "kept": tuned.kept,
        "kept_epoch": rule + 1,
        "kept_p": tuned.kept_p,
        "val_best": val[best],
        "val_last": val[-1],
        "test_at_best_val": test[best],
        "test_last": test[-1],
        "test_kept": test[rule],
        "val": val,
        "test": test,
    }


def summary(runs: list[dict[str, Any]], key: str, base: str = "test_at_best_val") -> dict[str, Any]:
    """Paired differences ``key`` − ``base`` in points: median, mean, wins, losses, ties, sign-test p."""
    from scipy.stats import binomtest

    d = np.array([100 * (r[key] - r[base]) for r in runs])
    wins, losses = int(np.sum(d > 1e-9)), int(np.sum(d < -1e-9))
    p = float(binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
    return {
        "median_pt": round(float(np.median(d)), 3),
        "mean_pt": round(float(np.mean(d)), 3),
        "wins": wins,
        "losses": losses,
        "ties": len(d) - wins - losses,
        "sign_test_p": round(p, 4),
    }


def per_model(args: SimpleNamespace, one: Any) -> list[dict[str, Any]]:
    """Per model of ``args.models``: its split sizes and ``one(task, ratio, seed)`` for every ratio and seed."""
    from edgeopt.models.examples import load_example

    models: list[dict[str, Any]] = []
    for name in str(args.models).split(","):
        task = load_example(name, seed=0)
        runs = [one(task, float(r), int(s)) for r in str(args.ratios).split(",") for s in str(args.seeds).split(",")]
        models.append({"model": name, "val_samples": len(task.y_val), "test_samples": len(task.y_test), "runs": runs})
    return models


def run(args: SimpleNamespace) -> Outcome:
    """Every (model, ratio, seed) run, then the paired summaries per model and over all."""
    models = per_model(args, lambda task, ratio, seed: one_run(task, ratio, seed, int(args.epochs)))
    every = [r for m in models for r in m["runs"]]
    lines = [
        "| model | runs | best-val epoch (median, range) | val: best − last (median pt) | test: last − best-val epoch "
        "(median, mean pt; wins/losses/ties; sign p) | test: kept (0115) − best-val epoch | kept epoch (median, range) "
        "|",
        "|---|---|---|---|---|---|---|",
    ]
    for label, runs in [(m["model"], m["runs"]) for m in models] + [("all", every)]:
        ep, kept_ep = [r["best_val_epoch"] for r in runs], [r["kept_epoch"] for r in runs]
        opt = np.median([100 * (r["val_best"] - r["val_last"]) for r in runs])
        last, kept = summary(runs, "test_last"), summary(runs, "test_kept")
        lines.append(
            f"| {label} | {len(runs)} | {int(np.median(ep))} ({min(ep)}–{max(ep)}) of {args.epochs} | {opt:+.2f} | "
            f"{last['median_pt']:+.2f}, {last['mean_pt']:+.2f}; {last['wins']}/{last['losses']}/{last['ties']}; "
            f"{last['sign_test_p']:.3f} | {kept['median_pt']:+.2f}, {kept['mean_pt']:+.2f}; "
            f"{kept['wins']}/{kept['losses']}/{kept['ties']}; {kept['sign_test_p']:.3f} | "
            f"{int(np.median(kept_ep))} ({min(kept_ep)}–{max(kept_ep)}) |"
        )
    results = {
        "models": models,
        "last_vs_best_val": summary(every, "test_last"),
        "kept_vs_best_val": summary(every, "test_kept"),
    }
    notes = [
        "Test scores in the task's metric, torch's, after each epoch of one distillation per run: the three "
        "choices are epochs of the same training, so their differences are the choice's alone.",
    ]
    return Outcome(results, "\n".join(lines) + "\n", notes)
