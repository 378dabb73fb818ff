"""What ``compare`` was asked for (:class:`_Plan`) and how pairs of blocks are measured (:func:`run_blocks`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeopt.runtime.backends import MeasurementBackend, backend_for
from edgeopt.runtime.compare._design import SUB_BLOCKS, Tolerances, min_pairs, sequential_looks
from edgeopt.runtime.settings import GATE_SETTINGS, BenchSettings
from edgeopt.runtime.targets import Target


def block_settings(total: BenchSettings, pairs: int) -> BenchSettings:
    """One block's share of ``total`` (per model): its time and runs split over ``pairs`` blocks."""
    per_block_iters = max(1, math.ceil(total.min_iters / pairs))
    return total.updated(
        min_time_s=float(total.min_time_s) / pairs,
        min_iters=per_block_iters,
        max_iters=max(total.max_iters, per_block_iters),
    )


def run_blocks(
    new_job: Mapping[str, Any],
    old_job: Mapping[str, Any],
    pairs: int,
    *,
    backend: MeasurementBackend,
    timeout_s: float,
    into: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None,
    in_process: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure ``pairs`` counterbalanced pairs NEW OLD | OLD NEW | ...; each block is one job of the
    target's ``backend`` (a fresh process; on the device when the target is remote). Only the
    first block of each model profiles per node, when its job asks for it (a prediction). With
    ``in_process``, each pair is one A/B job instead (both models in one fresh process, interleaved
    in sub-blocks; here only), its first model alternating. With ``into`` (the lists of an earlier
    call), the pairs are appended, the alternation continued."""
    new_out, old_out = into if into is not None else ([], [])
    for i in range(len(new_out), len(new_out) + pairs):
        if in_process:
            ab = {"other": old_job["model"], "first": i % 2, "sub_blocks": SUB_BLOCKS}
            out = backend.measure(dict(new_job, profile=False, ab=ab), timeout_s=2 * timeout_s)
            new_out.append(out["ab"][0])
            old_out.append(out["ab"][1])
            continue
        order = ((new_job, new_out), (old_job, old_out))
        for job, outs in order if i % 2 == 0 else order[::-1]:
            outs.append(backend.measure(dict(job, profile=bool(job.get("profile")) and not outs), timeout_s=timeout_s))
    return new_out, old_out


@dataclass(frozen=True)
class _Plan:
    """What ``compare`` was asked for, validated."""

    target: Target
    backend: MeasurementBackend
    total: BenchSettings
    block: BenchSettings
    pairs: int  # the fixed design's pairs; the sequential design's first look
    shapes: dict[str, tuple[int, ...]]
    measured_here: bool
    threads: int
    confidence: float
    tol: Tolerances
    looks: tuple[int, ...]  # pair counts of the looks: (pairs,) for the fixed design
    max_time_s: float | None  # the sequential design's time cap; None for the fixed design

    @property
    def sequential(self) -> bool:
        return self.max_time_s is not None

    @property
    def in_process(self) -> bool:
        """Pairs as A/B jobs, both models in one process: on this host, not over SSH (one model per job)."""
        return self.backend.pairs_in_process


def _plan(
    target: Target | str,
    confidence: float,
    tol: Tolerances,
    settings: BenchSettings | None,
    pairs: int | None,
    max_time_s: float,
    shapes: Any,
    on_device: bool | None,
) -> _Plan:
    from edgeopt import _validate
    from edgeopt.runtime.inputs import parse_shapes

    confidence = _validate.number(
        confidence, "compare()", "confidence", minimum=0, maximum=1, min_exclusive=True, max_exclusive=True
    )
    if pairs is None:  # sequential
        max_time_s = _validate.number(max_time_s, "compare()", "max_time_s", minimum=0, min_exclusive=True)
        looks = sequential_looks(confidence)
    else:
        looks = (_validate.number(pairs, "compare()", "pairs", minimum=min_pairs(confidence), integer=True),)
        max_time_s = None
    target = Target.load(target)
    total = settings or GATE_SETTINGS
    total = total.updated(batch=target.runtime.batch_size) if total.batch is None else total
    backend = backend_for(target, on_device=on_device)  # as bench: decided once
    measured_here, threads = not backend.predicts, backend.threads
    return _Plan(
        target,
        backend,
        total,
        block_settings(total, looks[0]),
        looks[0],
        parse_shapes(shapes),
        measured_here,
        threads,
        float(confidence),
        tol,
        looks,
        max_time_s,
    )
