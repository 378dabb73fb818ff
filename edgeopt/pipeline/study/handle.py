"""One Optuna study as edgeopt's workers use it: :class:`StudyHandle`.

The handle holds the study and this process's worker slot (explicit values: nothing is set on Optuna's
objects), and does what the workers of one study coordinate through its database: a slot each (so each
samples with its own seed), the one-time warm start, plan claims (a plan is trained once), the latency
screen's cache, and failing the trials of workers that are gone.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import time
import warnings
from typing import Any

from edgeopt.pipeline.record import Status, TrialRecord
from edgeopt.pipeline.study import _optuna
from edgeopt.pipeline.study.claims import ScreenCache, claim_owner, plan_claim_key, release, take_over, try_claim

log = logging.getLogger("edgeopt.compile")

WAIT_POLL_S = 0.5  # how often a worker waiting for another's trial of the same plan looks again
CLAIM_RETRIES = 20  # a claim that vanishes or cannot be taken over this often: the plan is trained anyway


class StudyHandle:
    """``study`` (an ``optuna.Study``) and ``slot``, this process's worker slot (None: it runs no trials)."""

    def __init__(self, study: Any, *, slot: int | None = None) -> None:
        self.study = study
        self.slot = slot

    @property
    def storage(self) -> Any:
        return _optuna.storage_of(self.study)

    @property
    def engine(self) -> Any:
        """The SQLAlchemy engine of the study's RDB storage (None: another storage, nothing shared)."""
        return _optuna.engine_of(self.storage)

    def trial_id(self, trial: Any) -> int:
        return _optuna.trial_id(trial)

    # ----------------------------------------------------------------------- slots and one-time work
    def take_slot(self) -> int:
        """Claim the lowest free worker slot for this process (0 for a lone worker)."""
        self.slot = 0
        if self.engine is not None:
            self.slot = next(s for s in range(10_000) if self._claim(f"worker:{s}", os.getpid()))
        return self.slot

    def release_slot(self) -> None:
        if self.slot is not None and self.engine is not None:
            release(self.engine, _optuna.study_id(self.study), f"worker:{self.slot}", os.getpid())
        self.slot = None

    def claim_once(self, key: str) -> bool:
        """True for exactly one caller per study and key (e.g. the warm start of a new study); True
        without a database."""
        return self.engine is None or self._claim(key, 0)

    def _claim(self, key: str, owner: int) -> bool:
        return try_claim(self.engine, _optuna.study_id(self.study), key, owner)

    def screen_cache(self, scope: str) -> ScreenCache:
        """The latency screen's results in the study's database, for the model ``scope`` names."""
        return ScreenCache(self.storage, scope)

    # ----------------------------------------------------------------------- plan claims
    def claim_plan(self, trial: Any, plan: dict[str, Any], dtype: Any) -> tuple[Any, TrialRecord] | None:
        """Own ``plan`` for ``trial`` (None: train it), or the finished trial of another worker that owns it
        (``(frozen trial, record)``: copy its result). While the owner's trial runs this waits; when it
        failed, or its worker died (its heartbeat stopped), the claim is taken over and None returned."""
        if self.engine is None:
            return None
        engine, sid = self.engine, _optuna.study_id(self.study)
        key, me = plan_claim_key(plan, dtype), self.trial_id(trial)
        waited_since: float | None = None
        vanished = 0
        while True:
            if try_claim(engine, sid, key, me):
                return None
            owner = claim_owner(engine, sid, key)
            if owner == me:  # already this trial's (a claim made by an earlier attempt of the same trial)
                return None
            frozen = self._trial_of_study(owner) if owner is not None else None
            outcome = "vanished" if owner is None else _owner_outcome(frozen)
            if outcome == "done":
                return frozen, TrialRecord.from_trial(frozen)
            if outcome == "gone" and take_over(engine, sid, key, owner, me):
                return None
            if outcome in ("vanished", "gone"):  # released or contended: try again, a bounded number of times
                vanished += 1
                if vanished > CLAIM_RETRIES:
                    log.warning("trial %d: could not claim its plan in the storage; training it", trial.number)
                    return None
                time.sleep(WAIT_POLL_S * (min(vanished, 4) if outcome == "vanished" else 1))
                continue
            if waited_since is None:
                waited_since = time.monotonic()
                log.info(
                    "trial %d: the same plan is being trained by trial %d (another worker); waiting for its result",
                    trial.number,
                    frozen.number,
                )
            self._fail_heartbeat_stale()  # a worker waiting on a dead one would otherwise wait forever
            time.sleep(WAIT_POLL_S)

    def _trial_of_study(self, trial_id: int) -> Any:
        """The trial ``trial_id`` when it belongs to the study (ids may be reused after a study is deleted)."""
        stor = self.storage
        try:
            frozen = stor.get_trial(trial_id)
            same = stor.get_trial_id_from_study_id_trial_number(_optuna.study_id(self.study), frozen.number)
        except KeyError:
            return None
        return frozen if same == trial_id else None

    # ----------------------------------------------------------------------- trials of workers that are gone
    def grace_period_s(self) -> int | None:
        """Seconds without a heartbeat after which a RUNNING trial's worker counts as gone (None: no heartbeats)."""
        rdb = _optuna.backend(self.storage)
        interval = rdb.get_heartbeat_interval() if hasattr(rdb, "get_heartbeat_interval") else None
        if not interval:
            return None
        return getattr(rdb, "grace_period", None) or 2 * interval

    def fail_stale_trials(self) -> list[int]:
        """Fail the study's RUNNING trials whose worker is gone, and queue each again once (the storage's
        retry callback); returns their numbers.

        Gone: the trial's last heartbeat is older than the grace period -- a worker killed with SIGKILL, or on
        a machine that went down -- or it has no heartbeat at all (its process died between creating the trial
        and the first heartbeat) and started longer ago than the grace period. Optuna fails stale trials only
        when a worker starts a trial, so a study whose workers have all finished kept them RUNNING for ever;
        edgeopt calls this whenever it opens a study."""
        import optuna

        grace = self.grace_period_s()
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if grace is None or not running:
            return []
        self._fail_heartbeat_stale()
        after = {t.number: t.state for t in self.study.get_trials(deepcopy=False)}
        failed = [t.number for t in running if after.get(t.number) == optuna.trial.TrialState.FAIL]
        # Optuna's public call skips a trial that never recorded a heartbeat: it has no record to be stale.
        silent = self._silent_since(
            grace, [t for t in running if after.get(t.number) == optuna.trial.TrialState.RUNNING]
        )
        reason = f"its worker is gone: no heartbeat at all, started over {grace} s ago"
        failed += self.fail_trials([(t, reason) for t in silent], retry=True)
        if failed:
            log.warning(
                "study %s: failed %d trial(s) left running by a worker that is gone (no heartbeat for over "
                "%d s): %s; each is queued again once",
                self.study.study_name,
                len(failed),
                grace,
                ", ".join(f"#{n}" for n in sorted(failed)),
            )
        return sorted(failed)

    def _fail_heartbeat_stale(self) -> None:
        """Optuna's public ``fail_stale_trials``: the trials whose last heartbeat is older than the grace period."""
        import optuna

        with warnings.catch_warnings():  # "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    def _silent_since(self, grace: int, running: list[Any]) -> list[Any]:
        """Those of ``running`` with no heartbeat record that started over ``grace`` s ago."""
        now = datetime.datetime.now()  # the clock Optuna's datetime_start is written with
        old = [t for t in running if t.datetime_start is not None and (now - t.datetime_start).total_seconds() > grace]
        if not old:
            return []
        try:
            beating = _optuna.with_heartbeat(self.storage, [self.trial_id(t) for t in old])
        except Exception as exc:  # another Optuna's private layout: only stale heartbeats count
            log.debug("heartbeat records not readable (%s): trials without one are left alone", exc)
            return []
        return [t for t in old if self.trial_id(t) not in beating]

    def fail_trials(self, trials: list[tuple[Any, str]], *, retry: bool) -> list[int]:
        """Set each RUNNING ``(trial, reason)`` to FAIL with the reason (system attribute ``fail_reason``); with
        ``retry``, the storage's stale-trial callback queues it again (at most once). A trial another process
        finished or failed first is skipped. Returns the numbers failed here."""
        import optuna

        stor, failed = self.storage, []
        callback = stor.get_heartbeat_stale_trial_callback() if retry else None
        for t, reason in trials:
            tid = self.trial_id(t)
            try:
                stor.set_trial_system_attr(tid, "fail_reason", reason)  # only while it is RUNNING
                if not stor.set_trial_state_values(tid, state=optuna.trial.TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            failed.append(t.number)
            if callback is not None:
                frozen = copy.deepcopy(stor.get_trial(tid))
                frozen.system_attrs.pop("fail_reason", None)  # the retry is a fresh trial, not a failed one
                callback(self.study, frozen)
        return failed


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


__all__ = ["CLAIM_RETRIES", "WAIT_POLL_S", "StudyHandle"]
