"""A SQLite study's queue of waiting trials, popped by one worker each.

Optuna pops an enqueued trial (the warm start, the seeded alternatives) by reading it WAITING and then
setting it RUNNING, relying on ``SELECT … FOR UPDATE`` to make the two one step. SQLite has no row locks
and Python's driver reads outside the write transaction, so two processes on one file can both read a
trial WAITING and both run it; the second to finish then fails on "Cannot tell a COMPLETE trial"
(``tests/search/test_compile.py::test_two_processes_share_one_study``; in runs of
``tests/search/test_storage.py``'s six threads popping 40 enqueued trials, 15 to 31 were popped twice).
Here the pop also claims the trial in ``edgeopt_claims`` (an
INSERT that only one caller's succeeds, :func:`~edgeopt.pipeline.study.claims.try_claim`), and a caller
whose claim fails is told the trial was taken, as a server database would tell it.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

from edgeopt.pipeline.study.claims import try_claim

QUEUE = 0  # the study id the pops are claimed under (Optuna's study ids start at 1)


class SqliteStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage on a SQLite file, with an atomic pop of waiting trials (module docstring)."""

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        # Trial ids are unique in the database: the claims go under study id 0, no study's.
        if state == TrialState.RUNNING and not try_claim(self.engine, QUEUE, f"run:{trial_id}", trial_id):
            return False  # another worker popped it first
        return super().set_trial_state_values(trial_id, state, values)


__all__ = ["QUEUE", "SqliteStorage"]
