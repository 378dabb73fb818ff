"""``edgeopt gate NEW --against OLD``: is NEW slower, bigger or different than OLD?

Measurement
-----------
Both models are measured in one run, in pairs of blocks, counterbalanced: NEW OLD | OLD NEW |
NEW OLD | ...: every model runs right after the other, a linear drift (thermal, a neighbour
starting) adds the same to both sides over each two pairs, and neither model always runs first.

Here (a target measured or predicted on this host) a pair is ONE fresh child process that loads
both models and times them alternately, ``SUB_BLOCKS`` sub-blocks each, A B B A A B B A ... (A = the
pair's first model; ``_worker.run_ab``); a model's block is its sub-blocks' samples pooled. What a
fresh process brings (its allocator state, its core, the neighbours while it runs: on a loaded
2-core host a block's p95 moves by +-8-15 % from one process to the next) then falls on both sides
of the pair alike and cancels in its ratio, and a pair costs one process start instead of two. The
pairs stay independent (one process each), which is all the interval below assumes. Peak memory and
the per-node profile (a prediction's) need a process per model: they come from ``FRESH_PAIRS``
counterbalanced pairs of single-model blocks (the local backend: a fresh process with the target's
session options, warm-up, then a timed loop) measured first, whose latency is not used.

A remote target (the ssh backend uploads one model per job) keeps one fresh process per
block on the device: every block there is a single-model job, its latency paired as above and its
memory used too.

How many pairs: sequential (the default)
----------------------------------------
By default the run decides for itself how long to measure (issue 16): it adds pairs until every
latency check is decided (PASS or FAIL; or any check FAILs) or a time cap (``max_time_s``, default
``DEFAULT_MAX_TIME_S``) is reached. A block is ``min_time_s / FIRST_LOOK`` long (the settings are
per model at the first look), and the verdict is looked at after 10, 16, 24, 36, 54, 82, 124, 186
pairs (``sequential_looks``): a group-sequential design with geometrically growing looks (x1.5,
even, so every look is counterbalanced), at most ``LOOKS`` = 8.

Repeated looks inflate error rates (optional stopping): checking a 95 % bound after every pair
would stop on the first lucky streak. Here alpha (= 1 - confidence) is spent across the looks
(Bonferroni alpha spending): each look but the final one spends ``alpha / ALPHA_SHARES`` (= alpha /
16: its bounds are at one-sided level 1 - alpha/16), the final look spends all alpha not yet spent
(at least 9/16 of it). The final look is the last scheduled one or, when the cap would be passed
before the next scheduled look, a look at the pairs measured so far. Which look is final, and how
many pairs a look has, depend on the schedule and elapsed time only, never on the ratios measured,
so the levels spent along any run sum to alpha, and by the union bound the chance that a bound
misses the true ratio at ANY look -- hence at the look where the run stopped -- is <= alpha. The
bounds reported are the stopping look's and hold at ``confidence`` whatever the stopping rule (for
each bound and check, as in the fixed design). Early looks catch clear cases cheaply; a close case
is decided at the final look, at nearly the fixed design's level. So a PASS or FAIL is as sound as
a fixed-size run's, and INCONCLUSIVE means "within the noise seen at the cap": the check says its
interval, pairs and seconds. ``pairs=N`` instead measures exactly N pairs and looks once at
``confidence`` (the fixed design of issue 12, ``min_time_s / N`` per block).

The ratio and its interval
--------------------------
For a percentile q (the budget's, and the median) every pair i gives a ratio of its two blocks'
percentiles (nearest rank, as ``stats.percentile``)

    r_i = Q_q(NEW block i) / Q_q(OLD block i),        i = 1..n,

the estimate is their median, and its one-sided bounds at confidence c are order statistics of the
sorted ratios r_(1) <= ... <= r_(n) (the sign-test interval for a median):

    upper = r_(k), k the smallest rank with  P(Binomial(n, 1/2) <= k - 1) >= c,
    lower = r_(n + 1 - k),

because each r_i falls below the pairs' median ratio with probability 1/2 whatever the latency
distribution (``stats.order_statistic_bounds`` with q = 50). With c = 0.95: n = 16 gives
[r_(5), r_(12)], n = 10 gives [r_(2), r_(9)]; n >= 5 is needed for any bound.

Why this and not a bootstrap over pooled samples (tried first): samples within a block are not
independent (one process, one allocator, the same neighbours), so the block is the unit; and on a
shared machine a neighbour's burst makes one block several times slower. Pooled over blocks, one
such block moves a pooled p95 and a bootstrap's interval with it (same model against itself:
[0.15, 5.9] in one run here); in a ratio per pair it moves one r_i, which the median and the
order statistics shrug off. The interval is exact for any distribution, with no small-sample
correction; it assumes only that the pairs are independent and exchangeable.

Verdict, for each check with limit L = 1 + tolerance: PASS when the upper bound <= L, FAIL when the
lower bound > L, INCONCLUSIVE otherwise. A predicted target scales each side by its per-node
transfer factor (``predict``; constant per model), so the predicted ratio is the host ratio times
factor(NEW) / factor(OLD), and says ``predicted``.

Also compared: peak memory (the blocks' median; PASS when every NEW block is within
(1 + tolerance) x every OLD block plus ``MEMORY_SLACK_MB``, FAIL when no NEW block is, else
INCONCLUSIVE), file size (exact) and output agreement (``agreement``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import InputError
from edgeopt.runtime import stats
from edgeopt.runtime.backends import MeasurementBackend, backend_for
from edgeopt.runtime.checks import FAIL, VERDICT_ICON, Check, combine
from edgeopt.runtime.host import MB
from edgeopt.runtime.settings import GATE_SETTINGS, BenchSettings
from edgeopt.runtime.targets import Target

log = logging.getLogger("edgeopt.gate")

DEFAULT_PAIRS = 16  # the fixed design's customary size (``pairs=DEFAULT_PAIRS``: the gate before issue 16)
MIN_PAIRS = 5
# The sequential design (module docstring): at most LOOKS looks, the first after FIRST_LOOK pairs, each
# next one after GROWTH x as many (rounded up to even); each look but the final one spends
# alpha / ALPHA_SHARES, the final one the rest (Bonferroni alpha spending).
LOOKS, FIRST_LOOK, GROWTH, ALPHA_SHARES = 8, 10, 1.5, 16
DEFAULT_MAX_TIME_S = 60.0
MEMORY_SLACK_MB = 1.0  # peak-memory differences below this are allocator noise, not growth
MEDIAN = 50.0
SUB_BLOCKS = 8  # per model and pair, in the pair's one process (A B B A ...): even, so each model leads half
FRESH_PAIRS = 2  # in-process pairs: single-model fresh-process pairs measured first, for memory and profile


# --------------------------------------------------------------------------- tolerances
def parse_fraction(value: Any, name: str) -> float:
    """``"5%"`` -> 0.05, ``0.05`` -> 0.05; a plain number must be a fraction in [0, 1) (``5`` is
    refused: write ``5%``). Raises InputError naming ``name``."""
    text = str(value).strip()
    percent = text.endswith("%")
    try:
        out = float(text[:-1] if percent else text) / (100.0 if percent else 1.0)
    except ValueError:
        out = math.nan
    if isinstance(value, bool) or not math.isfinite(out) or out < 0:
        raise InputError(f"{name}: expected a fraction such as 0.05 or a percentage such as 5%, found {text!r}")
    if not percent and out >= 1:
        raise InputError(
            f"{name}: expected a fraction in [0, 1) such as 0.05 or a percentage such as 5%, "
            f"found {text} (write {text}% for a percentage)"
        )
    return out


@dataclass(frozen=True)
class Tolerances:
    """How much worse NEW may be than OLD. Fractions: 0.05 = 5%; ``"5%"`` strings are accepted."""

    max_slowdown: float = 0.05  # latency ratio NEW/OLD at the percentile and the median
    max_memory_growth: float = 0.10  # peak memory ratio (differences below MEMORY_SLACK_MB ignored)
    max_size_growth: float = 0.10  # file size ratio
    atol: float = 1e-4  # outputs: |new - old| <= atol + rtol * |old|, every element
    rtol: float = 1e-3
    max_top1_disagreement: float = 0.0  # classifier outputs: share of rows whose arg-max differs

    def __post_init__(self) -> None:
        for name in ("max_slowdown", "max_memory_growth", "max_size_growth", "max_top1_disagreement"):
            value = getattr(self, name)
            if isinstance(value, (str, bool)):
                object.__setattr__(self, name, parse_fraction(value, name))
            elif not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name}: expected a fraction >= 0 (0.05 = 5%), found {value!r}")
            else:
                object.__setattr__(self, name, float(value))
        if self.max_top1_disagreement > 1:
            raise InputError(f"max_top1_disagreement: expected a share in [0, 1], found {self.max_top1_disagreement}")
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise InputError(f"{name}: expected a number >= 0, found {value!r}")
            object.__setattr__(self, name, float(value))


# --------------------------------------------------------------------------- statistics
def pair_ratios(new_blocks: Sequence[Sequence[float]], old_blocks: Sequence[Sequence[float]], q: float) -> np.ndarray:
    """r_i = Q_q(NEW block i) / Q_q(OLD block i) for each pair i (nearest-rank percentiles)."""
    if len(new_blocks) != len(old_blocks) or not new_blocks:
        raise ValueError(
            f"need the same number (>= 1) of NEW and OLD blocks, got {len(new_blocks)} and {len(old_blocks)}"
        )
    return np.array([stats.percentile(a, q) / stats.percentile(b, q) for a, b in zip(new_blocks, old_blocks)])


def ratio_interval(
    new_blocks: Sequence[Sequence[float]], old_blocks: Sequence[Sequence[float]], q: float, confidence: float
) -> tuple[float, float | None, float | None]:
    """(ratio, lower, upper): the median of the per-pair ratios at percentile q and its one-sided
    sign-test bounds at ``confidence`` (order statistics of the ratios; None where there are too
    few pairs for that confidence)."""
    r = np.sort(pair_ratios(new_blocks, old_blocks, q))
    lo, hi = stats.order_statistic_bounds(r.size, MEDIAN, confidence)
    return float(np.median(r)), (float(r[lo - 1]) if lo else None), (float(r[hi - 1]) if hi else None)


def min_pairs(confidence: float) -> int:
    """Fewest pairs with both sign-test bounds at ``confidence``: 0.5^n <= 1 - confidence."""
    return max(MIN_PAIRS, math.ceil(math.log(1 - confidence) / math.log(0.5)))


def look_confidence(confidence: float, earlier_looks: int, final: bool) -> float:
    """One-sided confidence of a look's bounds in the sequential design (Bonferroni alpha spending):
    alpha / ALPHA_SHARES for each look but the final one, which spends what the ``earlier_looks``
    left; summed along any run, the levels spent are alpha, so the stopping look's bounds hold at
    ``confidence``."""
    alpha = 1.0 - confidence
    share = alpha / ALPHA_SHARES
    return 1.0 - (alpha - earlier_looks * share if final else share)


def sequential_looks(confidence: float) -> tuple[int, ...]:
    """Pair counts of the LOOKS looks: FIRST_LOOK (or the fewest pairs with bounds at a non-final
    look's confidence), then x GROWTH, each rounded up to an even count. 0.95: 10, 16, 24, 36, 54,
    82, 124, 186."""
    n = max(FIRST_LOOK, min_pairs(look_confidence(confidence, 0, final=False)))
    looks = [n + n % 2]
    while len(looks) < LOOKS:
        nxt = math.ceil(looks[-1] * GROWTH)
        looks.append(nxt + nxt % 2)
    return tuple(looks)


def ratio_check(
    name: str,
    ratio: float,
    lower: float | None,
    upper: float | None,
    limit: float,
    *,
    source: str = "measured",
    detail: str = "",
) -> Check:
    """A Check on a NEW/OLD ratio: ``budget`` is the limit 1 + tolerance, unit ``x``."""
    if upper is not None and upper <= limit:
        passed = True
    elif lower is not None and lower > limit:
        passed = False
    else:
        passed = None
        detail = detail or (
            f"the limit {limit:.4g}x lies inside the confidence interval; measure longer "
            f"(--pairs, --min-time) to decide"
        )
    return Check(name, limit, ratio, upper, lower, passed, "x", source, detail)


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Side:
    """One model's figures from the A/B run. ``latency_ms`` is on the target's scale."""

    model: str
    latency_ms: dict[str, float]
    host_latency_ms: dict[str, float]
    blocks: int
    iterations: int
    peak_memory_mb: float  # median over blocks
    peak_memory_range_mb: tuple[float, float]
    model_size_bytes: int
    params: int
    prediction_factor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "latency_ms": self.latency_ms,
            "host_latency_ms": self.host_latency_ms,
            "blocks": self.blocks,
            "iterations": self.iterations,
            "peak_memory_mb": self.peak_memory_mb,
            "peak_memory_range_mb": list(self.peak_memory_range_mb),
            "model_size_bytes": self.model_size_bytes,
            "model_size_mb": self.model_size_bytes / MB,
            "params": self.params,
            "prediction_factor": self.prediction_factor,
        }


@dataclass(frozen=True)
class Comparison:
    """NEW against OLD: both sides, the checks (ratios with bounds, agreement) and the verdict."""

    new: Side
    old: Side
    checks: tuple[Check, ...]
    agreement: dict[str, Any]
    tolerances: Tolerances
    confidence: float
    percentile: float
    latency_source: str  # measured | predicted
    target_name: str
    method: dict[str, Any]
    new_samples_ms: tuple[tuple[float, ...], ...] = field(default=(), repr=False)  # per block, target scale
    old_samples_ms: tuple[tuple[float, ...], ...] = field(default=(), repr=False)
    new_bench: Any = field(default=None, repr=False)  # bench.BenchResult of NEW's pooled blocks (budget checks)
    warnings: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        return combine(self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "verdict": self.verdict,
            "new": self.new.to_dict(),
            "old": self.old.to_dict(),
            "latency_source": self.latency_source,
            "percentile": self.percentile,
            "confidence": self.confidence,
            "tolerances": {k: getattr(self.tolerances, k) for k in self.tolerances.__dataclass_fields__},
            "latency_ratio": {
                f"p{q:g}": {
                    "new_ms": self.new.latency_ms[f"p{q:g}"],
                    "old_ms": self.old.latency_ms[f"p{q:g}"],
                    "ratio": c.measured,
                    "lower_bound": c.lower_bound,
                    "upper_bound": c.upper_bound,
                    "limit": c.budget,
                    "status": c.status,
                }
                for q, c in self._latency_checks()
            },
            "checks": [dict(asdict(c), status=c.status) for c in self.checks],
            "agreement": self.agreement,
            "method": self.method,
            "warnings": list(self.warnings),
        }

    def _latency_checks(self) -> list[tuple[float, Check]]:
        out = []
        for q in dict.fromkeys((self.percentile, MEDIAN)):
            out.append((q, self.check(f"latency_ratio_p{q:g}")))
        return out

    def describe(self) -> str:
        """One line: how it was measured."""
        m = self.method
        seq = m.get("sequential")
        run = (
            ""
            if seq is None
            else (
                f"sequential: {seq['elapsed_s']:.0f} s, look {len(seq['looks'])} of {seq['max_looks']}, "
                + {
                    "decided": "decided",
                    "time cap": f"stopped at the {seq['max_time_s']:g} s cap, within noise",
                    "last look": "stopped at the last look, within noise",
                }[seq["stopped"]]
                + "; "
            )
        )
        how = (
            "one fresh process per pair, NEW and OLD interleaved in it"
            if m.get("in_process")
            else "fresh process per block"
        )
        return (
            f"NEW and OLD {self.latency_source} in {m['pairs']} counterbalanced pairs of blocks "
            f"({m['block_time_s']:.2g} s each, {how}; {run}ratio bounds one-sided at "
            f"{self.confidence:.0%}{' over all looks' if seq else ''}, median of per-pair ratios, "
            f"sign-test order statistics)"
        )

    def to_markdown(self) -> str:
        icon = VERDICT_ICON
        lines = [
            f"#### against `{Path(self.old.model).name}`: {icon[self.verdict]}",
            "",
            f"{self.describe()}.",
            "",
            "| check | NEW | OLD | NEW/OLD | lower bound | upper bound | limit | result |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        f4 = lambda v: "–" if v is None else f"{v:.4g}"  # noqa: E731
        for c in self.checks:
            new, old = self._sides(c)
            if c.unit == "x":
                lines.append(
                    f"| {c.name} | {new} | {old} | {c.measured:.4f} | {f4(c.lower_bound)} | "
                    f"{f4(c.upper_bound)} | {c.budget:.4g} | {icon[c.status]} |"
                )
            else:
                detail = c.detail.replace("|", "\\|")
                lines.append(f"| {c.name} | {detail} | | {f4(c.measured)} | | | {f4(c.budget)} | {icon[c.status]} |")
        return "\n".join(lines) + "\n"

    def _sides(self, c: Check) -> tuple[str, str]:
        if c.name.startswith("latency_ratio_p"):
            key = "p" + c.name[len("latency_ratio_p") :]
            return f"{self.new.latency_ms[key]:.4g} ms", f"{self.old.latency_ms[key]:.4g} ms"
        if c.name == "peak_memory_ratio":
            return f"{self.new.peak_memory_mb:.3g} MB", f"{self.old.peak_memory_mb:.3g} MB"
        if c.name == "model_size_ratio":
            return f"{self.new.model_size_bytes:,} B", f"{self.old.model_size_bytes:,} B"
        return "", ""

    def text_lines(self) -> list[str]:
        lines = [f"  against {Path(self.old.model).name}: {self.verdict.upper()}  ({self.describe()})"]
        for c in self.checks:
            new, old = self._sides(c)
            if c.unit == "x":
                lines.append(
                    f"  {c.status.upper():<13} {c.name:<22} {c.measured:>8.4f}x  "
                    f"[{'-' if c.lower_bound is None else f'{c.lower_bound:.4f}'}, "
                    f"{'-' if c.upper_bound is None else f'{c.upper_bound:.4f}'}]  limit {c.budget:.4g}x"
                    f"  (NEW {new}, OLD {old}){'  ' + c.detail if c.detail and c.passed is not True else ''}"
                )
            else:
                lines.append(
                    f"  {c.status.upper():<13} {c.name:<22} {c.measured:>9.4g}  limit {c.budget:.4g}  {c.detail}"
                )
        return lines


# --------------------------------------------------------------------------- measurement
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
    from edgeopt.runtime import agreement, bench

    started = time.monotonic()
    tol = replace(tolerances, **tolerance_kwargs) if tolerances is not None else Tolerances(**tolerance_kwargs)
    plan = _plan(target, confidence, tol, settings, pairs, max_time_s, shapes, on_device)
    infos = bench.model_info(new), bench.model_info(old)
    # Agreement first: different signatures are bad input, found before any timing.
    agree = agreement.compare_outputs(
        new,
        old,
        plan.target.runtime.with_threads(plan.threads),
        batch=int(plan.total.batch),
        shapes=plan.shapes,
        seed=plan.total.seed,
        samples=agreement_samples or agreement.DEFAULT_SAMPLES,
        atol=tol.atol,
        rtol=tol.rtol,
    )
    jobs = [plan.backend.job(Path(p).resolve(), plan.block, plan.shapes) for p in (new, old)]
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
            stop = "decided" if decided(c) else "time cap" if capped else "last look"
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
    checks = []
    for x in c.checks:
        if x.name.startswith("latency_ratio_") and x.passed is None:
            r = pair_ratios(c.new_samples_ms, c.old_samples_ms, float(x.name[len("latency_ratio_p") :]))
            q1, q3 = np.percentile(r, [25, 75])
            where = f"the {plan.max_time_s:g} s cap" if stop == "time cap" else f"the last look ({n} pairs)"
            x = replace(
                x,
                detail=f"within noise at {where}: the limit {x.budget:.4g}x lies inside the interval "
                f"after {n} pairs in {elapsed_s:.0f} s (per-pair ratios' middle half "
                f"{q1:.3f}-{q3:.3f}); a longer --max-time may decide",
            )
        checks.append(x)
    return replace(c, checks=tuple(checks), method=dict(c.method, sequential=seq))


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
    (outs, fresh), in_process = blocks_fresh, plan.in_process
    tol, q = plan.tol, float(plan.target.budget.latency_percentile)
    source = "measured" if plan.measured_here else "predicted"
    factors = [1.0 if p is None else float(p["factor"]) for p in predictions]
    host_blocks = [[np.asarray(o["samples_ns"], dtype=float) / 1e6 for o in side] for side in outs]
    blocks = [[b * f for b in side] for side, f in zip(host_blocks, factors)]
    checks: list[Check] = []
    for pct in dict.fromkeys((q, MEDIAN)):
        r, lo, hi = ratio_interval(blocks[0], blocks[1], pct, look_confidence)
        checks.append(ratio_check(f"latency_ratio_p{pct:g}", r, lo, hi, 1.0 + tol.max_slowdown, source=source))
    mem = [np.array([max(0, o["peak_rss_bytes"] - o["rss_before_bytes"]) / MB for o in side]) for side in fresh]
    checks.append(memory_check(mem[0], mem[1], tol.max_memory_growth))
    size = infos[0]["size_bytes"] / max(infos[1]["size_bytes"], 1)
    checks.append(ratio_check("model_size_ratio", size, size, size, 1.0 + tol.max_size_growth))
    checks += agreement_checks(agree, tol)
    sides = []
    for k in range(2):
        pooled, host_pooled = np.concatenate(blocks[k]), np.concatenate(host_blocks[k])
        lat, host_lat = stats.summarize(pooled), stats.summarize(host_pooled)
        lat.setdefault(f"p{q:g}", stats.percentile(pooled, q))
        host_lat.setdefault(f"p{q:g}", stats.percentile(host_pooled, q))
        sides.append(
            Side(
                paths[k],
                lat,
                host_lat,
                len(outs[k]),
                int(pooled.size),
                float(np.median(mem[k])),
                (float(mem[k].min()), float(mem[k].max())),
                int(infos[k]["size_bytes"]),
                int(infos[k]["params"]),
                None if plan.measured_here else factors[k],
            )
        )
    method = {
        "design": "counterbalanced pairs NEW OLD | OLD NEW | ..., "
        + (
            f"one fresh process per pair, NEW and OLD in {SUB_BLOCKS} interleaved sub-blocks each (A B B A "
            f"...); memory from {len(fresh[0])} fresh single-model blocks each"
            if in_process
            else "one fresh process per block"
        ),
        "in_process": in_process,
        "estimate": "median over pairs of Q_q(NEW block) / Q_q(OLD block)",
        "interval": "sign-test order statistics of the per-pair ratios, one-sided bounds",
        "pairs": len(outs[0]),
        "block_time_s": plan.block.min_time_s,
        "block_min_iters": plan.block.min_iters,
        "warmup": plan.block.warmup,
        "seed": plan.total.seed,
        "batch": plan.total.batch,
        "intra_op_threads": plan.threads,
        "memory_slack_mb": MEMORY_SLACK_MB,
        "predictions": list(predictions),
    }
    return Comparison(
        sides[0],
        sides[1],
        tuple(checks),
        agree,
        tol,
        plan.confidence,
        q,
        source,
        plan.target.name,
        method,
        tuple(tuple(map(float, b)) for b in blocks[0]),
        tuple(tuple(map(float, b)) for b in blocks[1]),
        _new_bench(plan, paths[0], infos[0], fresh[0], blocks[0], host_blocks[0], predictions[0], mem[0], warnings),
        tuple(warnings),
    )


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


def memory_check(new_mb: np.ndarray, old_mb: np.ndarray, growth: float) -> Check:
    """Peak memory NEW/OLD from per-block peaks. The ratio is of the medians, the bounds are
    min(NEW)/max(OLD) and max(NEW)/min(OLD); PASS when even the largest NEW block is within
    (1 + growth) x the smallest OLD block + MEMORY_SLACK_MB, FAIL when even the smallest NEW block
    is over (1 + growth) x the largest OLD block + MEMORY_SLACK_MB."""
    limit = 1.0 + growth
    med_new, med_old = float(np.median(new_mb)), float(np.median(old_mb))
    tiny = 1e-9
    ratio = med_new / max(med_old, tiny)
    lower, upper = (
        float(new_mb.min()) / max(float(old_mb.max()), tiny),
        float(new_mb.max()) / max(float(old_mb.min()), tiny),
    )
    if new_mb.max() <= limit * old_mb.min() + MEMORY_SLACK_MB:
        passed = True
    elif new_mb.min() > limit * old_mb.max() + MEMORY_SLACK_MB:
        passed = False
    else:
        passed = None
    detail = (
        f"NEW {med_new:.3g} MB, OLD {med_old:.3g} MB (medians of the blocks); growth under "
        f"{MEMORY_SLACK_MB:g} MB is ignored"
    )
    return Check("peak_memory_ratio", limit, ratio, upper, lower, passed, "x", "measured", detail)


def agreement_checks(agree: Mapping[str, Any], tol: Tolerances) -> list[Check]:
    """``outputs_close`` (every element within atol + rtol x |old|) and, with a classifier-shaped
    output, ``top1_disagreement`` (share of rows whose arg-max differs)."""
    worst = max(agree["outputs"].items(), key=lambda kv: kv[1]["max_abs_diff"], default=None)
    where = ""
    if worst is not None:
        name, s = worst
        where = f" at {name}{s['max_abs_diff_at']}" if s["max_abs_diff"] > 0 else ""
    detail = (
        f"max abs diff {agree['max_abs_diff']:.3g}{where}, max rel diff {agree['max_rel_diff']:.3g}, "
        f"{agree['mismatched_share']:.2%} of elements outside atol {tol.atol:g} + rtol {tol.rtol:g} x |old| "
        f"({agree['samples']} generated inputs)"
    )
    out = [
        Check(
            "outputs_close", tol.atol, agree["max_abs_diff"], None, None, bool(agree["close"]), "", "measured", detail
        )
    ]
    if agree.get("top1_disagreement") is not None:
        share = agree["top1_disagreement"]
        out.append(
            Check(
                "top1_disagreement",
                tol.max_top1_disagreement,
                share,
                None,
                None,
                share <= tol.max_top1_disagreement,
                "",
                "measured",
                f"{agree['top1_disagreements']} of {agree['rows']} rows change their arg-max",
            )
        )
    return out


__all__ = [
    "compare",
    "run_blocks",
    "Tolerances",
    "Side",
    "Comparison",
    "ratio_interval",
    "ratio_check",
    "parse_fraction",
    "combine",
    "pair_ratios",
    "min_pairs",
    "decided",
    "look_confidence",
    "sequential_looks",
    "DEFAULT_PAIRS",
    "MIN_PAIRS",
    "MEMORY_SLACK_MB",
    "DEFAULT_MAX_TIME_S",
    "LOOKS",
    "ALPHA_SHARES",
    "SUB_BLOCKS",
    "FRESH_PAIRS",
]
