"""``compile()``: the compile loop, as its stages in order.

1. :mod:`~edgeopt.pipeline.config` — the settings, validated (:class:`CompileConfig`).
2. :mod:`~edgeopt.pipeline.prepare` — layers, rank caps, search space; the baseline measured.
3. :mod:`~edgeopt.pipeline.storage` — the study: where it lives, sampler, pruner, warm start.
4. :mod:`~edgeopt.pipeline.objective` — each trial: plan → screen → distill → record
   (:mod:`~edgeopt.pipeline.record`), run by :mod:`~edgeopt.pipeline.progress`.
5. :mod:`~edgeopt.pipeline.select` — finalists re-measured; the dense model when nothing beats it.
6. :mod:`~edgeopt.pipeline.ship` — fine-tune, export, quantize, measure, gate, write the artifact.
7. :mod:`~edgeopt.report` — ``report.json``/``.md``/``.html`` and plots.

The test split is used only in stage 6, on the files that ship. See ``docs/architecture.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeopt import report as report_mod
from edgeopt._deps import require_compile_stack
from edgeopt.errors import InputError
from edgeopt.pipeline import config_file
from edgeopt.pipeline.config import (
    FINAL_EPOCHS,
    SCREEN_BENCH,
    TIME_SPLIT,
    TRIAL_EPOCHS,
    CompileConfig,
)
from edgeopt.pipeline.finalists import FinalistTimer
from edgeopt.pipeline.objective import Objective
from edgeopt.pipeline.prepare import SearchInputs, prepare
from edgeopt.pipeline.progress import ThirdPartyWarnings, run_search
from edgeopt.pipeline.record import MIB, Status, TrialRecord, records
from edgeopt.pipeline.screen import Screen
from edgeopt.pipeline.select import select
from edgeopt.pipeline.ship import Shipped, gate_outcome, ship, write_state
from edgeopt.pipeline.state import compile_state
from edgeopt.pipeline.storage import make_storage, sqlite_searcher, storage_url
from edgeopt.pipeline.study import StudyHandle, model_scope, open_study

log = logging.getLogger("edgeopt.compile")

__all__ = ["FINAL_EPOCHS", "MIB", "TRIAL_EPOCHS", "CompileConfig", "CompileResult", "compile", "make_storage"]


@dataclass
class CompileResult:
    """What ``compile`` produced: where the artifact is, whether it met the budgets, and the report."""

    out: Path
    passed: bool
    best_plan: dict[str, Any]
    report: dict[str, Any]
    model_path: Path
    reasons: list[str] = field(default_factory=list)
    search_only: bool = False  # a worker's search: nothing shipped, ``report`` holds only ``search``
    inconclusive: bool = False  # the final gate could not decide a budget, and no check failed

    @property
    def exit_code(self) -> int:
        """0 every budget met, 1 one is not, 3 the final gate could not decide (as ``edgeopt gate``)."""
        if self.passed or self.search_only:
            return 0
        return 3 if self.inconclusive else 1


def compile(  # noqa: A001 - the verb of the public API (docs/architecture.md); shadows the builtin only here
    task: Any, target: Any, config: CompileConfig | None = None, **settings: Any
) -> CompileResult:
    """Search per-layer formats and ranks for ``task`` under ``target``'s budgets and ship the best.

    ``task`` is an :class:`edgeopt.Task`; ``target`` a ``Target`` or the name/path of a profile; ``config``
    a :class:`~edgeopt.pipeline.config.CompileConfig`, or its settings as keywords (``trials=3, out="runs/x"``,
    documented there). Re-running with the same ``out`` resumes the study; the resolved settings are written
    to ``out/compile.toml``. ``CompileResult.passed`` is True when the shipped artifact meets every budget.

    Many workers: every process calls this with the same ``storage`` and ``study_name`` (and
    ``search_only=True``), one more ships with ``trials=0``; see :mod:`edgeopt.pipeline.workers`.
    """
    if config is None:
        config = CompileConfig(**settings)
    elif not isinstance(config, CompileConfig):
        raise InputError(f"compile(): config: expected an edgeopt CompileConfig, found {type(config).__name__}")
    elif settings:
        raise InputError("compile(): config: expected either config= or the keyword settings, found both")
    require_compile_stack()
    from edgeopt.pipeline.task import Task

    if not isinstance(task, Task):
        raise InputError(f"compile(): task: expected an edgeopt.Task, found {type(task).__name__}")
    from edgeopt.runtime.targets import resolve_target

    # the one resolution the CLI uses too: a target it already resolved comes back unchanged
    target = resolve_target(target, **config.budget.overrides())
    with _compile_session(config):
        config_file.write(config.out / config_file.FILE_NAME, config)
        try:
            return _compile(task, target, config)
        finally:
            if not config.search_only:  # shipped, refused or failed: the kept students go (decision 0114)
                from edgeopt.pipeline import students

                students.clear(config.out)


def _compile(task: Any, target: Any, config: CompileConfig) -> CompileResult:
    """The stages, in order."""
    t_start = time.perf_counter()
    url = storage_url(config.storage, config.out)
    make_storage(url)  # a missing driver or a refused storage is said before the baseline is measured
    with sqlite_searcher(url) if config.trials > 0 else contextlib.nullcontext():
        # A worker measures the baseline quickly: it only scales the tie-break; the run that ships measures it fully.
        inputs = prepare(task, target, replace(config, final_bench=SCREEN_BENCH) if config.search_only else config)
        warm = (lambda: inputs.strategy.warm_start(inputs.fits_size)) if inputs.space else None
        # Shipping another run's search (--trials 0 with --storage): the study must be there.
        handle = open_study(
            config,
            task_name=task.name,
            target_name=target.name,
            warm_start=warm,
            must_exist=config.trials == 0 and config.storage is not None,
        )
        study = handle.study
        _check_study_matches(study, task.name, target.name)
        screen = Screen(task, target, handle.screen_cache(model_scope(task)))
        deadline = _deadline(config, t_start, "search")
        extra = _seed_alternatives(inputs, config, handle)
        searched = replace(config, trials=config.trials + extra)
        search_wall = _search(inputs, searched, handle, screen, deadline) if inputs.space else 0.0
    if config.search_only:
        return _searched(config, study, search_wall)
    t0 = time.perf_counter()
    recs = records(study)
    remeasure = _remeasure(inputs, screen, config) if inputs.space else None
    choice = select(recs, inputs.baseline, target.budget, config.f1_tolerance, remeasure)
    finalists_s = time.perf_counter() - t0
    if choice.decision.get("shipped") == "refused":
        _refuse_after_search(config.out, choice, target, recs, time.perf_counter() - t_start)
    final = _final_config(config, recs, t_start, choice.record)
    shipped = ship(
        inputs.teacher,
        choice.record,
        task,
        target,
        final,
        measured_before=choice.decision,
        planned_epochs=config.final_epochs,
    )
    state = compile_state(
        inputs,
        config,
        study,
        choice,
        shipped,
        search_wall=search_wall,
        finalists_s=finalists_s,
        wall_s=time.perf_counter() - t_start,
    )
    state["alternatives"] = _alternatives_table(study, task, config.out)
    if shipped.measured.repeated():
        state["release_tries"] = shipped.measured.tries
        choice.notes.append(shipped.measured.repeated())
    write_state(config.out, state)
    rep = report_mod.write_report(config.out, study=study, state=state)
    return _result(config.out, rep, shipped, choice.notes)


def _search(
    inputs: SearchInputs, config: CompileConfig, handle: StudyHandle, screen: Screen, deadline: float | None = None
) -> float:
    """This process's trials, or (``workers`` > 1) those of local worker processes on the study."""
    from edgeopt.pipeline import workers

    study = handle.study
    stop = workers.stop_at_total()
    try:
        if config.workers > 1:
            return workers.run_workers(config, study, inputs.task.metric_name)
        return run_search(
            study,
            workers.Tagged(Objective(inputs, config, study, screen)),
            trials=config.trials,
            timeout=config.timeout,
            metric_name=inputs.task.metric_name,
            progress=config.progress,
            callbacks=(*((stop,) if stop else ()), inputs.strategy.after_trial),
            deadline=deadline,
        )
    finally:
        handle.release_slot()


