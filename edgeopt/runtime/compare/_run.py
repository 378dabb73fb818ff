"""The run of ``gate --against``: :func:`compare`, its looks and the sequential stopping rule."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.runtime.checks import FAIL, Check
from edgeopt.runtime.compare._assemble import _comparison
from edgeopt.runtime.compare._design import (
    ALPHA_SHARES,
    DEFAULT_MAX_TIME_S,
    FRESH_PAIRS,
    LOOKS,
    Tolerances,
    look_confidence,
    pair_ratios,
)
from edgeopt.runtime.compare._plan import _Plan, _plan, run_blocks
from edgeopt.runtime.compare._result import Comparison
from edgeopt.runtime.settings import BenchSettings
from edgeopt.runtime.targets import Target

log = logging.getLogger("edgeopt.gate")
# Why a sequential run stopped (``method["sequential"]["stopped"]``).
STOP_DECIDED, STOP_FAILED, STOP_CAP, STOP_LAST = "decided", "check failed", "time cap", "last look"


def compare(
    new: str | os.PathLike[str],
    old: str | os.PathLike[str],
    target: Target | str = "host",
    *,
    confidence: float = 0.95,
    tolerances: Tolerances | None = None,
    settings: BenchSettings | None = None,
    pairs: int | None = None,
    max_time_s: float = DEFAULT_MAX_TIME_S,
    shapes: Sequence[str] | Mapping[str, Sequence[int]] | None = None,
    on_device: bool | None = None,
    agreement_samples: int | None = None,
    **tolerance_kwargs: Any,
) -> Comparison:
    """Measure ``new`` against ``old`` on ``target`` in one interleaved run and compare them.

    Parameters
    ----------
    new, old : the two .onnx files; their inputs and outputs must match (else InputError).
    target : a Target, a built-in name or a profile path. Off the target, latency is predicted.
    confidence : of each one-sided bound on the ratios (default 0.95), whatever the stopping look.
    tolerances : a Tolerances; or its fields as keywords (``max_slowdown="5%"``, ``atol=1e-3``, ...).
    settings : how long to measure, per model, split over the first look's pairs (sequential: 10, so
        0.2 s blocks with the gate's ``GATE_SETTINGS``: 2 s and 200 runs) or over ``pairs``.
    pairs : None (default): sequential, pairs are added until the latency checks are decided or
        ``max_time_s`` is reached (module docstring). An int (>= MIN_PAIRS): exactly that many, one look.
    max_time_s : the sequential run's time cap in seconds, from the call (default 60).
    agreement_samples : generated feeds for the output agreement (default ``agreement.DEFAULT_SAMPLES``).

    Raises InputError (bad input, different signatures), ModelError, TargetError.
    """
    from edgeopt.runtime import bench

    started = time.monotonic()
    tol = replace(tolerances, **tolerance_kwargs) if tolerances is not None else Tolerances(**tolerance_kwargs)
    plan = _plan(target, confidence, tol, settings, pairs, max_time_s, shapes, on_device)
    infos = bench.model_info(new), bench.model_info(old)
    agree = _agreement(new, old, plan, agreement_samples)
    jobs = [_job(p, plan) for p in (new, old)]
    look = _Look(plan, (str(new), str(old)), infos, jobs, agree)
    fresh = look.fresh_blocks()
    if plan.sequential:
        log.info(
            "measuring NEW and OLD in counterbalanced pairs of %.2g s blocks until decided, at most %g s",
            plan.block.min_time_s,
            plan.max_time_s,
        )
        return _sequential(look, started, fresh)
    log.info("measuring NEW and OLD in %d counterbalanced pairs of %.2g s blocks", plan.pairs, plan.block.min_time_s)
    outs = run_blocks(
        jobs[0], jobs[1], plan.pairs, backend=plan.backend, timeout_s=plan.block.timeout_s, in_process=plan.in_process
    )
    return look(outs, plan.confidence, fresh)


def _agreement(new: Any, old: Any, plan: _Plan, samples: int | None) -> dict[str, Any]:
    """Output agreement, first: different signatures are bad input, found before any timing."""
    from edgeopt.runtime import agreement

    return agreement.compare_outputs(
        new,
        old,
        plan.target.runtime.with_threads(plan.threads),
        batch=int(plan.total.batch),
        shapes=plan.shapes,
        seed=plan.total.seed,
        samples=samples or agreement.DEFAULT_SAMPLES,
        atol=plan.tol.atol,
        rtol=plan.tol.rtol,
    )


def _job(path: Any, plan: _Plan) -> dict[str, Any]:
    """One model's measurement job, one block long (profiled when the target is predicted)."""
    return plan.backend.job(Path(path).resolve(), plan.block, plan.shapes)


