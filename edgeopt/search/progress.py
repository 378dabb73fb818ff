"""Running the search: ``study.optimize`` with the objective, and its progress on stderr (trial i/N,
best feasible score, feasible count, ETA; a bar on a terminal, log lines otherwise)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from edgeopt.search.record import TrialRecord

log = logging.getLogger("edgeopt.compile")


class Progress:
    """Trial i/N, best feasible score, feasible count and ETA on stderr (an Optuna callback)."""

    def __init__(self, total: int, metric: str, enabled: bool) -> None:
        self.total, self.metric, self.done, self.feasible = total, metric, 0, 0
        self.best: float | None = None
        self.bar = None
        self.t0 = time.perf_counter()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="search", unit="trial", file=sys.stderr, leave=False)

    def __call__(self, study: Any, trial: Any) -> None:
        self.done += 1
        rec = TrialRecord.from_trial(trial)
        if rec.feasible:
            self.feasible += 1
            if rec.score is not None and (self.best is None or rec.score > self.best):
                self.best = rec.score
        best = "-" if self.best is None else f"{self.best:.4f}"
        if self.bar is not None:
            self.bar.set_postfix_str(f"best {self.metric} {best}, feasible {self.feasible}")
            self.bar.update(1)
        else:
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / self.done * (self.total - self.done)
            log.info("trial %d/%d %-12s best feasible %s %s, feasible %d, ETA %.0fs",
                     self.done, self.total, rec.status.value, self.metric, best, self.feasible, eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_search(study: Any, objective: Any, *, trials: int, timeout: float | None, metric_name: str,
               progress: bool, callbacks: tuple[Any, ...] = ()) -> float:
    """Run ``trials`` trials (or until ``timeout``); a failing trial fails alone. Returns the wall time.
    ``callbacks`` run after each trial, after the progress line (e.g. a worker's stop at the study's total)."""
    t0 = time.perf_counter()
    if trials <= 0:
        return 0.0
    prog = Progress(trials, metric_name, progress)
    try:
        study.optimize(objective, n_trials=trials, timeout=timeout, catch=(Exception,), callbacks=[prog, *callbacks],
                       gc_after_trial=False)
    finally:
        prog.close()
    return time.perf_counter() - t0


__all__ = ["Progress", "run_search"]
