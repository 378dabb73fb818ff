"""What one trial found, typed: its status, plan, dtype, screen result, metrics, constraints, timings.

:class:`TrialRecord` is the only code that reads or writes Optuna's user attributes
(:meth:`TrialRecord.save` and :meth:`TrialRecord.from_trial`); everything else — the objective, the
selection, the report, the benchmarks — works with records. Older studies stored the dtype under
``precision`` and the screen's latency at the top level; both are still read.

:class:`Constraints` owns the budget constraints: their names (also the keys Optuna stores with
``Trial.set_constraint``), the relative violation of each, and the one feasibility rule. The
quality floor (the profile's ``min_f1``) is compared with the task's own metric (its ``score``),
whatever that metric is: F1, accuracy or a callable.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace
from typing import Any

# A trial enqueued with its plan (a seeded alternative, edgeopt.search.alternatives) carries it in these
# user attributes until it runs; a queued one's record shows that plan.
PLAN_ATTR, DTYPE_ATTR = "alternative_plan", "alternative_dtype"

MIB = 1024 * 1024  # budgets in "MB" are MiB throughout edgeopt


class Status(str, enum.Enum):
    """How a trial ended, in edgeopt's terms (Optuna's state says only complete/pruned/fail)."""

    RUNNING = "running"
    TRAINED = "trained"  # distilled to the end and scored on validation
    PRUNED = "pruned"  # stopped early by the pruner
    SCREENED_OUT = "screened-out"  # over a budget before any training
    FAILED = "failed"  # raised; the search went on
    QUEUED = "queued"  # enqueued (a seeded alternative, a warm start) and never run: the search ended first

    def __str__(self) -> str:
        return self.value


class DType(str, enum.Enum):
    """The numeric type of the exported graph's weights."""

    FP32 = "fp32"
    INT8 = "int8"

    def __str__(self) -> str:
        return self.value


# --------------------------------------------------------------------------- constraints
@dataclass(frozen=True)
class Constraint:
    """One budget as an Optuna constraint: ``name`` (the key in the study), the budget field it reads."""

    name: str
    budget_field: str
    higher_is_better: bool = False

    def violation(self, measured: float | None, budget: Any) -> float:
        """Relative excess over the budget (≤ 0 satisfied); 0 when unmeasured or unbudgeted."""
        limit = getattr(budget, self.budget_field, None)
        if limit is None or measured is None:
            return 0.0
        if self.higher_is_better:
            measured, limit = -measured, -limit
        return float((measured - limit) / abs(limit))


LATENCY = Constraint("latency", "latency_ms")
PEAK_MEMORY = Constraint("peak_memory", "peak_memory_mb")
MODEL_SIZE = Constraint("model_size", "model_size_mb")
# The quality floor. The key is the profile's field name (``min_f1``); the value it is compared with
# is the task's metric.
QUALITY = Constraint("min_f1", "min_f1", higher_is_better=True)
CONSTRAINTS = (LATENCY, PEAK_MEMORY, MODEL_SIZE, QUALITY)
CONSTRAINT_NAMES = tuple(c.name for c in CONSTRAINTS)


def quality_floor_label(metric_name: str, split: str | None = None) -> str:
    """How the quality floor is named to a reader: ``quality floor (accuracy)``, ``quality floor (accuracy, test)``."""
    return f"quality floor ({metric_name}{', ' + split if split else ''})"


@dataclass(frozen=True)
class Constraints:
    """One relative violation per budget, in :data:`CONSTRAINTS` order (≤ 0 is satisfied)."""

    latency: float = 0.0
    peak_memory: float = 0.0
    model_size: float = 0.0
    min_f1: float = 0.0

    @classmethod
    def measure(
        cls,
        budget: Any,
        *,
        latency_ms: float | None = None,
        peak_memory_mb: float | None = None,
        size_bytes: float | None = None,
        score: float | None = None,
    ) -> Constraints:
        """Violations of ``budget`` (a ``Budget``) by what was measured; unmeasured ones are 0."""
        size_mb = None if size_bytes is None else size_bytes / MIB
        return cls(
            LATENCY.violation(latency_ms, budget),
            PEAK_MEMORY.violation(peak_memory_mb, budget),
            MODEL_SIZE.violation(size_mb, budget),
            QUALITY.violation(score, budget),
        )

    def values(self) -> list[float]:
        return [float(getattr(self, name)) for name in CONSTRAINT_NAMES]

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.values())

    def violated(self) -> list[str]:
        return [name for name, v in zip(CONSTRAINT_NAMES, self.values()) if v > 0]

    def total_violation(self) -> float:
        return sum(max(0.0, v) for v in self.values())

    def to_dict(self) -> dict[str, float]:
        return dict(zip(CONSTRAINT_NAMES, self.values()))

    @classmethod
    def from_values(cls, values: Any) -> Constraints | None:
        """From the stored list (or a dict by name); None for nothing stored."""
        if not values:
            return None
        if isinstance(values, dict):
            return cls(**{k: float(v) for k, v in values.items() if k in CONSTRAINT_NAMES})
        return cls(*(float(v) for v in values))

    def tell(self, trial: Any, names: tuple[str, ...] = CONSTRAINT_NAMES) -> None:
        """Hand the named constraint values to Optuna (``Trial.set_constraint``), in declared order."""
        for name in names:
            trial.set_constraint(name, getattr(self, name))


