"""What the workers of one study share through its database, beside Optuna's own tables.

Optuna coordinates trials (``SELECT … FOR UPDATE`` on a server database, heartbeats, the retry of
a killed worker's trial); edgeopt adds two small tables in the same database, created with
Optuna's (any RDB Optuna supports: PostgreSQL, MySQL, SQLite):

- ``edgeopt_claims(study_id, claim_key, owner)``, primary key ``(study_id, claim_key)``: who trains
  a plan. Before screening a plan a worker INSERTs its key; the one INSERT that succeeds owns the
  plan (the database's uniqueness makes it atomic; a study system attribute set-if-absent would not
  be). Every other worker copies the owner's result when it has finished, or waits for it while it
  runs. A claim whose trial failed (an error, or a killed worker's trial failed by its heartbeat) is
  taken over by a compare-and-set UPDATE. The same table hands out worker slots (so each worker
  samples with its own seed) and the one-time warm start of a new study.
- ``edgeopt_screen_cache(cache_key, value)``: the latency screen's results by model structure,
  target, dtype and plan, for every worker and every later run on this database; the first writer
  wins (two measurements of one plan are equally good).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

from edgeopt.search.record import Status, TrialRecord
from edgeopt.search.space import plan_key

log = logging.getLogger("edgeopt.compile")

CLAIMS, SCREEN_CACHE = "edgeopt_claims", "edgeopt_screen_cache"
WAIT_POLL_S = 0.5  # how often a worker waiting for another's trial of the same plan looks again
CLAIM_RETRIES = 20  # a claim that vanishes or cannot be taken over this often: the plan is trained anyway
_TABLES: Any = None


def _tables() -> Any:
    """The two tables' SQLAlchemy metadata (built once)."""
    global _TABLES
    if _TABLES is None:
        import sqlalchemy as sa

        md = sa.MetaData()
        sa.Table(
            CLAIMS,
            md,
            sa.Column("study_id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("claim_key", sa.String(64), primary_key=True),
            sa.Column("owner", sa.BigInteger, nullable=False),
        )
        sa.Table(
            SCREEN_CACHE,
            md,
            sa.Column("cache_key", sa.String(64), primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
        _TABLES = md
    return _TABLES


def create_tables(storage: Any) -> None:
    """Create the tables beside Optuna's (idempotent; concurrent creators are retried by the caller)."""
    engine = storage_engine(storage)
    if engine is not None:
        _tables().create_all(engine, checkfirst=True)


def storage_engine(storage: Any) -> Any:
    """The SQLAlchemy engine of an Optuna RDB storage, None for any other storage. A study's
    ``_storage`` is the RDB storage wrapped in Optuna's ``_CachedStorage`` (its ``_backend``)."""
    for candidate in (storage, getattr(storage, "_backend", None)):
        engine = getattr(candidate, "engine", None)
        if engine is not None:
            return engine
    return None


def _engine(study: Any) -> Any:
    return storage_engine(study._storage)


# --------------------------------------------------------------------------- claims
def insert_if_absent(engine: Any, table: Any, **values: Any) -> bool:
    """``INSERT … ON CONFLICT DO NOTHING`` (PostgreSQL, SQLite); True when this call inserted the row.
    Other databases: a plain INSERT whose unique-key violation means "already there"."""
    import sqlalchemy as sa

    dialect = engine.dialect.name
    if dialect == "postgresql" or (dialect == "sqlite" and _sqlite_returning()):
        import importlib

        mod = importlib.import_module(f"sqlalchemy.dialects.{dialect}")
        # RETURNING, not rowcount: psycopg 3 under SQLAlchemy 2.1 reports rowcount -1 for this statement.
        stmt = mod.insert(table).values(**values).on_conflict_do_nothing().returning(*table.primary_key.columns)
        with engine.begin() as conn:
            return conn.execute(stmt).first() is not None
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(table).values(**values))
        return True
    except sa.exc.IntegrityError:
        return False


def _sqlite_returning() -> bool:
    import sqlite3

    return sqlite3.sqlite_version_info >= (3, 35)  # RETURNING


def try_claim(engine: Any, study_id: int, key: str, owner: int) -> bool:
    """INSERT the claim; True when this call made it (the primary key refuses every other)."""
    return insert_if_absent(engine, _tables().tables[CLAIMS], study_id=study_id, claim_key=key, owner=owner)


def claim_owner(engine: Any, study_id: int, key: str) -> int | None:
    import sqlalchemy as sa

    table = _tables().tables[CLAIMS]
    with engine.connect() as conn:
        return conn.execute(
            sa.select(table.c.owner).where(table.c.study_id == study_id, table.c.claim_key == key)
        ).scalar()


def take_over(engine: Any, study_id: int, key: str, old: int, new: int) -> bool:
    """Compare-and-set: the claim passes from ``old`` to ``new`` only if ``old`` still holds it."""
    import sqlalchemy as sa

    table = _tables().tables[CLAIMS]
    with engine.begin() as conn:
        res = conn.execute(
            sa.update(table)
            .where(table.c.study_id == study_id, table.c.claim_key == key, table.c.owner == old)
            .values(owner=new)
        )
        return res.rowcount == 1


def release(engine: Any, study_id: int, key: str, owner: int) -> None:
    import sqlalchemy as sa

    table = _tables().tables[CLAIMS]
    with engine.begin() as conn:
        conn.execute(
            sa.delete(table).where(table.c.study_id == study_id, table.c.claim_key == key, table.c.owner == owner)
        )


def plan_claim_key(plan: dict[str, Any], dtype: Any) -> str:
    return "plan:" + hashlib.sha256(f"{dtype}|{plan_key(plan)}".encode()).hexdigest()[:40]


def claim_plan(study: Any, trial: Any, plan: dict[str, Any], dtype: Any) -> tuple[Any, TrialRecord] | None:
    """Own ``plan`` for ``trial`` (None: train it), or the finished trial of another worker that owns it
    (``(frozen trial, record)``: copy its result). While the owner's trial runs this waits; when it
    failed, or its worker died (its heartbeat stopped), the claim is taken over and None returned."""
    engine = _engine(study)
    if engine is None:
        return None
    key, me = plan_claim_key(plan, dtype), int(trial._trial_id)
    waited_since: float | None = None
    vanished = 0
    while True:
        if try_claim(engine, study._study_id, key, me):
            return None
        owner = claim_owner(engine, study._study_id, key)
        if owner == me:  # already this trial's (a claim made by an earlier attempt of the same trial)
            return None
        if owner is None:  # released between the INSERT and the SELECT: try again, a bounded number of times
            vanished += 1
            if vanished > CLAIM_RETRIES:
                log.warning("trial %d: could not claim its plan in the storage; training it", trial.number)
                return None
            time.sleep(WAIT_POLL_S * min(vanished, 4))
            continue
        frozen = _trial_of_study(study, owner)
        outcome = _owner_outcome(frozen)
        if outcome == "done":
            return frozen, TrialRecord.from_trial(frozen)
        if outcome == "gone":
            if take_over(engine, study._study_id, key, owner, me):
                return None
            vanished += 1
            if vanished > CLAIM_RETRIES:
                log.warning("trial %d: could not take over its plan's claim; training it", trial.number)
                return None
            time.sleep(WAIT_POLL_S)
            continue
        if waited_since is None:
            waited_since = time.monotonic()
            log.info(
                "trial %d: the same plan is being trained by trial %d (another worker); waiting for its result",
                trial.number,
                frozen.number,
            )
        _fail_stale(study)
        time.sleep(WAIT_POLL_S)


def _trial_of_study(study: Any, trial_id: int) -> Any:
    """The trial ``trial_id`` when it belongs to ``study`` (ids may be reused after a study is deleted)."""
    try:
        frozen = study._storage.get_trial(trial_id)
        same = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, frozen.number) == trial_id
    except KeyError:
        return None
    return frozen if same else None


def _owner_outcome(frozen: Any) -> str:
    """ "done" (a result to copy), "running" (wait for it) or "gone" (failed, missing: take the plan over)."""
    import optuna

    if frozen is None:
        return "gone"
    state = frozen.state
    if state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING):
        return "running"
    if state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
        rec = TrialRecord.from_trial(frozen)
        if rec.status in (Status.TRAINED, Status.PRUNED, Status.SCREENED_OUT) and rec.repeat_of is None:
            return "done"
    return "gone"


