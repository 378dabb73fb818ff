"""Where a study lives and how it is opened: the one module that knows.

The storage URL is ``--storage`` when given, else SQLite ``OUT/study.db``; the study name defaults to
``<task>-<target>``. :func:`make_storage` opens any Optuna RDB storage with heartbeats (a killed
worker's trial is marked failed) and survives workers that create a new database together.
:func:`open_study` creates or resumes the study with its sampler and pruner, and warm-starts a
fresh one with the largest uniform-rank plans that fit the size budget. Whenever edgeopt opens a study
(:func:`open_study`, :func:`load_study`), trials left RUNNING by a worker that is gone are failed
(:func:`fail_stale_trials`): Optuna itself does that only when a worker starts its next trial.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgeopt.errors import InputError, MissingDependencyError
from edgeopt.search.config import CompileConfig

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
    from edgeopt.search.config import check_out_file

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
    from edgeopt.search import shared

    _retry_races(lambda: shared.create_tables(stor), url)
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
        return _retry_races(
            lambda: optuna.storages.RDBStorage(
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


WORKER_ENV = "EDGEOPT_WORKER_OF"  # set by --workers in the worker processes it starts (edgeopt.search.workers)


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


def load_study(recorded_storage: str, study_name: str, out: str | Path) -> Any:
    """The study an output dir's ``compile.json`` points at."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=make_storage(stored_url(recorded_storage, out)))
    fail_stale_trials(study)
    return study


# --------------------------------------------------------------------------- trials of workers that are gone
def grace_period_s(stor: Any) -> int | None:
    """Seconds without a heartbeat after which a RUNNING trial's worker counts as gone (None: no heartbeats)."""
    backend = getattr(stor, "_backend", stor)  # a study's storage is Optuna's cache in front of the RDB one
    interval = getattr(backend, "heartbeat_interval", None)
    if not interval:
        return None
    return getattr(backend, "grace_period", None) or 2 * interval


def fail_stale_trials(study: Any) -> list[int]:
    """Fail the study's RUNNING trials whose worker is gone, and queue each again once (the storage's
    retry callback, as Optuna does); returns their numbers.

    Gone: the trial's last heartbeat is older than the grace period (:data:`HEARTBEAT_S` x 3) -- a worker
    killed with SIGKILL, or on a machine that went down -- or it has no heartbeat at all (its process
    died between creating the trial and the first heartbeat, or ran without heartbeats) and started longer
    ago than the grace period. Optuna fails stale trials only when a worker starts a trial, so a study whose
    workers have all finished kept them RUNNING for ever; edgeopt calls this whenever it opens a study."""
    import optuna

    stor, grace = study._storage, grace_period_s(study._storage)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if grace is None or not running or not hasattr(stor, "_get_stale_trial_ids"):
        return []
    stale = set(stor._get_stale_trial_ids(study._study_id))
    silent = _without_heartbeat(
        getattr(stor, "_backend", stor), [t._trial_id for t in running if t._trial_id not in stale]
    )
    now = datetime.datetime.now()  # the clock Optuna's datetime_start is written with
    gone = [(t, f"its worker is gone: no heartbeat for over {grace} s") for t in running if t._trial_id in stale]
    gone += [
        (t, f"its worker is gone: no heartbeat at all, started over {grace} s ago")
        for t in running
        if t._trial_id in silent and t.datetime_start is not None and (now - t.datetime_start).total_seconds() > grace
    ]
    failed = fail_trials(study, gone, retry=True)
    if failed:
        log.warning(
            "study %s: failed %d trial(s) left running by a worker that is gone (no heartbeat for over "
            "%d s): %s; each is queued again once",
            study.study_name,
            len(failed),
            grace,
            ", ".join(f"#{n}" for n in failed),
        )
    return failed


def _without_heartbeat(stor: Any, trial_ids: list[int]) -> set[int]:
    """Those of ``trial_ids`` with no heartbeat record (Optuna's RDB tables; none known if they cannot be read)."""
    if not trial_ids:
        return set()
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        hb = models.TrialHeartbeatModel
        with _create_scoped_session(stor.scoped_session) as session:
            have = {tid for (tid,) in session.query(hb.trial_id).filter(hb.trial_id.in_(trial_ids))}
    except Exception as exc:  # another Optuna's private layout: only stale heartbeats count
        log.debug("heartbeat records not readable (%s): trials without one are left alone", exc)
        return set()
    return set(trial_ids) - have


def fail_trials(study: Any, trials: list[tuple[Any, str]], *, retry: bool) -> list[int]:
    """Set each RUNNING ``(trial, reason)`` to FAIL with the reason (system attribute ``fail_reason``); with
    ``retry``, the storage's stale-trial callback queues it again (at most once). A trial another process
    finished or failed first is skipped. Returns the numbers failed here."""
    import optuna

    stor, failed = study._storage, []
    callback = stor.get_heartbeat_stale_trial_callback() if retry else None
    for t, reason in trials:
        try:
            stor.set_trial_system_attr(t._trial_id, "fail_reason", reason)  # only while it is RUNNING
            if not stor.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        failed.append(t.number)
        if callback is not None:
            frozen = copy.deepcopy(stor.get_trial(t._trial_id))
            frozen.system_attrs.pop("fail_reason", None)  # the retry is a fresh trial, not a failed one
            callback(study, frozen)
    return failed


