"""Where a study lives: the one module that knows.

The storage URL is ``--storage`` when given, else SQLite ``OUT/study.db``; the study name defaults to
``<task>-<target>``. :func:`make_storage` opens any Optuna RDB storage with heartbeats (a killed
worker's trial is marked failed) and survives workers that create a new database together. Opening
the study itself is :mod:`edgeopt.pipeline.study`'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgeopt.errors import InputError, MissingDependencyError

DEFAULT_DB = "study.db"
log = logging.getLogger("edgeopt.compile")


def storage_url(storage: str | None, out: str | Path) -> str:
    """``storage`` when given, else the SQLite file ``study.db`` in ``out``."""
    if storage:
        return storage
    return f"sqlite:///{(Path(out) / DEFAULT_DB).resolve()}"


def stored_url(recorded: str, out: str | Path) -> str:
    """The URL from what ``compile.json`` recorded (``study.db`` stands for the file in ``out``)."""
    return storage_url(None if recorded == DEFAULT_DB else recorded, out)


def default_study_name(task_name: str, target_name: str) -> str:
    return f"{task_name}-{target_name}"


# Heartbeats: a worker records one every HEARTBEAT_S while a trial runs; a RUNNING trial without
# one for GRACE_S (3 intervals) is failed by the next worker that starts a trial, and retried once.
# EDGEOPT_HEARTBEAT_S overrides the interval (the tests kill workers with a 1 s heartbeat).
HEARTBEAT_S = 15
# A server database is shared by every worker: a small pool per process (the heartbeat thread takes
# a second connection), connections checked before use (a restarted server or a dropped idle
# connection costs one reconnect, not a failed trial) and recycled before server-side timeouts.
SERVER_ENGINE = {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2, "pool_recycle": 1800}
# Filesystems on which SQLite's locking cannot be trusted (and which other machines may mount).
NETWORK_FS = (
    "nfs",
    "nfs4",
    "cifs",
    "smb",
    "smb2",
    "smb3",
    "smbfs",
    "fuse.sshfs",
    "9p",
    "ceph",
    "glusterfs",
    "fuse.glusterfs",
    "lustre",
    "afs",
    "gpfs",
    "beegfs",
    "fuse.s3fs",
    "fuse.gcsfuse",
)
POSTGRES_HINT = 'pip install "edgeopt[postgres]"'
_STORAGES: dict[tuple[str, int], Any] = {}  # one storage (one engine, one pool) per URL per process


def heartbeat_interval() -> int:
    """Seconds between a running trial's heartbeats (``EDGEOPT_HEARTBEAT_S``, default 15)."""
    raw = os.environ.get("EDGEOPT_HEARTBEAT_S", "")
    try:
        return max(1, int(float(raw))) if raw else HEARTBEAT_S
    except ValueError:
        raise InputError(f"EDGEOPT_HEARTBEAT_S: expected a number of seconds, found {raw!r}") from None


def normalize_url(url: str) -> str:
    """``postgresql://`` (and ``postgres://``) means psycopg 3, not SQLAlchemy's default psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _check_driver(url: str) -> None:
    """A PostgreSQL URL without psycopg installed is one line naming the extra (exit 2)."""
    if url.startswith("postgresql+psycopg://"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                f"storage {redact(url)} needs the PostgreSQL driver psycopg 3, which is not installed: {POSTGRES_HINT}"
            ) from None
    elif url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        refuse_network_sqlite(Path(url[len("sqlite:///") :]))


def refuse_network_sqlite(db: Path, mounts: str = "/proc/mounts") -> None:
    """SQLite on a network filesystem is refused: other machines may open it, and its file locks
    (what keeps two writers apart) are not reliable there (SQLite's and Optuna's documentation)."""
    fstype = filesystem_type(db, mounts)
    if fstype is not None and (fstype in NETWORK_FS or fstype.startswith(("nfs", "fuse.sshfs"))):
        raise InputError(
            f"storage sqlite:///{db}: the file is on a {fstype} network filesystem; SQLite's locking is not "
            "reliable there and workers on other machines would corrupt the study. Use a server database "
            "(--storage postgresql://USER@HOST/DB) for several machines, or --workers N on one machine "
            "with the study on a local disk."
        )


def filesystem_type(path: Path, mounts: str = "/proc/mounts") -> str | None:
    """The type of the filesystem ``path`` is on (the longest mount point above it), None if unknown."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    p = Path(os.path.abspath(path))
    best: tuple[int, str] | None = None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = p == Path(point) or Path(point) in p.parents
        if inside and (best is None or len(point) > best[0]):
            best = (len(point), parts[2])
    return best[1] if best else None