def _fail_stale(study: Any) -> None:
    """Fail (and queue the retry of) trials whose worker stopped sending heartbeats: Optuna does this only
    when a worker starts a trial, and a worker waiting on a dead one would otherwise wait forever."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def claim_once(study: Any, key: str) -> bool:
    """True for exactly one caller per study and key (e.g. the warm start of a new study); True without a database."""
    engine = _engine(study)
    return engine is None or try_claim(engine, study._study_id, key, 0)


def worker_slot(study: Any) -> int:
    """The lowest free worker slot of the study, claimed for this process (0 for a lone worker)."""
    engine = _engine(study)
    if engine is None:
        return 0
    for slot in range(10_000):
        if try_claim(engine, study._study_id, f"worker:{slot}", os.getpid()):
            return slot
    raise RuntimeError("no free worker slot")  # pragma: no cover


def release_slot(study: Any, slot: int) -> None:
    engine = _engine(study)
    if engine is not None:
        release(engine, study._study_id, f"worker:{slot}", os.getpid())


# --------------------------------------------------------------------------- the latency screen's cache
class ScreenCache:
    """The latency screen's results in the storage's database, shared by every worker and run.

    ``scope`` (the model's structure and the task) is part of every key: one database may hold
    studies of several models whose layers have the same names."""

    def __init__(self, storage: Any, scope: str) -> None:
        self.engine = storage_engine(storage)
        self.scope = scope
        self.local: dict[str, dict[str, Any]] = {}

    def _key(self, key: str) -> str:
        return hashlib.sha256(f"{self.scope}|{key}".encode()).hexdigest()[:40]

    def get(self, key: str) -> dict[str, Any] | None:
        if key in self.local or self.engine is None:
            return self.local.get(key)
        import sqlalchemy as sa

        table = _tables().tables[SCREEN_CACHE]
        with self.engine.connect() as conn:
            raw = conn.execute(sa.select(table.c.value).where(table.c.cache_key == self._key(key))).scalar()
        if raw is None:
            return None
        self.local[key] = json.loads(raw)
        return self.local[key]

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.local[key] = value
        if self.engine is None:
            return
        # Another worker may have measured it first: its value stays (both are valid).
        insert_if_absent(
            self.engine,
            _tables().tables[SCREEN_CACHE],
            cache_key=self._key(key),
            value=json.dumps(value, sort_keys=True),
        )


def model_scope(task: Any) -> str:
    """What a screen result depends on besides the plan: the model's structure and input shape."""
    shape = getattr(getattr(task, "example_input", None), "shape", None)
    return hashlib.sha256(f"{getattr(task, 'name', '')}|{tuple(shape or ())}|{task.model!r}".encode()).hexdigest()


__all__ = [
    "CLAIMS",
    "SCREEN_CACHE",
    "ScreenCache",
    "claim_once",
    "claim_plan",
    "create_tables",
    "model_scope",
    "plan_claim_key",
    "release_slot",
    "worker_slot",
]
