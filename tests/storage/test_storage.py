"""The storage layer without training: URL forms, one storage per process, refusals and warnings,
atomic plan claims and the shared latency-screen cache, on PostgreSQL and SQLite."""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path

import pytest

from edgeopt.errors import InputError
from edgeopt.pipeline import storage

pytestmark = pytest.mark.compile

optuna = pytest.importorskip("optuna")


def test_plain_postgresql_urls_mean_psycopg3():
    assert storage.normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert storage.normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert storage.normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert storage.normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_both_url_forms_open_the_same_study_with_one_storage_per_process(pg_server):
    db = pg_server.create_database(f"u_{uuid.uuid4().hex[:12]}")
    plain, explicit = pg_server.url(db), pg_server.url(db, scheme="postgresql+psycopg")
    a, b = storage.make_storage(plain), storage.make_storage(explicit)
    assert a is b  # one engine (one pool) per URL per process
    assert a.engine.dialect.driver == "psycopg"
    assert a.engine.pool.size() == storage.SERVER_ENGINE["pool_size"] and a.engine.pool._pre_ping
    optuna.create_study(study_name="both", storage=plain).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="both", storage=explicit).trials) == 2


def test_sqlite_on_a_network_filesystem_is_refused_with_the_reason(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\nserver:/export /mnt/shared nfs4 rw 0 0\n")
    with pytest.raises(InputError, match="nfs4 network filesystem.*postgresql"):
        storage.refuse_network_sqlite(Path("/mnt/shared/run/study.db"), str(mounts))
    storage.refuse_network_sqlite(Path("/home/me/study.db"), str(mounts))  # local: fine
    assert storage.filesystem_type(Path("/mnt/shared/a"), str(mounts)) == "nfs4"
    mounts.write_text("me@host:/x /mnt/s fuse.sshfs rw 0 0\n")
    with pytest.raises(InputError, match="fuse.sshfs"):
        storage.refuse_network_sqlite(Path("/mnt/s/study.db"), str(mounts))


def test_a_second_process_on_one_sqlite_file_is_pointed_to_workers(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv(storage.WORKER_ENV, raising=False)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with caplog.at_level(logging.WARNING, logger="edgeopt.compile"), storage.sqlite_searcher(url):
        assert not caplog.records
        # flock is per open file description: a second open in this process stands for another process
        with storage.sqlite_searcher(url):
            pass
    assert any("--workers N" in r.getMessage() for r in caplog.records)


def test_heartbeat_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("EDGEOPT_HEARTBEAT_S", "2")
    assert storage.heartbeat_interval() == 2
    monkeypatch.delenv("EDGEOPT_HEARTBEAT_S")
    assert storage.heartbeat_interval() == storage.HEARTBEAT_S
    monkeypatch.setenv("EDGEOPT_HEARTBEAT_S", "soon")
    with pytest.raises(InputError, match="EDGEOPT_HEARTBEAT_S"):
        storage.heartbeat_interval()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def any_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    server = request.getfixturevalue("pg_server")
    return server.url(server.create_database(f"c_{uuid.uuid4().hex[:12]}"))


def test_a_plan_claim_is_won_by_exactly_one_of_many_racers(any_url):
    from edgeopt.pipeline.study import _optuna, claims

    stor = storage.make_storage(any_url)
    sid = _optuna.study_id(optuna.create_study(study_name="claims", storage=stor))
    wins: list[int] = []
    barrier = threading.Barrier(6)

    def racer(owner: int) -> None:
        barrier.wait()
        if claims.try_claim(stor.engine, sid, "plan:x", owner):
            wins.append(owner)

    threads = [threading.Thread(target=racer, args=(i + 1,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert claims.claim_owner(stor.engine, sid, "plan:x") == wins[0]
    assert not claims.take_over(stor.engine, sid, "plan:x", wins[0] + 100, 99)  # compare-and-set
    assert claims.take_over(stor.engine, sid, "plan:x", wins[0], 99)


def test_the_screen_cache_is_shared_through_the_storage(any_url):
    from edgeopt.pipeline.study import ScreenCache

    stor = storage.make_storage(any_url)
    first, second = ScreenCache(stor, "model-a"), ScreenCache(stor, "model-a")
    other_model = ScreenCache(stor, "model-b")
    first.put("fp32|fc1:lr4", {"latency_ms": 0.5})
    first.put("fp32|fc1:lr4", {"latency_ms": 0.7})  # a second measurement of one plan: the first stays
    assert second.get("fp32|fc1:lr4") == {"latency_ms": 0.5}
    assert other_model.get("fp32|fc1:lr4") is None


def test_a_studys_own_storage_reaches_the_shared_tables(any_url):
    """Optuna wraps the RDB storage of a study (``_CachedStorage``): claims, slots and the screen cache
    must reach the database through it, or every worker would silently work alone."""
    from edgeopt.pipeline.study import StudyHandle

    study = optuna.create_study(study_name="wrapped", storage=storage.make_storage(any_url))
    first, second = StudyHandle(study), StudyHandle(study)
    assert first.engine is not None
    assert first.take_slot() == 0 and second.take_slot() == 1  # each process its own slot
    first.release_slot()
    assert first.slot is None and StudyHandle(study).take_slot() == 0  # a released slot is taken again
    assert first.claim_once("warm-start") and not second.claim_once("warm-start")
    first.screen_cache("m").put("k", {"latency_ms": 1.0})
    assert second.screen_cache("m").get("k") == {"latency_ms": 1.0}


def test_a_plan_being_trained_by_another_trial_is_waited_for_and_its_result_taken(any_url, monkeypatch):
    from edgeopt.pipeline.record import DType, Status, TrialRecord
    from edgeopt.pipeline.study import StudyHandle, handle

    monkeypatch.setattr(handle, "WAIT_POLL_S", 0.05)
    study = optuna.create_study(study_name="wait", storage=storage.make_storage(any_url))
    claim_plan = StudyHandle(study).claim_plan
    plan = {"fc1": {"format": "lowrank", "rank": 4}}
    owner = study.ask()
    assert claim_plan(owner, plan, DType.FP32) is None  # first: trains it
    second = study.ask()

    def finish() -> None:
        import time

        time.sleep(0.5)
        TrialRecord(number=owner.number, plan=plan, dtype=DType.FP32, status=Status.TRAINED, val={"score": 0.9}).save(
            owner
        )
        study.tell(owner, 0.9)

    t = threading.Thread(target=finish)
    t.start()
    frozen, rec = claim_plan(second, plan, DType.FP32)  # waits for the owner's result
    t.join()
    assert frozen.number == owner.number and rec.status is Status.TRAINED and frozen.value == 0.9
    # A failed owner's plan is taken over by the next trial that samples it.
    other = {"fc1": {"format": "lowrank", "rank": 8}}
    failed = study.ask()
    assert claim_plan(failed, other, DType.FP32) is None
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    assert claim_plan(study.ask(), other, DType.FP32) is None