# --------------------------------------------------------------------------- screen
@dataclass(frozen=True)
class ScreenResult:
    """The untrained graph of a plan measured on the target: what the latency/memory screen found."""

    latency_ms: float  # at the budget's percentile
    latency_p50_ms: float
    latency_source: str
    peak_memory_mb: float
    size_bytes: int
    nodes: int
    params: int | None = None  # the file's initializer elements, as ``edgeopt bench`` counts them

    def to_dict(self) -> dict[str, Any]:
        d = {
            "latency_ms": self.latency_ms,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_source": self.latency_source,
            "peak_memory_mb": self.peak_memory_mb,
            "size_bytes": self.size_bytes,
            "nodes": self.nodes,
        }
        return d if self.params is None else {**d, "params": self.params}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ScreenResult | None:
        if not d or "latency_ms" not in d:
            return None
        return cls(
            latency_ms=float(d["latency_ms"]),
            latency_p50_ms=float(d.get("latency_p50_ms", math.inf)),
            latency_source=str(d.get("latency_source", "measured")),
            peak_memory_mb=float(d.get("peak_memory_mb", math.nan)),
            size_bytes=int(d.get("size_bytes", 0)),
            nodes=int(d.get("nodes", 0)),
            params=int(d["params"]) if d.get("params") is not None else None,
        )