def _seed_alternatives(inputs: SearchInputs, config: CompileConfig, handle: StudyHandle) -> int:
    """Seed the alternatives as trials of the study; returns how many run on top of ``--trials``. Workers
    that start together seed them once: the one that claims them enqueues them and runs them on top of its
    ``--trials``; the others take what Optuna hands them within their own."""
    from edgeopt.search import alternatives

    if not inputs.space or config.trials == 0 or config.no_alternatives:
        return 0
    if not handle.claim_once("alternatives"):
        return 0
    alts = inputs.strategy.alternatives()
    extra = alternatives.seed(handle.study, alts, config.trials)
    if extra:
        labels = ", ".join(a.label for a in alts)
        log.info("alternatives: %d trial(s) on top of --trials %d: %s", extra, config.trials, labels)
    return extra


def _alternatives_table(study: Any, task: Any, out: Path) -> list[dict[str, Any]]:
    """The alternatives beside the shipped artifact, their kept files scored on the test split."""
    from edgeopt.pipeline.evaluate import onnx_metrics
    from edgeopt.search import alternatives

    if task.X_test is None:
        return alternatives.rows(study, out, lambda path: None)
    return alternatives.rows(study, out, lambda path: onnx_metrics(path, task.X_test, task.y_test, task.metric))


