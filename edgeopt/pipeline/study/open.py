"""Opening a study: :func:`open_study` creates or resumes it with its sampler and pruner, takes this
process's worker slot, and warm-starts a fresh one with the largest uniform-rank plans that fit the size
budget; :func:`load_study` opens the one an output directory's ``compile.json`` points at. Whenever edgeopt
opens a study, trials left RUNNING by a worker that is gone are failed
(:meth:`~edgeopt.pipeline.study.StudyHandle.fail_stale_trials`): Optuna itself does that only when a worker
starts its next trial.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeopt.errors import InputError
from edgeopt.pipeline.config import CompileConfig
from edgeopt.pipeline.storage import default_study_name, make_storage, redact, storage_url, stored_url
from edgeopt.pipeline.study.handle import StudyHandle


def load_study(recorded_storage: str, study_name: str, out: str | Path) -> Any:
    """The study an output dir's ``compile.json`` points at."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=make_storage(stored_url(recorded_storage, out)))
    StudyHandle(study).fail_stale_trials()
    return study


def _existing_trials(optuna: Any, stor: Any, study_name: str, url: str, directions: list[str]) -> int:
    """Trials already in the study (-1 when there is no such study); refuses a study made with the other objective."""
    try:
        existing = optuna.load_study(study_name=study_name, storage=stor)
    except KeyError:
        return -1
    if [d.name.lower() for d in existing.directions] != directions:
        raise InputError(
            f"study {study_name!r} in {url} was created with objective "
            f"{'pareto' if len(existing.directions) == 2 else 'score'}; "
            "rerun with the same --objective or another --study."
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
) -> StudyHandle:
    """Create or resume the study; a fresh TPE study gets the ``warm_start()`` params enqueued first
    (by exactly one worker when several start together). ``must_exist``: a missing study is an error.

    A process that will run trials (``config.trials > 0``) takes a worker slot (the handle's ``slot``;
    :meth:`StudyHandle.release_slot` when done): slot k samples with its own seed, so
    workers started together do not propose the same plans. A lone worker has slot 0 and the seed
    of ``config.seed`` plus the trials so far, as before.

    ``warm_start`` returns ``(label, Optuna params)`` pairs; it is called only for a new TPE study."""
    import optuna

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
    handle = StudyHandle(study)
    handle.fail_stale_trials()
    if config.trials > 0:
        handle.take_slot()
    study.sampler = sampler = make_sampler(config, n_existing + SLOT_SEED_STRIDE * (handle.slot or 0))
    if config.sampler == "tpe" and n_existing == 0 and warm_start is not None and handle.claim_once("warm-start"):
        for label, params in warm_start():
            study.enqueue_trial(params, user_attrs={"warm_start": label})
    for key, value in (
        ("target", target_name),
        ("task", task_name),
        ("objective", config.objective),
        ("sampler", type(sampler).__name__),
    ):
        study.set_user_attr(key, value)
    return handle


__all__ = ["SLOT_SEED_STRIDE", "load_study", "make_pruner", "make_sampler", "open_study"]