def check_storage(url: str, where: str, key: str) -> None:
    """A storage URL checked without opening it (the CLI, before the task is loaded): SQLAlchemy parses it
    and has its dialect, its driver is installed, and a new SQLite file can be created where it points."""
    from edgeopt.pipeline.config import check_out_file

    norm = normalize_url(url)
    try:
        import sqlalchemy

        sqlalchemy.engine.make_url(norm).get_dialect()
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{where}: {key}: expected a database URL (sqlite:///FILE, postgresql://USER@HOST/DB), "
            f"found {redact(url)!r} ({detail})"
        ) from None
    _check_driver(norm)
    prefix = "sqlite:///"
    if norm.startswith(prefix) and norm != "sqlite:///:memory:" and not Path(norm[len(prefix) :]).exists():
        check_out_file(norm[len(prefix) :], where, key)


def make_storage(url: str) -> Any:
    """An Optuna RDB storage with heartbeats, so a killed worker's trial is marked failed (and retried
    once) instead of left running; one per URL per process. Missing drivers and SQLite on a network
    filesystem are refused with the reason."""
    url = normalize_url(url)
    hb = heartbeat_interval()
    cached = _STORAGES.get((url, hb))
    if cached is not None and _still_there(url):
        return cached
    _check_driver(url)
    stor = _open_storage(url, hb)
    from edgeopt.pipeline.study.claims import create_tables

    _retry_races(lambda: create_tables(stor), url)
    _STORAGES[(url, hb)] = stor
    return stor


def _still_there(url: str) -> bool:
    """A cached SQLite storage whose file was deleted would silently start an empty database."""
    prefix = "sqlite:///"
    return not url.startswith(prefix) or url == "sqlite:///:memory:" or Path(url[len(prefix) :]).exists()


def _open_storage(url: str, hb: int) -> Any:
    import optuna

    if url.startswith("sqlite"):
        # Several processes on one SQLite file wait for the write lock instead of failing at once.
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}, "pool_pre_ping": True}
    else:
        engine_kwargs = dict(SERVER_ENGINE)
    with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        if url.startswith("sqlite"):  # its waiting trials popped by one worker each (no row locks)
            from edgeopt.pipeline.study.sqlite_queue import SqliteStorage as storage_class
        else:
            storage_class = optuna.storages.RDBStorage
        return _retry_races(
            lambda: storage_class(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=hb,
                grace_period=3 * hb,
                heartbeat_stale_trial_callback=retry,
            ),
            url,
        )


def _retry_races(make: Callable[[], Any], url: str) -> Any:
    """Workers started together on a new database race to create its tables (seen here: "table
    studies already exists", "UNIQUE constraint failed: alembic_version"). For a SQLite file a lock
    file beside it serializes the creation; for a server database the loser retries and then finds
    the tables there."""
    races = ("already exists", "UNIQUE constraint", "duplicate key", "database is locked", "pg_type_typname")
    with _sqlite_creation_lock(url):
        for attempt in range(8):
            try:
                return make()
            except Exception as exc:
                if any(r in str(exc) for r in races) and attempt < 7:
                    time.sleep(0.25 * (attempt + 1))
                    continue
                raise InputError(
                    f"cannot open storage {redact(url)}: {type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                ) from None
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def _sqlite_creation_lock(url: str) -> Iterator[None]:
    """An exclusive lock on ``<db>.lock`` while a SQLite study database is opened (POSIX only)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == "sqlite:///:memory:":
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: fall back to the retries
        yield
        return
    lock_path = Path(url[len(prefix) :] + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a")  # noqa: SIM115 - held across the yield, closed in the finally below
    except OSError:
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


WORKER_ENV = "EDGEOPT_WORKER_OF"  # set by --workers in the worker processes it starts (edgeopt.pipeline.workers)


@contextlib.contextmanager
def sqlite_searcher(url: str) -> Iterator[None]:
    """While a process searches a SQLite study, it holds ``<db>.search.lock``; a second process on the
    same file (not one of ``--workers``) is warned: SQLite serializes every write and has no row locks,
    so on one machine ``--workers N`` is the way (it coordinates its workers), and a server database
    for several machines."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == "sqlite:///:memory:" or os.environ.get(WORKER_ENV):
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(url[len(prefix) :] + ".search.lock")
    try:
        handle = open(path, "a")  # noqa: SIM115 - held across the yield, closed in the finally below
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.warning(
                "another process is searching %s: several processes on one SQLite file wait for each "
                "other's writes; on one machine use --workers N, on several a PostgreSQL --storage",
                url[len(prefix) :],
            )
        yield
    finally:
        handle.close()


__all__ = [
    "DEFAULT_DB",
    "HEARTBEAT_S",
    "POSTGRES_HINT",
    "WORKER_ENV",
    "check_storage",
    "default_study_name",
    "filesystem_type",
    "heartbeat_interval",
    "make_storage",
    "normalize_url",
    "redact",
    "refuse_network_sqlite",
    "sqlite_searcher",
    "storage_url",
    "stored_url",
]