def _deadline(config: CompileConfig, t_start: float, stage: str) -> float | None:
    """The ``perf_counter`` time by which ``stage`` of the time budget ends (None: no time budget)."""
    if config.time_budget_s is None:
        return None
    end = t_start + TIME_SPLIT[stage] * config.time_budget_s
    if stage == "search" and time.perf_counter() >= end:
        log.warning(
            "time budget: %.0f s spent before the search (tables, baseline); no trial runs",
            time.perf_counter() - t_start,
        )
    return end


def _final_config(
    config: CompileConfig, recs: list[TrialRecord], t_start: float, chosen: TrialRecord | None = None
) -> CompileConfig:
    """The config the chosen plan is fine-tuned with: under a time budget, ``final_epochs`` is cut to
    what is left of it (less the export/bench reserve) at the chosen trial's own seconds per epoch (the
    trials' median when it has none: dense, a repeat). The median alone ran over: mobilenet's chosen plan,
    one of its widest, trained at 7.0 s an epoch against the median's 5.4, and the compile took 605 s."""
    if config.time_budget_s is None or config.final_epochs == 0:
        return config
    per_epoch = [
        r.timings["distill"] / config.trial_epochs
        for r in recs
        if r.status is Status.TRAINED and r.timings.get("distill")
    ]
    own = chosen.timings.get("distill") if chosen is not None and chosen.status is Status.TRAINED else None
    if not per_epoch and not own:
        return config
    seconds = own / config.trial_epochs if own else statistics.median(per_epoch)
    left = t_start + (1 - TIME_SPLIT["ship_reserve"]) * config.time_budget_s - time.perf_counter()
    epochs = max(1, min(config.final_epochs, int(left / seconds)))
    if epochs < config.final_epochs:
        log.info(
            "time budget: %.0f s left, the final fine-tune runs %d epochs (of %d)", left, epochs, config.final_epochs
        )
    return replace(config, final_epochs=epochs)


def _check_study_matches(study: Any, task_name: str, target_name: str) -> None:
    """A study searched for another task or target is shipped with a warning (the names may differ on purpose)."""
    for key, mine in (("task", task_name), ("target", target_name)):
        theirs = study.user_attrs.get(f"searched_{key}")
        if theirs is None:
            study.set_user_attr(f"searched_{key}", mine)
        elif theirs != mine:
            log.warning("study %s was searched for %s %r, this run is for %r", study.study_name, key, theirs, mine)


