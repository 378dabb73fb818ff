"""The search's progress: repeated warnings counted and summarized once, counts by outcome, the deadline."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("optuna")


def test_repeated_warnings_are_printed_once_and_summarized(caplog):
    from edgeopt.pipeline.progress import RepeatedWarnings

    bench = logging.getLogger("edgeopt.bench")
    caplog.set_level(logging.INFO)
    quiet = RepeatedWarnings()
    for cv in (0.12, 0.31, 0.2, 0.45):
        bench.warning("warning: noisy measurement: coefficient of variation %.2f > 0.10", cv)
    bench.warning("warning: something else")
    bench.info("info lines pass: %d", 1)
    bench.info("info lines pass: %d", 2)
    quiet.close()
    noisy = [r for r in caplog.records if "noisy" in r.getMessage()]
    assert len(noisy) == 2  # the first, then the one summary
    assert "and 3 more like it" in noisy[-1].getMessage()
    assert sum("something else" in r.getMessage() for r in caplog.records) == 1
    assert sum("info lines pass" in r.getMessage() for r in caplog.records) == 2
    bench.warning("warning: noisy measurement: coefficient of variation 0.50 > 0.10")  # detached: printed
    assert sum("noisy" in r.getMessage() for r in caplog.records) == 3


def test_progress_counts_feasible_screened_pruned(caplog):
    import optuna

    from edgeopt.pipeline.progress import Progress
    from edgeopt.pipeline.record import Constraints, Status, TrialRecord

    caplog.set_level(logging.INFO, logger="edgeopt.compile")
    prog = Progress(4, "f1", enabled=False)
    study = optuna.create_study(directions=["maximize"])
    for status, violation in (
        (Status.TRAINED, -0.1),
        (Status.SCREENED_OUT, 0.5),
        (Status.PRUNED, -0.1),
        (Status.SCREENED_OUT, 0.2),
    ):
        trial = study.ask()
        rec = TrialRecord(
            plan={},
            status=status,
            val={"score": 0.9} if status is Status.TRAINED else None,
            constraints=Constraints(latency=violation),
        )
        rec.save(trial)
        study.tell(trial, 0.0)
        prog(study, study.trials[-1])
    prog.close()
    assert prog.tally() == "feasible 1, screened 2, pruned 1"
    assert "feasible 1, screened 2, pruned 1" in caplog.records[-1].getMessage()


def test_deadline_stops_before_a_trial_that_would_overrun():
    from edgeopt.pipeline.progress import Deadline

    stopped = []
    study = SimpleNamespace(stop=lambda: stopped.append(True))
    d = Deadline(time.perf_counter() + 0.15)
    time.sleep(0.05)
    d(study, None)  # 0.05 s per trial: the next fits
    assert not stopped
    time.sleep(0.05)
    d(study, None)  # 0.1 s in, next ends at ~0.15+: stop
    assert stopped
