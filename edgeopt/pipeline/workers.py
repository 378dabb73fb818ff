"""Many workers on one study: ``edgeopt compile … --workers N`` on one machine, ``--storage URL``
on many.

Every worker is an ordinary ``edgeopt compile --config OUT/workers/wK/compile.toml`` process, the run's
settings written there with ``search_only`` on the run's storage and study (not turned back into flags).
Optuna hands out the trials (on a server database with ``SELECT … FOR UPDATE``), heartbeats fail a
killed worker's trial and queue it again once (:mod:`edgeopt.pipeline.storage`), and the plan
claims and the latency screen's cache in the same database keep two workers from training or
measuring one plan twice (:mod:`edgeopt.pipeline.study`).

``--workers N`` (:func:`run_workers`): the calling process measures the baseline and creates the
study (with its warm start), starts N workers with one torch thread each (logs in
``OUT/workers/wK/worker.log``), watches the study, and ships the best trial of every worker when
they are done. The local backend is the run's own storage: SQLite ``OUT/study.db`` unless
``--storage`` names another. Not Optuna's journal file storage: in Optuna 5 ``JournalStorage``
implements no heartbeat (only ``RDBStorage`` does), so a killed worker's trial would stay RUNNING
for ever. SQLite's single writer is no bottleneck at a few writes per trial of seconds (the
benchmark measures it), and one file needs no server.

Between the calling process and its workers (the environment, not the command line): the
study's total (:data:`TOTAL_ENV`; each worker stops when the study has that many trials, so the
survivors of a crash still finish the run's trials) and :data:`~edgeopt.pipeline.storage.WORKER_ENV`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgeopt.errors import InputError
from edgeopt.pipeline import config_file
from edgeopt.pipeline.config import CompileConfig
from edgeopt.pipeline.progress import announce
from edgeopt.pipeline.record import TrialRecord
from edgeopt.pipeline.storage import WORKER_ENV, redact, storage_url
from edgeopt.pipeline.study import StudyHandle

log = logging.getLogger("edgeopt.compile")

TOTAL_ENV = "EDGEOPT_STUDY_TRIALS"
STATUS_EVERY_S = 10.0


def worker_name() -> str:
    """``host:pid``: which process ran a trial (a user attribute of every trial)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _waiting(t: Any) -> bool:
    import optuna

    return t.state == optuna.trial.TrialState.WAITING


