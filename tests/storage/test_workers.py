"""Many workers on one study, on a real PostgreSQL server (and SQLite for ``--workers``): one search,
no plan trained twice, nothing left RUNNING, shipping from another directory, a missing driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from .conftest import TASK_SPEC

pytestmark = pytest.mark.compile

optuna = pytest.importorskip("optuna")


def _compile(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgeopt", "compile", TASK_SPEC, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _trials(url: str, study: str) -> list:
    from edgeopt.pipeline.storage import make_storage

    return optuna.load_study(study_name=study, storage=make_storage(url)).get_trials(deepcopy=False)


def _trained_plans(trials: list) -> list[str]:
    """Plan keys of the trials that actually trained (a repeat takes another trial's result)."""
    out = []
    for t in trials:
        a = t.user_attrs
        if a.get("status") in ("trained", "pruned") and a.get("repeat_of") is None:
            out.append(json.dumps([a.get("plan"), a.get("dtype", a.get("precision"))], sort_keys=True))
    return out


SEARCH = ["--epochs", "2", "--final-epochs", "2", "--seed", "0"]


@pytest.mark.slow
def test_two_workers_on_postgres_are_one_search_and_ship_from_another_dir(pg_url, tiny_env, tiny_target, tmp_path):
    # Two independent workers (as on two machines) on one PostgreSQL study, searching only.
    procs = [
        subprocess.Popen(
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
                "s",
                "--trials",
                "4",
                "--search-only",
                "--out",
                str(tmp_path / f"w{i}"),
                *SEARCH,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = _trials(pg_url, "s")
    assert len(trials) >= 8
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    trained = _trained_plans(trials)
    assert trained and not [k for k, n in Counter(trained).items() if n > 1], "a plan was trained twice"
    # Ship the study's best from a third directory, with only the storage and the task.
    ship = _compile(
        "--target",
        tiny_target,
        "--storage",
        pg_url.replace("postgresql://", "postgresql+psycopg://"),
        "--study",
        "s",
        "--trials",
        "0",
        "--out",
        str(tmp_path / "ship"),
        *SEARCH,
    )
    assert ship.returncode == 0, ship.stderr
    report = json.loads((tmp_path / "ship" / "report.json").read_text())
    assert report["search"]["trials"] == len(trials)
    assert (tmp_path / "ship" / "model.onnx").stat().st_size > 0


@pytest.mark.slow
def test_workers_flag_runs_local_workers_on_one_sqlite_study(tiny_env, tiny_target, tmp_path):
    out = tmp_path / "out"
    r = _compile("--target", tiny_target, "--workers", "2", "--trials", "6", "--out", str(out), *SEARCH)
    assert r.returncode == 0, r.stderr
    trials = _trials(f"sqlite:///{out / 'study.db'}", "tiny-mlp-tinyhost")
    assert len(trials) >= 6
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert (out / "model.onnx").exists() and json.loads((out / "report.json").read_text())["best"]["plan"] is not None


@pytest.mark.slow
def test_three_local_workers_on_postgres_train_no_plan_twice_and_count_in_the_report(
    pg_url, tiny_env, tiny_target, tmp_path
):
    out = tmp_path / "out"
    r = _compile(
        "--target",
        tiny_target,
        "--storage",
        pg_url,
        "--study",
        "three",
        "--workers",
        "3",
        "--trials",
        "9",
        "--out",
        str(out),
        *SEARCH,
    )
    assert r.returncode in (0, 1), r.stderr  # 1: shipped, a budget missed (the tiny target's size budget)
    trials = _trials(pg_url, "three")
    assert len(trials) >= 9
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    workers = {t.user_attrs.get("worker") for t in trials if t.user_attrs.get("worker")}
    assert len(workers) == 3, workers
    trained = _trained_plans(trials)
    assert trained and not [k for k, n in Counter(trained).items() if n > 1], "a plan was trained twice"
    report = json.loads((out / "report.json").read_text())
    assert report["search"]["trials"] == len(trials)
    assert set(report["search"]["workers"]) == workers and sum(report["search"]["workers"].values()) == len(trials)
    assert ", 3 workers)" in (out / "report.md").read_text()
    if (out / "tables.json").exists():  # the per-layer tables are built once, not once per worker
        assert all("tables: read from" in log.read_text() for log in out.glob("workers/w*/worker.log"))


def test_shipping_a_study_that_is_not_there_is_one_line(pg_url, tiny_env, tiny_target, tmp_path):
    r = _compile(
        "--target",
        tiny_target,
        "--storage",
        pg_url,
        "--study",
        "nope",
        "--trials",
        "0",
        "--out",
        str(tmp_path / "ship"),
        *SEARCH,
    )
    assert r.returncode == 2
    assert "study 'nope' not found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ship" / "model.onnx").exists()


def test_missing_driver_says_which_extra_to_install(tiny_env, tiny_target, tmp_path):
    code = (
        "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg2'] = None; "
        "from edgeopt.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "compile",
            TASK_SPEC,
            "--target",
            tiny_target,
            "--storage",
            "postgresql://u@127.0.0.1:1/db",
            "--trials",
            "1",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    assert "edgeopt[postgres]" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()[-1]) < 400


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_nothing_running_and_its_trial_is_retried(
    pg_url, tiny_env, tiny_target, tmp_path
):
    import signal
    import time

    args = ["--target", tiny_target, "--storage", pg_url, "--study", "k", "--search-only", *SEARCH]
    # The victim's trials train long (200 epochs), so it dies mid-trial.
    victim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeopt",
            "compile",
            TASK_SPEC,
            *args,
            "--trials",
            "50",
            "--epochs",
            "200",
            "--out",
            str(tmp_path / "victim"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it inside a trial that has been running for 1 s: really training (a repeat of an evaluated
    # plan ends in milliseconds), and past its first heartbeat (Optuna writes it just after starting a
    # trial; one killed before that has none and is never seen as stale).
    import datetime

    deadline = time.monotonic() + 240
    training = False
    while not training and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.2)
        if _has_study(pg_url, "k"):
            now = datetime.datetime.now()
            training = any(
                t.state == optuna.trial.TrialState.RUNNING
                and t.datetime_start is not None
                and (now - t.datetime_start).total_seconds() >= 1.0
                for t in _trials(pg_url, "k")
            )
    assert training, "the victim never trained a trial for 1 s"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    orphans = [t.number for t in _trials(pg_url, "k") if t.state == optuna.trial.TrialState.RUNNING]
    assert len(orphans) == 1
    running = orphans[0]
    time.sleep(4)  # past the 1 s heartbeat's grace period (tiny_env)
    # Optuna runs queued trials oldest first: the survivor's first trial fails the stale one and queues
    # its retry behind the warm-start trials the victim queued, so it runs those, then the retry.
    queued = sum(t.state == optuna.trial.TrialState.WAITING for t in _trials(pg_url, "k"))
    survivor = _compile(*args, "--trials", str(queued + 1), "--out", str(tmp_path / "survivor"))
    assert survivor.returncode == 0, survivor.stderr
    trials = _trials(pg_url, "k")
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    killed = next(t for t in trials if t.number == running)
    assert killed.state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == running]
    assert len(retries) == 1 and retries[0].state != optuna.trial.TrialState.WAITING


def _has_study(url: str, name: str) -> bool:
    from edgeopt.pipeline.storage import make_storage

    return name in [s.study_name for s in optuna.get_all_study_summaries(make_storage(url), include_best_trial=False)]
