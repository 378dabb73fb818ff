"""Running the search: ``study.optimize`` with the objective, and its progress on stderr.

- The progress line: trial i/N, best feasible score, and the counts of feasible, screened-out,
  pruned and failed trials, with an ETA (a bar on a terminal, log lines otherwise).
- Repeated warnings (e.g. "noisy measurement" from every trial's short screen) are counted, not
  printed one by one: the first of each kind is printed, the rest are summarized once at the end
  (:class:`RepeatedWarnings`).
- A deadline (``compile(time_budget_s=...)``): the search stops before a trial that would likely
  not finish in time (:class:`Deadline`), not only between trials past Optuna's ``timeout``.
"""

from __future__ import annotations

import logging
import re
import statistics
import sys
import time
from collections import Counter
from typing import Any

from edgeopt.search.record import Status, TrialRecord

log = logging.getLogger("edgeopt.compile")

# The loggers whose repeated warnings are counted during the search (a filter on a logger applies only
# to what is logged on it, not to its children's records, so each is named).
QUIET_LOGGERS = ("edgeopt", "edgeopt.bench", "edgeopt.compile", "edgeopt.export", "edgeopt.gate")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


class RepeatedWarnings(logging.Filter):
    """A logging filter: a warning whose text (numbers aside) was seen before is counted and dropped.
    ``summary()`` lists the kinds seen more than once; ``close()`` logs it once and detaches."""

    def __init__(self, loggers: tuple[str, ...] = QUIET_LOGGERS) -> None:
        super().__init__()
        self.loggers = [logging.getLogger(n) for n in loggers]
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}
        for lg in self.loggers:
            lg.addFilter(self)

    @staticmethod
    def kind(message: str) -> str:
        return _NUMBER.sub("#", message)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        key = self.kind(message)
        self.counts[key] += 1
        self.first.setdefault(key, message)
        return self.counts[key] == 1

    def summary(self) -> list[str]:
        return [f"{self.first[k]} (and {n - 1} more like it during the search)"
                for k, n in self.counts.items() if n > 1]

    def close(self) -> None:
        for lg in self.loggers:
            lg.removeFilter(self)
        for line in self.summary():
            log.warning("repeated: %s", line)


class Progress:
    """Trial i/N, best feasible score, the counts by outcome and an ETA on stderr (an Optuna callback)."""

    def __init__(self, total: int, metric: str, enabled: bool) -> None:
        self.total, self.metric, self.done = total, metric, 0
        self.counts: Counter[str] = Counter()
        self.best: float | None = None
        self.bar = None
        self.t0 = time.perf_counter()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="search", unit="trial", file=sys.stderr, leave=False)

    def tally(self) -> str:
        c = self.counts
        return (f"feasible {c['feasible']}, screened {c[Status.SCREENED_OUT.value]}, pruned {c[Status.PRUNED.value]}"
                + (f", failed {c[Status.FAILED.value]}" if c[Status.FAILED.value] else ""))

    def __call__(self, study: Any, trial: Any) -> None:
        self.done += 1
        rec = TrialRecord.from_trial(trial)
        self.counts[rec.status.value] += 1
        if rec.feasible:
            self.counts["feasible"] += 1
            if rec.score is not None and (self.best is None or rec.score > self.best):
                self.best = rec.score
        best = "-" if self.best is None else f"{self.best:.4f}"
        if self.bar is not None:
            self.bar.set_postfix_str(f"best {self.metric} {best}, {self.tally()}")
            self.bar.update(1)
        else:
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / self.done * (self.total - self.done)
            log.info("trial %d/%d %-12s best feasible %s %s; %s; ETA %.0fs",
                     self.done, self.total, rec.status.value, self.metric, best, self.tally(), eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.done:
            log.info("search: %d trials; %s", self.done, self.tally())


class Deadline:
    """Stops the study when the next trial would likely end past ``deadline`` (a ``perf_counter`` time):
    the median duration of the trials so far is the guess (an Optuna callback)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.durations: list[float] = []
        self.last = time.perf_counter()

    def __call__(self, study: Any, trial: Any) -> None:
        now = time.perf_counter()
        self.durations.append(now - self.last)
        self.last = now
        if now + statistics.median(self.durations) > self.deadline:
            log.info("search: stopped by the time budget after %d trials here", len(self.durations))
            study.stop()


def run_search(study: Any, objective: Any, *, trials: int, timeout: float | None, metric_name: str,
               progress: bool, callbacks: tuple[Any, ...] = (), deadline: float | None = None) -> float:
    """Run ``trials`` trials (or until ``timeout``, or ``deadline``); a failing trial fails alone. Returns
    the wall time. ``callbacks`` run after each trial, after the progress line (e.g. a worker's stop at
    the study's total)."""
    t0 = time.perf_counter()
    if trials <= 0 or (deadline is not None and deadline <= t0):
        return 0.0
    if deadline is not None:
        timeout = min(timeout or float("inf"), deadline - t0)
        callbacks = (*callbacks, Deadline(deadline))
    prog = Progress(trials, metric_name, progress)
    quiet = RepeatedWarnings()
    try:
        study.optimize(objective, n_trials=trials, timeout=timeout, catch=(Exception,), callbacks=[prog, *callbacks],
                       gc_after_trial=False)
    finally:
        prog.close()
        quiet.close()
    return time.perf_counter() - t0


__all__ = ["Deadline", "Progress", "RepeatedWarnings", "run_search"]