class StopAtTotal:
    """An Optuna callback: stop this worker once the study has ``total`` trials (those queued to run
    later not counted), unless a killed worker's trial waits for its retry."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __call__(self, study: Any, trial: Any) -> None:
        trials = study.get_trials(deepcopy=False)
        started = sum(1 for t in trials if not _waiting(t))
        retries = any(_waiting(t) and "failed_trial" in t.system_attrs for t in trials)
        if started >= self.total and not retries:
            study.stop()


def stop_at_total() -> StopAtTotal | None:
    """The stop callback of a worker started by ``--workers`` (None otherwise)."""
    raw = os.environ.get(TOTAL_ENV)
    return StopAtTotal(int(raw)) if raw else None


class Tagged:
    """The objective, with the worker's name written into each trial before it runs (the report counts
    workers, optuna-dashboard shows who ran what, and ``--workers`` fails the trials of a worker it saw die)."""

    def __init__(self, objective: Any) -> None:
        self.objective, self.name = objective, worker_name()

    def __call__(self, trial: Any) -> Any:
        trial.set_user_attr("worker", self.name)
        return self.objective(trial)


def worker_config(config: CompileConfig, study_name: str, index: int) -> CompileConfig:
    """The settings of local worker ``index``: the run's, searching only, on the run's study, in its own out dir."""
    return config.replace(
        search_only=True,
        storage=storage_url(config.storage, config.out),
        study_name=study_name,
        out=config.out / "workers" / f"w{index}",
        workers=1,
        json=None,
    )


def worker_command(config: CompileConfig, study_name: str, index: int) -> list[str]:
    """The command line of local worker ``index``, after its settings are written to its out dir's
    ``compile.toml``: the worker reads them there (one file, the one its own compile keeps)."""
    mine = worker_config(config, study_name, index)
    mine.out.mkdir(parents=True, exist_ok=True)
    path = config_file.write(mine.out / config_file.FILE_NAME, mine)
    return [sys.executable, "-m", "edgeopt", "compile", "--config", str(path)]


def run_workers(config: CompileConfig, study: Any, metric_name: str) -> float:
    """Start ``config.workers`` worker processes on ``study``, wait for them; returns the wall time."""
    if not (config.run.task or config.run.example) or not config.run.target:
        raise InputError(
            f"compile(): workers: {config.workers} worker processes need the task and target as the command line "
            "gives them (config.run.task or .example, and .target): run `edgeopt compile … --workers N`, or start "
            "processes that each call compile(..., storage=URL, study_name=NAME, search_only=True)"
        )
    if config.trials <= 0:
        return 0.0
    total = sum(1 for t in study.get_trials(deepcopy=False) if not _waiting(t)) + config.trials
    env = dict(
        os.environ,
        **{WORKER_ENV: str(os.getpid()), TOTAL_ENV: str(total), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    procs: list[tuple[subprocess.Popen, Path]] = []
    announce(study, config.trials, config.workers)
    log.info(
        "search: storage %s, worker logs in %s", redact(storage_url(config.storage, config.out)), config.out / "workers"
    )
    t0 = time.perf_counter()
    try:
        for i in range(config.workers):
            wdir = config.out / "workers" / f"w{i}"
            wdir.mkdir(parents=True, exist_ok=True)
            _share_tables(config.out, wdir)
            with open(wdir / "worker.log", "w") as logf:
                procs.append(
                    (
                        subprocess.Popen(
                            worker_command(config, study.study_name, i),
                            stdout=logf,
                            stderr=subprocess.STDOUT,
                            env=env,
                            start_new_session=True,
                        ),
                        wdir,
                    )
                )
        _watch(study, procs, total, metric_name)
    finally:
        for p, _ in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait()
    _report_exits(procs)
    fail_dead_workers_trials(study, {_name(p) for p, _ in procs})
    _settle(study)
    return time.perf_counter() - t0


def _name(p: subprocess.Popen) -> str:
    return f"{socket.gethostname()}:{p.pid}"  # worker_name() in that process


def _share_tables(out: Path, wdir: Path) -> None:
    """The run's per-layer tables (``OUT/tables.json``, built before the workers start) for a worker's
    out dir: read there by its key (model, input, target), not measured again by every worker."""
    src = out / "tables.json"
    if src.exists():
        with contextlib.suppress(OSError):  # an optimization: without it the worker builds its own
            shutil.copyfile(src, wdir / "tables.json")


def _watch(study: Any, procs: list[tuple[subprocess.Popen, Path]], total: int, metric_name: str) -> None:
    """Wait for every worker; a status line every :data:`STATUS_EVERY_S` seconds. A worker that dies while
    others run (a signal, a crash) has its RUNNING trial failed at once and queued again for the others
    (its process is gone: no need to wait for its heartbeat to go stale)."""
    last = time.monotonic()
    dead: set[int] = set()
    while any(p.poll() is None for p, _ in procs):
        time.sleep(0.5)
        for p, wdir in procs:
            if p.returncode is not None and p.returncode != 0 and p.pid not in dead:
                dead.add(p.pid)
                failed = fail_dead_workers_trials(study, {_name(p)}, retry=True)
                if failed:
                    log.warning(
                        "worker %s (pid %d) died (exit %d); its trial %s failed and queued again",
                        wdir.name,
                        p.pid,
                        p.returncode,
                        ", ".join(f"#{n}" for n in failed),
                    )
        if time.monotonic() - last >= STATUS_EVERY_S:
            last = time.monotonic()
            log.info(
                "search: %s (%d of %d workers running)",
                status_line(study, total, metric_name),
                sum(p.poll() is None for p, _ in procs),
                len(procs),
            )


def status_line(study: Any, total: int, metric_name: str) -> str:
    """``23/60 trials finished, 2 running, best feasible f1 0.9812``."""
    recs = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
    done = sum(r.state not in ("running", "waiting") for r in recs)
    running = sum(r.state == "running" for r in recs)
    best = max((r.score for r in recs if r.feasible and r.score is not None), default=None)
    return (
        f"{done}/{total} trials finished, {running} running, best feasible {metric_name} "
        f"{'-' if best is None else f'{best:.4f}'}"
    )


def _report_exits(procs: list[tuple[subprocess.Popen, Path]]) -> None:
    for p, wdir in procs:
        if p.returncode == 0:
            continue
        how = f"was killed by signal {-p.returncode}" if p.returncode < 0 else f"exited with {p.returncode}"
        tail = ""
        try:
            lines = (wdir / "worker.log").read_text().strip().splitlines()
            tail = f": {lines[-1]}" if lines and p.returncode > 0 else ""
        except OSError:
            pass
        log.warning(
            "worker %s (pid %d) %s%s (log: %s); its trial in flight, if any, is failed and retried by the others",
            wdir.name,
            p.pid,
            how,
            tail,
            wdir / "worker.log",
        )


def fail_dead_workers_trials(study: Any, dead: set[str], *, retry: bool = False) -> list[int]:
    """Fail the RUNNING trials of workers known to have exited (their heartbeat would fail them only
    after the grace period, and only when an edgeopt process opens the study or a worker starts a trial);
    ``retry``: queue each again once, for the workers still running. Returns their numbers."""
    import optuna

    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return StudyHandle(study).fail_trials(
        [(t, "its worker process exited") for t in running if t.user_attrs.get("worker") in dead], retry=retry
    )


def _settle(study: Any) -> None:
    """After the workers: a RUNNING trial no worker had tagged yet (one killed between creating the trial and
    naming itself) is failed once its heartbeat goes stale -- waited for here, at most the grace period."""
    import optuna

    handle = StudyHandle(study)
    grace = handle.grace_period_s()
    deadline = time.monotonic() + (grace or 0) + 2
    while grace is not None:
        untagged = [
            t
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if "worker" not in t.user_attrs
        ]
        handle.fail_stale_trials()
        if not untagged or time.monotonic() > deadline:
            return
        time.sleep(1.0)


__all__ = [
    "TOTAL_ENV",
    "StopAtTotal",
    "Tagged",
    "fail_dead_workers_trials",
    "run_workers",
    "status_line",
    "stop_at_total",
    "worker_command",
    "worker_config",
    "worker_name",
]
