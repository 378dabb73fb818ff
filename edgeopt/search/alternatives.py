"""The alternatives a user would try before edgeopt, built inside the compile as seeded trials of its study.

onnxruntime static int8 of the dense model, and uniform torch-pruning (one keep ratio on every dependency
group the tables allow to be pruned) at :data:`UNIFORM_KEEP`, each with and without int8. They are points
of the plan space the search already has, so each is a trial of the same study, enqueued with its label in
the ``alternative`` user attribute: screened on the target, distilled like every trial (an int8 rung
quantizes its fp32 rung's trained student where that one was trained, and dense + int8 the teacher: the
user's static int8 of a trained model; ``pipeline.objective``), and chosen by the
selection when nothing the search found beats it. A trained alternative's ONNX file is kept under
``OUT/alternatives/`` so that the report can score it on the test split beside the shipped artifact.

The ladder keeps 3/4, 1/2, 3/8, 1/4, 3/16 and 1/8 of every group's channels: the prune format's own rungs
(``KEEP_FRACTIONS``), spaced about evenly in speed (a conv's cost falls with the square of the kept share
when its producer is pruned too); 7/8 and 5/8 are left out, their speed-up sits between these. The
narrow end is the user's: uniform pruning at ratio 0.8 (keep 1/5) was the only plan to meet cnn1d's budget
at 1/4 of its dense p95, and the alternative to beat at 1/3 (the frontier benchmark), where 1/4 was
over it and 1/8 far below it in score; 3/16 is that ratio on the rungs (12 of 64 channels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from edgeopt.pipeline.record import DTYPE_ATTR, PLAN_ATTR, TrialRecord

UNIFORM_KEEP = (0.75, 0.5, 0.375, 0.25, 0.1875, 0.125)
LABEL_ATTR = "alternative"  # the trial's label, e.g. "uniform prune 1/2 + int8"
DIR_NAME = "alternatives"
DENSE_INT8 = "dense + int8"


@dataclass(frozen=True)
class Alternative:
    """One alternative: its label, its plan (layer -> plan entry; ``{}`` dense) and its dtype."""

    label: str
    plan: dict[str, Any]
    dtype: str = "fp32"


def keep_text(fraction: float) -> str:
    """``0.375`` -> ``"3/8"``, ``0.1875`` -> ``"3/16"``."""
    f = Fraction(fraction).limit_denominator(16)
    return f"{f.numerator}/{f.denominator}"


def uniform_prune(tables: Any, fraction: float) -> dict[str, Any]:
    """The plan keeping about ``fraction`` of every prunable layer's channels: per layer of the tables, the
    prune rung nearest that share (the tables hold one rung set per dependency group, on its first layer)."""
    plan = {}
    for name, cands in tables.layers.items():
        ranks = [int(c.entry["rank"]) for c in cands if c.entry.get("format") == "prune"]
        if not ranks:
            continue
        width = _width_of(cands[0].params, cands, ranks)
        target = fraction * width
        plan[name] = {"format": "prune", "rank": min(ranks, key=lambda r: (abs(r - target), r))}
    return plan


def _width_of(dense_params: int, cands: list[Any], ranks: list[int]) -> float:
    """The layer's output width, from a prune rung's parameters (its own share scales with the kept rows)."""
    for c in cands:
        if c.entry.get("format") == "prune" and c.params > 0:
            return int(c.entry["rank"]) * dense_params / c.params
    return max(ranks) * 8 / 7  # the widest rung keeps 7/8


def ladder(tables: Any | None) -> list[Alternative]:
    """Dense + int8, then each uniform prune ratio without and with int8 (a plan met twice, once)."""
    out = [Alternative(DENSE_INT8, {}, "int8")]
    seen: list[dict[str, Any]] = []
    for f in UNIFORM_KEEP if tables is not None else ():
        plan = uniform_prune(tables, f)
        if not plan or plan in seen:
            continue
        seen.append(plan)
        label = f"uniform prune {keep_text(f)}"
        out += [Alternative(label, plan, "fp32"), Alternative(f"{label} + int8", plan, "int8")]
    return out


def seed(study: Any, alternatives: list[Alternative], trials: int) -> int:
    """Enqueue the alternatives the study does not hold yet; returns the trials to run on top of ``trials`` so
    that every alternative waiting (a resumed study's unfinished ones included) runs, whatever the trials
    enqueued before them (the strategy's warm start)."""
    import optuna

    held = {t.user_attrs.get(LABEL_ATTR) for t in study.get_trials(deepcopy=False)}
    for alt in alternatives:
        if alt.label not in held:
            study.enqueue_trial({}, user_attrs={LABEL_ATTR: alt.label, PLAN_ATTR: alt.plan, DTYPE_ATTR: alt.dtype})
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    ours = [i for i, t in enumerate(sorted(waiting, key=lambda t: t.number)) if LABEL_ATTR in t.user_attrs]
    return max(len(ours), ours[-1] + 1 - trials) if ours else 0


def seeded(trial: Any) -> tuple[dict[str, Any], str] | None:
    """An alternative trial's (plan, dtype); None for the search's own trials."""
    attrs = trial.user_attrs
    if LABEL_ATTR not in attrs:
        return None
    return dict(attrs.get(PLAN_ATTR) or {}), str(attrs.get(DTYPE_ATTR, "fp32"))


def file_of(out: str | Path, label: str) -> Path:
    """Where an alternative's trained ONNX file is kept: ``OUT/alternatives/<slug>.onnx``."""
    return Path(out) / DIR_NAME / (re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") + ".onnx")


def keep(trial: Any, student: Any, dtype: str, task: Any, out: str | Path) -> None:
    """An alternative trial's trained student, exported (and quantized, for int8) into :func:`file_of`,
    written whole or not at all; the search's own trials keep nothing."""
    import tempfile

    from edgeopt._io import atomic_write_bytes
    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import quantize_onnx

    label = trial.user_attrs.get(LABEL_ATTR)
    if not label:
        return
    path = file_of(out, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeopt-alt-") as tmp:
        fp32 = Path(tmp) / "m.onnx"
        export_onnx(student, task.example_input, fp32, verify=False)
        if dtype == "int8":
            quantize_onnx(fp32, path, calibration=task.X_train[:64])  # atomic
        else:
            atomic_write_bytes(path, fp32.read_bytes())


def rows(study: Any, out: str | Path, score_test: Any) -> list[dict[str, Any]]:
    """The alternatives' table: per label (its first finished trial), the screen's latencies on the target,
    val and test scores (``score_test(path)``: the kept file's test metrics; None when it was not kept:
    screened out, pruned, or a repeat of another trial's plan) and whether it met every budget. An
    alternative still queued when the search ended has a row too, status ``queued`` and nothing measured."""
    table: dict[str, dict[str, Any]] = {}
    trials = study.get_trials(deepcopy=False)
    for t in sorted(trials, key=lambda t: not t.state.is_finished()):  # a finished trial of a label first
        label = t.user_attrs.get(LABEL_ATTR)
        if not label or label in table or not (t.state.is_finished() or t.state.name == "WAITING"):
            continue
        rec = TrialRecord.from_trial(t)
        path = file_of(out, label)
        screen = rec.screen
        table[label] = {
            "method": label,
            "trial": rec.number,
            "dtype": rec.dtype.value,
            "status": rec.status.value,
            "latency_p50_ms": screen.latency_p50_ms if screen else None,
            "latency_ms": screen.latency_ms if screen else None,
            "val": (rec.val or {}).get("score"),
            "test": (score_test(path) or {}).get("score") if path.exists() and rec.repeat_of is None else None,
            "onnx": str(path.relative_to(out)) if path.exists() else None,
            "meets_budget": bool(rec.feasible),
        }
    return list(table.values())


__all__ = [
    "DENSE_INT8",
    "LABEL_ATTR",
    "UNIFORM_KEEP",
    "Alternative",
    "file_of",
    "keep",
    "keep_text",
    "ladder",
    "rows",
    "seed",
    "seeded",
    "uniform_prune",
]
