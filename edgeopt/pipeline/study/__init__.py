"""The study: one Optuna study as edgeopt opens and shares it between workers.

:func:`open_study` returns a :class:`StudyHandle` (the ``optuna.Study`` and this process's worker slot);
the handle does the claims, worker slots, the latency screen's cache and the failing of stale trials.
Every private name of Optuna that edgeopt uses lives in :mod:`edgeopt.pipeline.study._optuna`.
"""

from __future__ import annotations

from edgeopt.pipeline.study.claims import ScreenCache, model_scope
from edgeopt.pipeline.study.handle import StudyHandle
from edgeopt.pipeline.study.open import (
    SLOT_SEED_STRIDE,
    load_study,
    make_pruner,
    make_sampler,
    open_study,
)

__all__ = [
    "SLOT_SEED_STRIDE",
    "ScreenCache",
    "StudyHandle",
    "load_study",
    "make_pruner",
    "make_sampler",
    "model_scope",
    "open_study",
]
