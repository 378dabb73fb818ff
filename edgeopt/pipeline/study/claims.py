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
from typing import Any

from edgeopt.pipeline.study._optuna import engine_of
from edgeopt.search.space import plan_key

CLAIMS, SCREEN_CACHE = "edgeopt_claims", "edgeopt_screen_cache"
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
    engine = engine_of(storage)
    if engine is not None:
        _tables().create_all(engine, checkfirst=True)


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


# --------------------------------------------------------------------------- the latency screen's cache
class ScreenCache:
    """The latency screen's results in the storage's database, shared by every worker and run.

    ``scope`` (the model's structure and the task) is part of every key: one database may hold
    studies of several models whose layers have the same names."""

    def __init__(self, storage: Any, scope: str) -> None:
        self.engine = engine_of(storage)
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
    "claim_owner",
    "create_tables",
    "insert_if_absent",
    "model_scope",
    "plan_claim_key",
    "release",
    "take_over",
    "try_claim",
]