@dataclass(frozen=True)
class _Look:
    """The comparison from the blocks measured so far (called at each look)."""

    plan: _Plan
    paths: tuple[str, str]
    infos: tuple[dict[str, Any], dict[str, Any]]
    jobs: list[dict[str, Any]]
    agree: dict[str, Any]

    def fresh_blocks(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """In-process pairs: the single-model fresh-process blocks for memory and profile (FRESH_PAIRS
        counterbalanced pairs, measured first); else None (every block is one)."""
        if not self.plan.in_process:
            return None
        log.info("measuring NEW and OLD alone in %d counterbalanced pairs of fresh processes (memory)", FRESH_PAIRS)
        return run_blocks(
            self.jobs[0], self.jobs[1], FRESH_PAIRS, backend=self.plan.backend, timeout_s=self.plan.block.timeout_s
        )

    def __call__(
        self,
        outs: tuple[list[dict[str, Any]], list[dict[str, Any]]],
        confidence: float,
        fresh: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None,
    ) -> Comparison:
        """The comparison, its latency bounds at one-sided ``confidence`` (this look's), from the
        latency pairs ``outs``; memory, profile and session figures from ``fresh`` (default: ``outs``)."""

        plan, jobs = self.plan, self.jobs
        fresh = fresh or outs
        warnings = sorted({w for o in outs[0] + outs[1] + fresh[0] + fresh[1] for w in o.get("warnings", [])})
        predictions: list[dict[str, Any] | None] = [None, None]
        if not plan.measured_here:
            # Each side's own host median, so the target's memory-bound time is its own (predict.transfer).
            host_p50 = [
                float(np.median(np.concatenate([np.asarray(b["samples_ns"], dtype=float) for b in o]))) / 1e6
                for o in outs
            ]
            predictions = [
                plan.backend.predict(o[0].get("nodes"), model=j["model"], warnings=warnings, host_p50_ms=p50)
                for o, j, p50 in zip(fresh, jobs, host_p50)
            ]
        return _comparison(plan, self.paths, self.infos, (outs, fresh), predictions, self.agree, warnings, confidence)


def decided(c: Comparison) -> bool:
    """The sequential run's stopping rule: every latency check decided, or the verdict already FAIL."""
    latency = [x for x in c.checks if x.name.startswith("latency_ratio_")]
    return c.verdict == FAIL or all(x.passed is not None for x in latency)


def _sequential(
    look: _Look, started: float, fresh: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None
) -> Comparison:
    """Add counterbalanced pairs (two at a time) up to each scheduled look and look; stop when
    ``decided`` or at the final look: the last scheduled one, or the one taken when the time cap
    would be passed before the next scheduled look (module docstring). ``fresh``: the memory blocks
    of in-process pairs (``_Look.fresh_blocks``), already measured."""
    plan = look.plan
    outs: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    history: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for k, n in enumerate(plan.looks):
        capped = False
        while len(outs[0]) < n and not capped:
            run_blocks(
                look.jobs[0],
                look.jobs[1],
                2,
                backend=plan.backend,
                timeout_s=plan.block.timeout_s,
                into=outs,
                in_process=plan.in_process,
            )
            per_round = 2 * (time.monotonic() - t0) / len(outs[0])
            # the first look is always completed: fewer pairs have no bounds at its confidence
            capped = len(outs[0]) >= plan.looks[0] and time.monotonic() - started + per_round > plan.max_time_s
        final = capped or k == len(plan.looks) - 1
        conf = look_confidence(plan.confidence, k, final)
        c = look(outs, conf, fresh)
        history.append(_look_record(c, k, conf, time.monotonic() - started))
        if decided(c) or final:
            stop = _stop_reason(c, capped)
            return _sequential_result(c, plan, history, stop, time.monotonic() - started)
    raise AssertionError("unreachable: the last look is final")  # pragma: no cover


def _look_record(c: Comparison, k: int, confidence: float, elapsed_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "look": k + 1,
        "pairs": c.new.blocks,
        "elapsed_s": round(elapsed_s, 3),
        "confidence": confidence,
    }
    for q, x in c._latency_checks():
        out[f"p{q:g}"] = {
            "ratio": x.measured,
            "lower_bound": x.lower_bound,
            "upper_bound": x.upper_bound,
            "status": x.status,
        }
    return out


def _stop_reason(c: Comparison, capped: bool) -> str:
    """Why the run stops at this look: every latency check decided, a check failed (the verdict is
    FAIL whatever the undecided latency says), or the final look (the time cap's or the last)."""
    latency = [x for x in c.checks if x.name.startswith("latency_ratio_")]
    if all(x.passed is not None for x in latency):
        return STOP_DECIDED
    if c.verdict == FAIL:
        return STOP_FAILED
    return STOP_CAP if capped else STOP_LAST


def _undecided_detail(
    c: Comparison, x: Check, plan: _Plan, stop: str, failed: list[str], looks: int, elapsed_s: float
) -> str:
    """What an undecided latency check says, true to why the run stopped: a failed check stopped it
    early (more time would not have been spent), or the noise at the cap or the last look."""
    n = c.new.blocks
    if stop == STOP_FAILED:
        at = "the first look" if looks == 1 else f"look {looks}"
        return (
            f"not decided: the run stopped at {at} ({n} pairs) because {', '.join(failed)} failed; "
            f"the limit {x.budget:.4g}x lies inside the interval so far"
        )
    r = pair_ratios(c.new_samples_ms, c.old_samples_ms, float(x.name[len("latency_ratio_p") :]))
    q1, q3 = np.percentile(r, [25, 75])
    where = f"the {plan.max_time_s:g} s cap" if stop == STOP_CAP else f"the last look ({n} pairs)"
    return (
        f"within noise at {where}: the limit {x.budget:.4g}x lies inside the interval after {n} pairs in "
        f"{elapsed_s:.0f} s (per-pair ratios' middle half {q1:.3f}-{q3:.3f})"
        + ("; a longer --max-time may decide" if stop == STOP_CAP else "")
    )


def _sequential_result(
    c: Comparison, plan: _Plan, history: list[dict[str, Any]], stop: str, elapsed_s: float
) -> Comparison:
    """``c`` with the sequential run's record in ``method["sequential"]`` and, on a latency check
    left inconclusive, the noise it saw in its detail."""
    n = c.new.blocks
    seq = {
        "design": "group-sequential sign test: looks at geometrically growing pair counts; Bonferroni alpha "
        f"spending, alpha/{ALPHA_SHARES} per look, the rest at the final look (the last scheduled or "
        "the time cap's), so the stopping look's bounds hold at the confidence",
        "looks_planned": list(plan.looks),
        "max_looks": LOOKS,
        "max_time_s": plan.max_time_s,
        "stopped": stop,
        "elapsed_s": round(elapsed_s, 3),
        "pairs": n,
        "look_confidence": history[-1]["confidence"],
        "looks": history,
    }
    failed = [x.name for x in c.checks if x.passed is False]
    if stop == STOP_FAILED:
        seq["failed_checks"] = failed
    checks = [
        replace(x, detail=_undecided_detail(c, x, plan, stop, failed, len(history), elapsed_s))
        if x.name.startswith("latency_ratio_") and x.passed is None
        else x
        for x in c.checks
    ]
    return replace(c, checks=tuple(checks), method=dict(c.method, sequential=seq))
