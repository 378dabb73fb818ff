"""Running the search: ``study.optimize`` with the objective, and its progress on stderr.

- Before the search, whether it resumes a study and how many workers run it (:func:`announce`).
- The progress line: trial n (Optuna's number, from 0, as every message says it), the count, best
  feasible score, and the counts of feasible, screened-out, pruned and failed trials, with an ETA (a
  bar on a terminal, log lines otherwise).
- Repeated warnings (e.g. "noisy measurement" from every trial's short screen) are counted, not
  printed one by one: the first of each kind is printed, the rest are summarized once at the end
  (:class:`RepeatedWarnings`).
- Other packages' warnings (onnxruntime's quantizer logs "Please consider to run pre-processing before
  quantization" on every int8 trial; torch's exporter warns) are counted while the search or the whole
  CLI compile runs and printed once each, with their count, when it ends (:class:`ThirdPartyWarnings`).
- ``--trials N`` is N distinct plans (:class:`DistinctTrials`): a trial that repeats a plan already
  tried takes that trial's result at no cost and is not counted, and the search runs another, up to
  :data:`REPEATS_ALLOWED` repeats (the plan space may hold fewer than N plans).
- A deadline (``compile(time_budget_s=...)``): the search stops before a trial that would likely
  not finish in time (:class:`Deadline`), not only between trials past Optuna's ``timeout``.
"""

from __future__ import annotations

import logging
import os
import re
import statistics
import sys
import time
import warnings
from collections import Counter
from typing import Any

from edgeopt.pipeline.record import Status, TrialRecord

log = logging.getLogger("edgeopt.compile")
REPEATS_ALLOWED = (1.0, 10)  # repeats before the search stops short of N distinct plans: max(1.0 x N, 10)

# The loggers whose repeated warnings are counted during the search (a filter on a logger applies only
# to what is logged on it, not to its children's records, so each is named).
QUIET_LOGGERS = ("edgeopt", "edgeopt.bench", "edgeopt.compile", "edgeopt.export", "edgeopt.gate")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


_ACTIVE: dict[type, Any] = {}  # the outermost RepeatedWarnings / ThirdPartyWarnings now counting, by class


class RepeatedWarnings(logging.Filter):
    """A logging filter: a warning whose text (numbers aside) was seen before is counted and dropped.
    ``summary()`` lists the kinds seen more than once; ``close()`` logs it once and detaches. While one is
    attached (the CLI's, over the whole compile), another (the search's) leaves the counting to it."""

    def __init__(self, loggers: tuple[str, ...] = QUIET_LOGGERS, during: str = "the search") -> None:
        super().__init__()
        self.during = during
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}
        self.loggers = [] if RepeatedWarnings in _ACTIVE else [logging.getLogger(n) for n in loggers]
        if self.loggers:
            _ACTIVE[RepeatedWarnings] = self
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
        return [
            f"{self.first[k]} (and {n - 1} more like it during {self.during})" for k, n in self.counts.items() if n > 1
        ]

    def close(self) -> None:
        for lg in self.loggers:
            lg.removeFilter(self)
        if _ACTIVE.get(RepeatedWarnings) is self:
            del _ACTIVE[RepeatedWarnings]
        self.loggers = []
        for line in self.summary():
            log.warning("repeated: %s", line)


