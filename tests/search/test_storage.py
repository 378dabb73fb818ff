"""Where a study lives and how it is opened: URL, name, storage races, sampler, pruner, warm start."""

from __future__ import annotations

import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

from edgeopt.errors import InputError  # noqa: E402 - after the importorskip that guards optuna
from edgeopt.pipeline.config import CompileConfig  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.storage import storage_url, stored_url  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.study import open_study  # noqa: E402 - after the pytest.importorskip guards


def test_the_study_lives_in_out_unless_a_storage_is_given(tmp_path):
    assert storage_url(None, tmp_path) == f"sqlite:///{(tmp_path / 'study.db').resolve()}"
    assert storage_url("postgresql://h/db", tmp_path) == "postgresql://h/db"
    assert stored_url("study.db", tmp_path) == storage_url(None, tmp_path)
    assert stored_url("sqlite:////x/y.db", tmp_path) == "sqlite:////x/y.db"


def test_a_new_study_is_warm_started_once_and_keeps_its_objective(tmp_path):
    config = CompileConfig(out=tmp_path, trials=1)
    warm = [("uniform lowrank", {"fc.format": "lowrank", "fc.lowrank_rank": 4})]
    handle = open_study(config, task_name="t", target_name="host", warm_start=lambda: warm)
    study = handle.study
    assert handle.slot == 0 and not hasattr(study, "edgeopt_slot")  # the slot is the handle's, not Optuna's
    assert study.study_name == "t-host" and study.user_attrs["sampler"] == "TPESampler"
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [(t.system_attrs["fixed_params"], t.user_attrs["warm_start"]) for t in waiting] == [
        (warm[0][1], "uniform lowrank")
    ]
    # Resumed: not warm-started again.
    again = open_study(config, task_name="t", target_name="host", warm_start=lambda: warm)
    assert len(again.study.trials) == 1 and again.slot == 1  # the first handle still holds slot 0
    handle.release_slot()
    assert open_study(config, task_name="t", target_name="host").slot == 0
    with pytest.raises(InputError, match="same --objective"):
        open_study(CompileConfig(out=tmp_path, objective="pareto"), task_name="t", target_name="host")
    random = open_study(
        CompileConfig(out=tmp_path, sampler="random", study_name="r"),
        task_name="t",
        target_name="host",
        warm_start=lambda: warm,
    )
    assert random.study.trials == [] and random.study.user_attrs["sampler"] == "RandomSampler"


@pytest.mark.slow
def test_workers_started_together_all_open_a_new_sqlite_study(tmp_path):
    """Eight processes creating the same new SQLite storage at once: none loses the schema race."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    code = (
        "import sys, optuna; from edgeopt.pipeline.storage import make_storage; "
        "optuna.create_study(study_name='s', storage=make_storage(sys.argv[1]), load_if_exists=True)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True) for _ in range(8)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [e.strip().splitlines()[-1:] for e in errors if e.strip()]
    assert len(optuna.get_all_study_summaries(storage=url)) == 1


def test_each_waiting_trial_of_a_sqlite_study_is_popped_by_one_worker(tmp_path):
    """Enqueued trials (the warm start, the alternatives) asked for by workers at once: each runs once. On
    SQLite, Optuna's read-then-set pop let two workers take one trial (15 of 40 taken twice here), and the
    second to finish failed on "Cannot tell a COMPLETE trial" (study.sqlite_queue)."""
    import collections
    import threading

    import optuna

    from edgeopt.pipeline.storage import make_storage

    study = optuna.create_study(study_name="q", storage=make_storage(f"sqlite:///{tmp_path / 'q.db'}"))
    n = 40
    for i in range(n):
        study.enqueue_trial({"x": i})
    taken: collections.Counter[int] = collections.Counter()

    def worker() -> None:
        while (trial := study.ask()).number < n:
            taken[trial.number] += 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == list(range(n)) and set(taken.values()) == {1}
