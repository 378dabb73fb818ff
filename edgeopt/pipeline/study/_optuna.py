"""Every private name of Optuna that edgeopt reaches for, in this one file.

Optuna has no public way to get a study's storage and ids, the SQLAlchemy engine under its cache, or
whether a trial ever recorded a heartbeat. Each use is one small function here, checked against
:data:`CHECKED_AGAINST` by ``tests/search/test_optuna_privates.py``: an Optuna upgrade fails there, first.
"""

from __future__ import annotations

from typing import Any

CHECKED_AGAINST = "5.1.0"  # the Optuna version whose private layout these functions were read from


def storage_of(study: Any) -> Any:
    """The study's storage (an RDB storage sits behind Optuna's ``_CachedStorage``)."""
    return study._storage


def study_id(study: Any) -> int:
    return int(study._study_id)


def trial_id(trial: Any) -> int:
    """A ``Trial``'s or ``FrozenTrial``'s id in the storage (its number counts within the study only)."""
    return int(trial._trial_id)


def backend(storage: Any) -> Any:
    """The storage under Optuna's cache (``_CachedStorage._backend``), else ``storage`` itself."""
    return getattr(storage, "_backend", storage)


def engine_of(storage: Any) -> Any:
    """The SQLAlchemy engine of an RDB storage (cached or not), None for any other storage."""
    return getattr(backend(storage), "engine", None)


def with_heartbeat(storage: Any, trial_ids: list[int]) -> set[int]:
    """Those of ``trial_ids`` that have a heartbeat record in the RDB storage's table."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    hb = models.TrialHeartbeatModel
    with _create_scoped_session(backend(storage).scoped_session) as session:
        return {int(tid) for (tid,) in session.query(hb.trial_id).filter(hb.trial_id.in_(trial_ids))}


__all__ = ["CHECKED_AGAINST", "backend", "engine_of", "storage_of", "study_id", "trial_id", "with_heartbeat"]