class ThirdPartyWarnings(logging.Handler):
    """While active (a context manager): warnings from outside edgeopt -- log records of WARNING and above
    that reach the root logger (onnxruntime's quantizer logs there), and Python warnings -- are counted,
    not printed; on exit each distinct one (numbers aside, as :class:`RepeatedWarnings` groups them) is
    logged once on ``edgeopt.compile`` with its source and count. edgeopt's own records, and lower levels,
    go on to the root logger's handlers as before. While one is active (the CLI's, over the whole compile),
    another (the search's) leaves the counting to it, so each message is printed once, at the end."""

    def __init__(self, during: str = "the compile") -> None:
        super().__init__()
        self.during = during
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}
        self._saved: list[logging.Handler] = []
        self._showwarning: Any = None

    def start(self) -> ThirdPartyWarnings:
        if ThirdPartyWarnings in _ACTIVE:
            return self
        _ACTIVE[ThirdPartyWarnings] = self
        root = logging.getLogger()
        self._saved = root.handlers[:]
        root.handlers[:] = [self]  # also keeps logging.warning() from installing basicConfig's handler
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._warning
        return self

    def close(self) -> None:
        """Detach (the root logger's handlers and ``warnings.showwarning`` as they were) and print the summary."""
        if self._showwarning is None:
            return
        del _ACTIVE[ThirdPartyWarnings]
        root = logging.getLogger()
        if self in root.handlers:
            root.handlers[:] = self._saved
        warnings.showwarning, self._showwarning = self._showwarning, None
        for line in self.summary():
            log.warning("%s", line)
        super().close()

    def __enter__(self) -> ThirdPartyWarnings:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def add(self, source: str, message: str) -> None:
        key = f"{source}: {RepeatedWarnings.kind(message)}"
        self.counts[key] += 1
        self.first.setdefault(key, f"{source}: {message}")

    def summary(self) -> list[str]:
        return [
            f"warning from {self.first[k]} ({'once' if n == 1 else f'{n} times'} during {self.during})"
            for k, n in self.counts.items()
        ]

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING and not record.name.startswith("edgeopt"):
            self.add(_source(record.pathname), record.getMessage().strip())
            return
        handlers = self._saved or ([logging.lastResort] if logging.lastResort else [])
        for h in handlers:
            if record.levelno >= h.level:
                h.handle(record)

    def _warning(
        self,
        message: Any,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        self.add(_source(filename), f"{category.__name__}: {str(message).strip()}")


def _source(path: str) -> str:
    """``onnxruntime.quantization`` for ``.../site-packages/onnxruntime/quantization/quantize.py``."""
    parts = os.path.normpath(path or "?").split(os.sep)
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            rest = [p.removesuffix(".py") for p in parts[parts.index(marker) + 1 :]]
            return ".".join(p for p in rest[:2] if p != "__init__") or "?"
    return os.path.basename(path).removesuffix(".py") or "?"


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
        return (
            f"feasible {c['feasible']}, screened {c[Status.SCREENED_OUT.value]}, pruned {c[Status.PRUNED.value]}"
            + (f", failed {c[Status.FAILED.value]}" if c[Status.FAILED.value] else "")
            + (f", repeats {c['repeat']} (not counted)" if c["repeat"] else "")
        )

    def __call__(self, study: Any, trial: Any) -> None:
        rec = TrialRecord.from_trial(trial)
        if rec.repeat_of is not None:  # not a trial of its own: counted apart
            self.counts["repeat"] += 1
            return
        self.done += 1
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
            # A seeded alternative says which (search.alternatives), a step down the tier's speed its anchor.
            step = trial.user_attrs.get("descent")
            label = trial.user_attrs.get("alternative") or (f"step down from {step}" if step else None)
            log.info(
                "trial %d (%d of %d here) %-12s best feasible %s %s; %s; ETA %.0fs",
                rec.number,
                self.done,
                self.total,
                rec.status.value if not label else f"{rec.status.value} ({label})",
                self.metric,
                best,
                self.tally(),
                eta,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.done:
            log.info("search: %d trials; %s", self.done, self.tally())


def announce(study: Any, trials: int, workers: int) -> None:
    """Before the search: whether it resumes a study (and how far it got) and how many workers run it."""
    done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
    who = "1 worker (this process)" if workers == 1 else f"{workers} worker processes"
    if done:
        log.info("resuming study %s (%d trials done): %d more trials, %s", study.study_name, done, trials, who)
    else:
        log.info("search: study %s, %d trials, %s", study.study_name, trials, who)


class DistinctTrials:
    """Stops the study once ``total`` trials of distinct plans have finished here, or once the repeats
    exceed :data:`REPEATS_ALLOWED` (an Optuna callback; ``study.optimize`` is given room for both)."""

    def __init__(self, total: int) -> None:
        self.total, self.distinct, self.repeats = total, 0, 0
        self.allowed = max(int(REPEATS_ALLOWED[0] * total), REPEATS_ALLOWED[1])

    @property
    def n_trials(self) -> int:
        """The trials ``study.optimize`` may run at most: every distinct one and every repeat allowed."""
        return self.total + self.allowed

    def __call__(self, study: Any, trial: Any) -> None:
        if TrialRecord.from_trial(trial).repeat_of is None:
            self.distinct += 1
        else:
            self.repeats += 1
        if self.distinct >= self.total:
            study.stop()
        elif self.repeats >= self.allowed:
            log.info(
                "search: %d distinct plans and %d repeats: the plan space offers few new plans; stopping",
                self.distinct,
                self.repeats,
            )
            study.stop()


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


def run_search(
    study: Any,
    objective: Any,
    *,
    trials: int,
    timeout: float | None,
    metric_name: str,
    progress: bool,
    callbacks: tuple[Any, ...] = (),
    deadline: float | None = None,
) -> float:
    """Run ``trials`` trials of distinct plans (or until ``timeout``, or ``deadline``); a failing trial
    fails alone. Returns the wall time. ``callbacks`` run after each trial, after the progress line
    (e.g. a worker's stop at the study's total)."""
    t0 = time.perf_counter()
    if trials <= 0 or (deadline is not None and deadline <= t0):
        return 0.0
    if deadline is not None:
        timeout = min(timeout or float("inf"), deadline - t0)
        callbacks = (*callbacks, Deadline(deadline))
    announce(study, trials, 1)
    prog, distinct = Progress(trials, metric_name, progress), DistinctTrials(trials)
    quiet, others = RepeatedWarnings(), ThirdPartyWarnings("the search").start()
    try:
        study.optimize(
            objective,
            n_trials=distinct.n_trials,
            timeout=timeout,
            catch=(Exception,),
            callbacks=[prog, distinct, *callbacks],
            gc_after_trial=False,
        )
    finally:
        prog.close()
        quiet.close()
        others.close()
    return time.perf_counter() - t0


__all__ = ["announce", "Deadline", "DistinctTrials", "Progress", "RepeatedWarnings", "ThirdPartyWarnings", "run_search"]