# --------------------------------------------------------------------------- the record
@dataclass(eq=False)
class TrialRecord:
    """One trial, typed. ``val`` holds the validation metrics (``score`` is the task's metric).

    Compared by identity: two trials of the same plan are still two trials."""

    number: int = -1
    status: Status = Status.RUNNING
    plan: dict[str, Any] = field(default_factory=dict)
    dtype: DType = DType.FP32
    params: int | None = None
    macs: int | None = None
    size_bytes: int | None = None
    screen: ScreenResult | None = None
    val: dict[str, Any] = field(default_factory=dict)
    val_right: str | None = None  # which validation samples it got right (metrics.pack_right): selection's ties
    constraints: Constraints | None = None
    timings: dict[str, float] = field(default_factory=dict)
    repeat_of: int | None = None
    weights_of: str | None = None  # "teacher" or "trial N": weights taken, not trained (objective._trained_weights)
    warm_start: str | None = None
    error: str | None = None
    state: str = "running"  # Optuna's trial state, lower case
    values: tuple[float, ...] | None = None  # what the objective returned
    duration_s: float | None = None
    worker: str | None = None  # "host:pid" of the process that ran it (set when the trial starts)

    # -- derived
    @property
    def feasible(self) -> bool:
        """Trained to the end and within every budget: the one feasibility rule."""
        return self.status is Status.TRAINED and self.constraints is not None and self.constraints.feasible

    @property
    def score(self) -> float | None:
        return self.val.get("score")

    @property
    def latency_ms(self) -> float | None:
        return self.screen.latency_ms if self.screen else None

    @property
    def latency_p50_ms(self) -> float:
        return self.screen.latency_p50_ms if self.screen else math.inf

    # -- Optuna user attributes: the one conversion each way
    def user_attrs(self) -> dict[str, Any]:
        """What :meth:`save` stores (JSON-able)."""
        attrs: dict[str, Any] = {
            "status": self.status.value,
            "plan": self.plan,
            "dtype": self.dtype.value,
            "val": self.val,
            "time_s": {k: round(v, 4) for k, v in self.timings.items()},
        }
        optional = {
            "params": self.params,
            "macs": self.macs,
            "size_bytes": self.size_bytes,
            "screen": self.screen.to_dict() if self.screen else None,
            "constraints": self.constraints.values() if self.constraints else None,
            "repeat_of": self.repeat_of,
            "weights_of": self.weights_of,
            "error": self.error,
            "val_right": self.val_right,
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        # Read by people in optuna-dashboard (the structured keys above are what edgeopt reads back).
        attrs["plan_str"] = plan_str(self.plan, self.dtype.value)
        if self.constraints:
            attrs["budget_violation"] = {k: round(v, 4) for k, v in self.constraints.to_dict().items()}
        return attrs

    def save(self, trial: Any) -> None:
        """Write the record into the trial's user attributes."""
        for key, value in self.user_attrs().items():
            trial.set_user_attr(key, value)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], *, number: int = -1, state: str = "running") -> TrialRecord:
        """A record from stored user attributes (this version's or an older study's)."""
        screen = ScreenResult.from_dict(attrs.get("screen"))
        if screen is None and attrs.get("latency_ms") is not None:  # very old studies: top level only
            screen = ScreenResult(
                float(attrs["latency_ms"]),
                math.inf,
                str(attrs.get("latency_source", "measured")),
                math.nan,
                int(attrs.get("size_bytes") or 0),
                0,
            )
        default_status = {"fail": Status.FAILED, "pruned": Status.PRUNED, "waiting": Status.QUEUED}.get(
            state, Status.RUNNING
        )
        # A queued alternative has run nothing yet: its plan and dtype are those it was enqueued with.
        return cls(
            number=number,
            status=Status(attrs.get("status", default_status)),
            plan=attrs.get("plan") or attrs.get(PLAN_ATTR) or {},
            dtype=DType(attrs.get("dtype", attrs.get("precision", attrs.get(DTYPE_ATTR, "fp32")))),
            params=attrs.get("params"),
            macs=attrs.get("macs"),
            size_bytes=attrs.get("size_bytes"),
            screen=screen,
            val=attrs.get("val") or {},
            val_right=attrs.get("val_right"),
            constraints=Constraints.from_values(attrs.get("constraints")),
            timings=dict(attrs.get("time_s") or {}),
            repeat_of=attrs.get("repeat_of"),
            weights_of=attrs.get("weights_of"),
            warm_start=attrs.get("warm_start"),
            error=attrs.get("error"),
            state=state,
            worker=attrs.get("worker"),
        )

    @classmethod
    def from_trial(cls, trial: Any) -> TrialRecord:
        """A record from an Optuna ``FrozenTrial`` (its user attributes, state, values and duration)."""
        state = trial.state.name.lower()
        rec = cls.from_attrs(trial.user_attrs, number=trial.number, state=state)
        values = getattr(trial, "values", None)
        duration = getattr(trial, "duration", None)
        error = rec.error or (getattr(trial, "system_attrs", None) or {}).get("fail_reason")
        return replace(
            rec,
            values=tuple(values) if values else None,
            error=error,
            duration_s=duration.total_seconds() if duration else None,
        )

    def copy_result_of(self, other: TrialRecord) -> None:
        """Take ``other``'s measurements and outcome (a repeated plan is not trained twice)."""
        for name in ("params", "macs", "size_bytes", "screen", "val", "val_right", "constraints", "status"):
            setattr(self, name, getattr(other, name))
        self.repeat_of = other.number


def plan_str(plan: dict[str, Any] | None, dtype: str = "fp32") -> str:
    """``fc1:lr8+int8 fc2:tt4``: each layer's label from its format's handler (``+int8``: that layer runs
    int8); a trailing `` int8``: the whole artifact quantized (``DType.INT8``)."""
    from edgeopt.compiler.formats import short_label

    suffix = " int8" if dtype == "int8" else ""
    if not plan:
        return short_label(None) + suffix
    return " ".join(f"{name}:{short_label(spec)}" for name, spec in plan.items()) + suffix


def records(study: Any, states: tuple[Any, ...] | None = None) -> list[TrialRecord]:
    """Every trial of ``study`` (of the given Optuna states, if any) as records."""
    return [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False, states=states)]


__all__ = [
    "CONSTRAINTS",
    "CONSTRAINT_NAMES",
    "MIB",
    "Constraint",
    "Constraints",
    "DType",
    "ScreenResult",
    "Status",
    "TrialRecord",
    "plan_str",
    "quality_floor_label",
    "records",
]