def _refuse_after_search(out: Path, choice: Any, target: Any, recs: list[TrialRecord], wall_s: float) -> None:
    """The budget refused once the search is done (:func:`~edgeopt.pipeline.select.select`: no finalist
    confirmed within it, dense over it): ``report.json``/``.md`` say why, with the finalists; nothing ships
    and the study stays. Raises :class:`~edgeopt.errors.BudgetNotConfirmed` (exit code 3: the measurements
    cannot decide the budget, as a gate that cannot decide)."""
    import json

    from edgeopt._io import atomic_write_text
    from edgeopt.errors import BudgetNotConfirmed

    why = choice.decision["why"]
    rows = [{k: v for k, v in r.items() if k != "samples_ms"} for r in choice.finalists]
    rep = {
        "schema": "edgeopt.report/refused",
        "refused": why,
        "target": target.name,
        "budget": {"latency_ms": target.budget.latency_ms, "model_size_mb": target.budget.model_size_mb},
        "confirmable_ms": choice.decision.get("confirmable_ms"),
        "trials": len(recs),
        "feasible": sum(1 for r in recs if r.feasible),
        "finalists": rows,
        "wall_s": round(wall_s, 1),
    }
    atomic_write_text(out / "report.json", json.dumps(rep, indent=1, default=str))
    table = "\n".join(
        f"| {r['trial']} | {r['val_score']:.4f} | {r['latency_p50_ms']:.4f} | {r['latency_ms']:.4f} | "
        f"{r.get('latency_bound_ms', r['latency_ms']):.4f} |"
        for r in rows
    )
    atomic_write_text(
        out / "report.md",
        f"# edgeopt: budget refused after the search\n\n{why}.\n\nNothing was shipped; the study "
        f"({len(recs)} trials, {rep['feasible']} feasible by the screen) is kept.\n\n"
        f"| finalist | val score | p50 ms | p95 ms | upper bound ms |\n|---|---|---|---|---|\n{table}\n",
    )
    raise BudgetNotConfirmed(f"refused: {why}")


def _searched(config: CompileConfig, study: Any, search_wall: float) -> CompileResult:
    """A worker's result (``search_only``): the study so far, nothing shipped."""
    recs = records(study)
    mine = sum(1 for r in recs if r.worker is not None and r.worker.endswith(f":{os.getpid()}"))
    feasible = [r for r in recs if r.feasible]
    best = max(feasible, key=lambda r: r.score or 0.0, default=None)
    summary = {
        "study": study.study_name,
        "trials": len(recs),
        "this_worker": mine,
        "feasible": len(feasible),
        "workers": len({r.worker for r in recs if r.worker}),
        "search_wall_s": round(search_wall, 2),
        "best": None if best is None else {"trial": best.number, "plan": best.plan, "val": best.val},
    }
    return CompileResult(
        out=config.out,
        passed=False,
        best_plan=best.plan if best else {},
        report={"search": summary},
        model_path=config.out / "model.onnx",
        search_only=True,
    )


@contextlib.contextmanager
def _compile_session(config: CompileConfig) -> Iterator[None]:
    """The out dir, quiet Optuna, the seed, and one torch thread for the duration of the compile."""
    import optuna
    import torch

    if config.out.exists() and not config.out.is_dir():
        raise InputError(f"compile(): out: expected a directory, found the file {str(config.out)!r}")
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "plots").mkdir(exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    torch.manual_seed(config.seed)
    # Students are small: one torch thread trains them as fast as two, and leaves the other core
    # to the latency measurements instead of fighting them for it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThirdPartyWarnings(
            "the compile"
        ):  # onnxruntime's quantizer, once each at the end (the CLI's outer one counts)
            yield
    finally:
        torch.set_num_threads(threads)


def _remeasure(inputs: SearchInputs, screen: Screen, config: CompileConfig) -> Any:
    """Finalists measured again side by side (:class:`~edgeopt.pipeline.finalists.FinalistTimer`), each as
    long in all as the release measurement will be (``config.artifact_bench()``)."""
    return FinalistTimer(inputs, screen, config.artifact_bench())


def _result(out: Path, rep: dict[str, Any], shipped: Shipped, notes: list[str]) -> CompileResult:
    verdict, reasons = gate_outcome(rep["best"]["budget"])
    return CompileResult(
        out=out,
        passed=bool(rep["best"]["budget"]["passed"]),
        inconclusive=verdict == "inconclusive",
        best_plan=shipped.plan,
        report=rep,
        model_path=shipped.path,
        reasons=reasons + notes,
    )