# --------------------------------------------------------------------------- creating the study
def _existing_trials(optuna: Any, stor: Any, study_name: str, url: str, directions: list[str]) -> int:
    """Trials already in the study (-1 when there is no such study); refuses a study made with the other objective."""
    try:
        existing = optuna.load_study(study_name=study_name, storage=stor)
    except KeyError:
        return -1
    if [d.name.lower() for d in existing.directions] != directions:
        raise InputError(
            f"study {study_name!r} in {url} was created with objective "
            f"{'pareto' if len(existing.directions) == 2 else 'f1'}; rerun with the same --objective or another --study."
        )
    return len(existing.trials)


def make_sampler(config: CompileConfig, n_existing: int) -> Any:
    """TPE (multivariate, grouped) or Optuna's RandomSampler, seeded by the config's seed and the trials so far."""
    import optuna

    if config.sampler == "tpe":
        # Constraint values reach TPE through Trial.set_constraint (Optuna >= 5), so it learns
        # where the feasible region is; group=True keeps the conditional rank parameters together.
        # The warm start stands in for most of TPE's random start-up trials.
        return optuna.samplers.TPESampler(
            seed=config.seed + n_existing, multivariate=True, group=True, n_startup_trials=4
        )
    return optuna.samplers.RandomSampler(seed=config.seed + n_existing)


def make_pruner(config: CompileConfig) -> Any:
    """Prune only the clearly hopeless: below the best 75% at the same epoch, after half the epochs.

    A low-rank layer initialized by SVD starts far below the teacher and recovers within a few epochs
    of distillation: a trial is judged only after that warm-up."""
    import optuna

    return optuna.pruners.PercentilePruner(75.0, n_startup_trials=5, n_warmup_steps=max(1, config.trial_epochs // 2))


SLOT_SEED_STRIDE = 100_003  # worker slot k samples with seed + trials so far + k * stride


def open_study(
    config: CompileConfig,
    *,
    task_name: str,
    target_name: str,
    warm_start: Callable[[], list[tuple[str, dict[str, Any]]]] | None = None,
    must_exist: bool = False,
) -> Any:
    """Create or resume the study; a fresh TPE study gets the ``warm_start()`` params enqueued first
    (by exactly one worker when several start together). ``must_exist``: a missing study is an error.

    A process that will run trials (``config.trials > 0``) takes a worker slot (``study.edgeopt_slot``;
    :func:`edgeopt.search.shared.release_slot` when done): slot k samples with its own seed, so
    workers started together do not propose the same plans. A lone worker has slot 0 and the seed
    of ``config.seed`` plus the trials so far, as before.

    ``warm_start`` returns ``(label, Optuna params)`` pairs; it is called only for a new TPE study."""
    import optuna

    from edgeopt.search import shared

    url = storage_url(config.storage, config.out)
    study_name = config.study_name or default_study_name(task_name, target_name)
    stor = make_storage(url)
    n_existing = _existing_trials(optuna, stor, study_name, url, config.directions)
    if must_exist and n_existing < 0:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(stor, include_best_trial=False))
        raise InputError(
            f"study {study_name!r} not found in {redact(url)} (studies there: "
            f"{', '.join(names) or 'none'}); give --study NAME of the search to ship"
        )
    n_existing = max(0, n_existing)
    study = optuna.create_study(
        study_name=study_name,
        storage=stor,
        directions=config.directions,
        sampler=optuna.samplers.RandomSampler(seed=config.seed),
        pruner=make_pruner(config),
        load_if_exists=True,
    )
    fail_stale_trials(study)
    study.edgeopt_slot = shared.worker_slot(study) if config.trials > 0 else None
    study.sampler = sampler = make_sampler(config, n_existing + SLOT_SEED_STRIDE * (study.edgeopt_slot or 0))
    if (
        config.sampler == "tpe"
        and n_existing == 0
        and warm_start is not None
        and shared.claim_once(study, "warm-start")
    ):
        for label, params in warm_start():
            study.enqueue_trial(params, user_attrs={"warm_start": label})
    for key, value in (
        ("target", target_name),
        ("task", task_name),
        ("objective", config.objective),
        ("sampler", type(sampler).__name__),
    ):
        study.set_user_attr(key, value)
    return study


__all__ = [
    "DEFAULT_DB",
    "HEARTBEAT_S",
    "POSTGRES_HINT",
    "WORKER_ENV",
    "check_storage",
    "default_study_name",
    "fail_stale_trials",
    "fail_trials",
    "grace_period_s",
    "filesystem_type",
    "heartbeat_interval",
    "load_study",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "normalize_url",
    "open_study",
    "redact",
    "refuse_network_sqlite",
    "sqlite_searcher",
    "storage_url",
    "stored_url",
]
