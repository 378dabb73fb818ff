"""A :class:`Comparison` from measured blocks: the checks, each side's figures, the method, NEW's bench."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeopt.runtime import stats
from edgeopt.runtime.checks import Check
from edgeopt.runtime.compare._design import (
    MEDIAN,
    MEMORY_SLACK_MB,
    SUB_BLOCKS,
    agreement_checks,
    memory_check,
    ratio_check,
    ratio_interval,
)
from edgeopt.runtime.compare._plan import _Plan
from edgeopt.runtime.compare._result import Comparison, Side
from edgeopt.runtime.host import MB
from edgeopt.runtime.predict import predicted_samples


def _comparison(
    plan: _Plan,
    paths: tuple[str, str],
    infos: Sequence[dict[str, Any]],
    blocks_fresh: tuple[Sequence[list[dict[str, Any]]], Sequence[list[dict[str, Any]]]],
    predictions: Sequence[dict[str, Any] | None],
    agree: dict[str, Any],
    warnings: list[str],
    look_confidence: float,
) -> Comparison:
    """Latency from the pairs' blocks, memory (and the session figures) from the fresh blocks."""
    outs, fresh = blocks_fresh
    factors = [1.0 if p is None else float(p["factor"]) for p in predictions]
    host_blocks = [[np.asarray(o["samples_ns"], dtype=float) / 1e6 for o in side] for side in outs]
    blocks = [[b * f for b in side] for side, f in zip(host_blocks, factors)]
    mem = [np.array([max(0, o["peak_rss_bytes"] - o["rss_before_bytes"]) / MB for o in side]) for side in fresh]
    checks = _checks(plan, blocks, mem, infos, agree, look_confidence)
    sides = [_side(plan, paths[k], infos[k], blocks[k], host_blocks[k], mem[k], factors[k]) for k in range(2)]
    return Comparison(
        sides[0],
        sides[1],
        tuple(checks),
        agree,
        plan.tol,
        plan.confidence,
        float(plan.target.budget.latency_percentile),
        "measured" if plan.measured_here else "predicted",
        plan.target.name,
        _method(plan, len(outs[0]), len(fresh[0]), predictions),
        tuple(tuple(map(float, b)) for b in blocks[0]),
        tuple(tuple(map(float, b)) for b in blocks[1]),
        _new_bench(plan, paths[0], infos[0], fresh[0], blocks[0], host_blocks[0], predictions[0], mem[0], warnings),
        tuple(warnings),
    )


def _checks(
    plan: _Plan,
    blocks: list[list[np.ndarray]],
    mem: list[np.ndarray],
    infos: Sequence[dict[str, Any]],
    agree: dict[str, Any],
    look_confidence: float,
) -> list[Check]:
    """The latency ratios (the budget's percentile and the median), memory, size and agreement."""
    tol, q = plan.tol, float(plan.target.budget.latency_percentile)
    source = "measured" if plan.measured_here else "predicted"
    checks: list[Check] = []
    for pct in dict.fromkeys((q, MEDIAN)):
        r, lo, hi = ratio_interval(blocks[0], blocks[1], pct, look_confidence)
        checks.append(ratio_check(f"latency_ratio_p{pct:g}", r, lo, hi, 1.0 + tol.max_slowdown, source=source))
    checks.append(memory_check(mem[0], mem[1], tol.max_memory_growth))
    size = infos[0]["size_bytes"] / max(infos[1]["size_bytes"], 1)
    checks.append(ratio_check("model_size_ratio", size, size, size, 1.0 + tol.max_size_growth))
    return checks + agreement_checks(agree, tol)


def _side(
    plan: _Plan,
    path: str,
    info: dict[str, Any],
    blocks: list[np.ndarray],
    host_blocks: list[np.ndarray],
    mem: np.ndarray,
    factor: float,
) -> Side:
    """One model's figures: its blocks pooled (target scale and host), memory over the blocks."""
    q = float(plan.target.budget.latency_percentile)
    host_pooled = np.concatenate(host_blocks)
    # predicted: the host's stalls clipped, as bench does, so a stall x factor is not the target's tail
    pooled = (
        np.concatenate(blocks)
        if plan.measured_here
        else predicted_samples(host_pooled, factor, stats.dispersion(host_pooled))
    )
    lat, host_lat = stats.summarize(pooled), stats.summarize(host_pooled)
    lat.setdefault(f"p{q:g}", stats.percentile(pooled, q))
    host_lat.setdefault(f"p{q:g}", stats.percentile(host_pooled, q))
    return Side(
        path,
        lat,
        host_lat,
        len(blocks),
        int(pooled.size),
        float(np.median(mem)),
        (float(mem.min()), float(mem.max())),
        int(info["size_bytes"]),
        int(info["params"]),
        None if plan.measured_here else factor,
    )


def _method(plan: _Plan, pairs: int, fresh_blocks: int, predictions: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """How the comparison was measured and estimated (``Comparison.method``)."""
    return {
        "design": "counterbalanced pairs NEW OLD | OLD NEW | ..., "
        + (
            f"one fresh process per pair, NEW and OLD in {SUB_BLOCKS} interleaved sub-blocks each (A B B A "
            f"...); memory from {fresh_blocks} fresh single-model blocks each"
            if plan.in_process
            else "one fresh process per block"
        ),
        "in_process": plan.in_process,
        "estimate": "median over pairs of Q_q(NEW block) / Q_q(OLD block)",
        "interval": "sign-test order statistics of the per-pair ratios, one-sided bounds",
        "pairs": pairs,
        "block_time_s": plan.block.min_time_s,
        "block_min_iters": plan.block.min_iters,
        "warmup": plan.block.warmup,
        "seed": plan.total.seed,
        "batch": plan.total.batch,
        "intra_op_threads": plan.threads,
        "memory_slack_mb": MEMORY_SLACK_MB,
        "predictions": list(predictions),
    }


def _new_bench(
    plan: _Plan,
    path: str,
    info: dict[str, Any],
    outs: list[dict[str, Any]],
    blocks: list[np.ndarray],
    host_blocks: list[np.ndarray],
    prediction: dict[str, Any] | None,
    mem: np.ndarray,
    warnings: list[str],
) -> Any:
    """NEW's blocks pooled into one BenchResult (the budget checks run on it); memory, session and
    first-inference figures are those of the block with the median peak memory."""
    from edgeopt.runtime import bench

    median_block = outs[int(np.argsort(mem)[len(mem) // 2])]
    return bench._result(
        path,
        plan.target,
        plan.total,
        info,
        median_block,
        np.concatenate(blocks),
        np.concatenate(host_blocks),
        prediction,
        list(warnings),
        plan.backend,
    )
