"""Trials left RUNNING by a worker that is gone are failed whenever edgeopt opens the study (issue 16).

Optuna fails a stale trial only when a worker starts its next trial: once every other worker has finished,
a trial of a worker killed with SIGKILL stayed RUNNING for ever, even when the study was shipped
(``--trials 0``) or searched again. Heartbeats every 1 s here (``tiny_env``): stale after 3 s.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import TASK_SPEC

pytestmark = pytest.mark.compile

optuna = pytest.importorskip("optuna")
RUNNING, FAIL, WAITING = (
    optuna.trial.TrialState.RUNNING,
    optuna.trial.TrialState.FAIL,
    optuna.trial.TrialState.WAITING,
)
SEARCH = ["--epochs", "2", "--final-epochs", "2", "--seed", "0"]


def _states(url: str, name: str) -> dict[int, object]:
    from edgeopt.pipeline.storage import make_storage

    return {t.number: t for t in optuna.load_study(study_name=name, storage=make_storage(url)).trials}


@pytest.mark.slow
def test_opening_the_study_fails_stale_trials_with_and_without_heartbeats(tmp_path, monkeypatch):
    """A: RUNNING with no heartbeat record, started > grace ago; B: heartbeat > grace ago; C and D: the same,
    fresh. Opening the study (compile's open_study, then report's load_study) fails A and B, queues each
    again once, and leaves C and D to their workers until they too go stale. B is failed by Optuna's own
    ``fail_stale_trials`` (no reason recorded: Optuna sets none); A by edgeopt, with the reason."""
    from edgeopt.pipeline.config import CompileConfig
    from edgeopt.pipeline.storage import make_storage
    from edgeopt.pipeline.study import _optuna, load_study, open_study

    monkeypatch.setenv("EDGEOPT_HEARTBEAT_S", "1")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    stor = make_storage(url)
    study = optuna.create_study(study_name="s", storage=stor, direction="maximize")
    a = study.ask()
    b = study.ask()
    stor.record_heartbeat(_optuna.trial_id(b))
    time.sleep(4.5)  # SQLite keeps heartbeats to the second: over 3 s whatever the rounding
    c = study.ask()
    d = study.ask()
    stor.record_heartbeat(_optuna.trial_id(d))

    config = CompileConfig(trials=0, out=tmp_path, storage=url, study_name="s")
    open_study(config, task_name="t", target_name="x", must_exist=True)
    trials = _states(url, "s")
    assert [trials[n].state for n in (a.number, b.number, c.number, d.number)] == [FAIL, FAIL, RUNNING, RUNNING]
    assert "no heartbeat at all, started over 3 s ago" in trials[a.number].system_attrs["fail_reason"]
    retries = sorted(t.system_attrs["failed_trial"] for t in trials.values() if t.state == WAITING)
    assert retries == [a.number, b.number]
    assert not any("fail_reason" in t.system_attrs for t in trials.values() if t.state == WAITING)

    time.sleep(4.5)  # SQLite keeps heartbeats to the second: over 3 s whatever the rounding
    load_study(url, "s", tmp_path)  # what `edgeopt report DIR` opens
    trials = _states(url, "s")
    assert [trials[n].state for n in (c.number, d.number)] == [FAIL, FAIL]
    assert open_study(config, task_name="t", target_name="x", must_exist=True) is not None  # nothing left: no-op


def _victim(args: list[str], out) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edgeopt", "compile", TASK_SPEC, *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_mid_trial(victim: subprocess.Popen, url: str, name: str, pid: int | None = None) -> int:
    """SIGKILL ``victim`` (or process ``pid``) once it has trained a trial for 1 s; the trial's number."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.2)
        try:
            trials = _states(url, name)
        except KeyError:  # the study is not created yet
            continue
        now = datetime.datetime.now()
        mine = [
            t
            for t in trials.values()
            if t.state == RUNNING
            and t.datetime_start is not None
            and (now - t.datetime_start).total_seconds() >= 1.0
            and (pid is None or t.user_attrs.get("worker", "").endswith(f":{pid}"))
        ]
        if mine:
            os.kill(pid or victim.pid, signal.SIGKILL)
            return mine[0].number
    raise AssertionError("the victim never trained a trial for 1 s")


@pytest.mark.slow
def test_shipping_after_a_sigkilled_worker_fails_its_trial_on_postgres(pg_url, tiny_env, tiny_target, tmp_path):
    """The issue's case: the only worker killed with SIGKILL, nobody searches again; the study is shipped."""
    args = ["--target", tiny_target, "--storage", pg_url, "--study", "k", "--search-only", *SEARCH]
    victim = _victim([*args, "--trials", "50", "--epochs", "200"], tmp_path / "victim")
    number = _kill_mid_trial(victim, pg_url, "k")
    victim.wait(timeout=30)
    assert _states(pg_url, "k")[number].state == RUNNING  # nothing failed it
    time.sleep(4)  # past the grace period (3 s)
    ship = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeopt",
            "compile",
            TASK_SPEC,
            "--target",
            tiny_target,
            "--storage",
            pg_url,
            "--study",
            "k",
            "--trials",
            "0",
            "--out",
            str(tmp_path / "ship"),
            *SEARCH,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ship.returncode in (0, 1), ship.stderr
    assert (
        f"failed 1 trial(s) left running by a worker that is gone (no heartbeat for over 3 s): #{number}" in ship.stderr
    )
    trials = _states(pg_url, "k")
    assert trials[number].state == FAIL
    assert [t.state for t in trials.values() if t.system_attrs.get("failed_trial") == number] == [
        WAITING
    ]  # queued once
    assert not [t for t in trials.values() if t.state == RUNNING]


@pytest.mark.slow
def test_workers_parent_fails_a_sigkilled_workers_trial_at_once(tiny_env, tiny_target, tmp_path):
    """``--workers 2``: one worker killed mid-trial; the parent fails its trial without waiting for the
    heartbeat, the other worker retries it, and nothing is left RUNNING when the run ships."""
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "out"
    url = f"sqlite:///{out / 'study.db'}"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeopt",
            "compile",
            TASK_SPEC,
            "--target",
            tiny_target,
            "--workers",
            "2",
            "--trials",
            "6",
            "--out",
            str(out),
            "--epochs",
            "40",
            "--final-epochs",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    workers: list = []
    while len(workers) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        workers = psutil.Process(parent.pid).children()
    assert len(workers) == 2, "the workers did not start"
    number = _kill_mid_trial(parent, url, _study_name(url), pid=workers[0].pid)
    _, err = parent.communicate(timeout=600)
    assert parent.returncode in (0, 1), err
    assert f"its trial #{number} failed and queued again" in err
    trials = _states(url, _study_name(url))
    assert trials[number].state == FAIL and trials[number].system_attrs["fail_reason"] == "its worker process exited"
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == number]
    assert len(retries) == 1 and retries[0].state not in (WAITING, RUNNING)
    assert not [t for t in trials.values() if t.state == RUNNING]


def _study_name(url: str) -> str:
    from edgeopt.pipeline.storage import make_storage

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            names = [s.study_name for s in optuna.get_all_study_summaries(make_storage(url), include_best_trial=False)]
        except Exception:
            names = []
        if names:
            return names[0]
        time.sleep(0.2)
    raise AssertionError("no study")
