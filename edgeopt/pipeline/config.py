"""How a compile runs: :class:`CompileConfig`, frozen and validated, in sections; the loop's fixed settings.

Every setting is declared once, on a field of its section (:func:`option`): its default, its type and
bounds (a :class:`~edgeopt._validate.Spec`), its help and its ``edgeopt compile`` flag. From that one
declaration come the checks of ``CompileConfig(...)``, the flags (:mod:`edgeopt.pipeline.flags`) and the
tables of a config file (:mod:`edgeopt.pipeline.config_file`: ``edgeopt compile --config FILE.toml``, and
the resolved ``OUT/compile.toml`` every compile writes).

``CompileConfig(trials=3, out="runs/x")`` takes the settings by their own names too (each name belongs to
one section) and reads them back the same way (``config.trials``). Bad values fail at construction with
the one message template of :mod:`edgeopt._validate` (``compile(): trials: expected an integer >= 0, found ...``).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from edgeopt import _validate
from edgeopt.models.examples import example_names
from edgeopt.pipeline._paths import check_out_dir, check_out_file
from edgeopt.search.strategies import STRATEGY_NAMES

# Epochs of distillation inside a trial, and for the final fine-tune of the chosen plan.
TRIAL_EPOCHS = 12
FINAL_EPOCHS = 80
# The latency screen: quick, since only the plan's structure matters (not its weights).
SCREEN_BENCH = MappingProxyType({"min_iters": 40, "min_time_s": 0.1, "max_iters": 2000})
# Near-tied finalists are measured again, as long as the release measurement (FINAL_BENCH), before one
# is chosen: on a busy host a shorter window misses the bursts a longer one catches, and its p95 reads
# low (resnet8, one core busy: finalists' p95 0.111 ms over 0.6 s, the release's 0.150 ms over 2 s).
FINALISTS = 5
# The artifact's release-grade measurement.
FINAL_BENCH = MappingProxyType({"min_iters": 300, "min_time_s": 2.0, "max_iters": 20000})
# How ``time_budget_s`` is split: the search ends by this fraction of it; the rest, less the
# export/bench reserve, goes to the final fine-tune.
TIME_SPLIT = MappingProxyType({"search": 0.70, "ship_reserve": 0.05})
# The whole compile's default time budget: 10 minutes on 2 cores for a ~1M-parameter, ~40-layer model;
# small models end well before it. None (``--time-budget 0``): no limit.
TIME_BUDGET_S = 600.0
# Without a min_f1, the artifact may score at most this much below the input model (5 pt).
MAX_QUALITY_DROP = 0.05
# The shipped file carries its plan and metrics in metadata_props; the screened export does not yet.
PROVENANCE_BYTES = 1024

# "score" maximizes the task's metric; "f1", its older name, is read as "score" with a deprecation warning.
OBJECTIVES = ("score", "pareto")
DEPRECATED_OBJECTIVES = MappingProxyType({"f1": "score"})
SAMPLERS = ("tpe", "random")
SEARCHES = STRATEGY_NAMES  # the registered search strategies (edgeopt.search.strategies), live
TRAIN_DEVICES = ("auto", "cpu", "cuda")  # as edgeopt.compiler.teacher.TRAIN_DEVICES (no torch import here)
BUDGET_KEYS = ("latency_ms", "peak_memory_mb", "model_size_mb", "min_f1")
BENCH_KEYS = ("min_iters", "min_time_s", "max_iters", "warmup", "on_device", "seed")
_WHERE = "compile()"
_Spec = _validate.Spec


def search_strategies() -> tuple[str, ...]:
    """The names ``search=`` / ``--search`` accept."""
    return SEARCHES


def option(
    default: Any,
    spec: _validate.Spec | None,
    help: str,  # noqa: A002 - argparse's word for it
    *,
    flag: str | tuple[str, ...] | None = None,
    metavar: str | None = None,
    saved: bool = True,
) -> Any:
    """A setting: its default, its type and bounds (``spec``; None: checked by its section), its help, its CLI
    flag(s) (None: none) and whether the config file holds it (``saved``; if not, it is no part of equality)."""
    flags = (flag,) if isinstance(flag, str) else tuple(flag or ())
    meta = {"spec": spec, "doc": help, "flags": flags, "metavar": metavar, "saved": saved}
    return dataclasses.field(default=default, compare=saved, metadata={k: v for k, v in meta.items() if v is not None})


def _num(**bounds: Any) -> _validate.Spec:
    return _Spec("num", **bounds)


def _opt_str() -> _validate.Spec:
    return _Spec("str", nonempty=True, optional=True)


class _Section:
    """A section's fields are checked against their declared specs when it is built."""

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            spec = declared(type(self), f.name)
            if spec is not None:
                object.__setattr__(self, f.name, spec.check(getattr(self, f.name), _WHERE, f.name))


def declared(cls: type, name: str) -> _validate.Spec | None:
    """The declared spec of setting ``name`` of section ``cls`` (a budget override: the target profile's own)."""
    if cls is BudgetSettings and name in BUDGET_KEYS:
        from edgeopt._validate import specs
        from edgeopt.runtime.targets import Budget

        return specs(Budget)[name][0]
    return next(f.metadata.get("spec") for f in fields(cls) if f.name == name)


@dataclass(frozen=True)
class RunSettings(_Section):
    """What the command line loaded (``compile()`` takes the task and target as arguments and ignores these,
    except that ``workers`` > 1 needs ``task`` or ``example`` to start worker processes)."""

    name: ClassVar[str] = "run"
    task: str | None = option(None, _opt_str(), "path/to/file.py:function returning an edgeopt.Task")
    example: str | None = option(
        None, _opt_str(), f"a bundled example instead of TASK: {', '.join(example_names())}", flag="--example"
    )
    target: str | None = option(None, _opt_str(), "target profile name or path", flag=("--target", "-t"))
    remote: str | None = option(
        None,
        _opt_str(),
        "measure every trial on the device at HOST over ssh (sets the target's [remote] host)",
        flag="--remote",
        metavar="HOST",
    )
    on_device: bool = option(
        False, _Spec("bool"), "this machine is the target: measure, do not predict", flag="--on-device"
    )
    json: str | None = option(None, _opt_str(), "also write the report JSON to this file", flag="--json")


@dataclass(frozen=True)
class OptimizeSettings(_Section):
    """The search: how many trials, which strategy, what it maximizes."""

    name: ClassVar[str] = "optimize"
    trials: int = option(
        30, _Spec("int", minimum=0), "trials to run now (re-running with the same --out resumes)", flag="--trials"
    )
    search: str = option(
        "allocation",
        _Spec("str", choices=SEARCHES),
        "allocation: per-layer tables, then Optuna samples a few knobs of a knapsack allocation; "
        "layers: Optuna samples a format and rank per layer",
        flag="--search",
    )
    objective: str = option(
        "score",
        _Spec("str", choices=OBJECTIVES),
        "score: the task's metric under the budgets; pareto: the metric vs target latency as two objectives",
        flag="--objective",
    )
    sampler: str = option("tpe", _Spec("str", choices=SAMPLERS), "Optuna sampler", flag="--sampler")
    seed: int = option(0, _Spec("int"), "seed of the sampler, the training and the splits", flag="--seed")
    int8: bool = option(False, _Spec("bool"), "deprecated: int8 is chosen per layer by default", flag="--int8")
    fp32: bool = option(False, _Spec("bool"), "keep every layer fp32 (no int8 rung in the tables)", flag="--fp32")
    no_alternatives: bool = option(
        False, _Spec("bool"), "skip the alternatives (dense int8, uniform pruning ± int8)", flag="--no-alternatives"
    )
    f1_tolerance: float = option(
        0.005,
        _num(minimum=0, maximum=1),
        "plans within this (or one standard error, paired) of the best val score tie; the fastest of them ships",
    )

    def __post_init__(self) -> None:
        new = DEPRECATED_OBJECTIVES.get(self.objective) if isinstance(self.objective, str) else None
        if new is not None:
            warnings.warn(
                f"objective {self.objective!r} is deprecated: use {new!r} (the task's metric)",
                DeprecationWarning,
                stacklevel=4,
            )
            object.__setattr__(self, "objective", new)
        super().__post_init__()


@dataclass(frozen=True)
class TrainSettings(_Section):
    """Distillation inside a trial and the final fine-tune of the chosen plan."""

    name: ClassVar[str] = "train"
    trial_epochs: int = option(TRIAL_EPOCHS, _Spec("int", minimum=1), "distillation epochs per trial", flag="--epochs")
    final_epochs: int = option(
        FINAL_EPOCHS, _Spec("int", minimum=0), "fine-tuning epochs for the chosen plan", flag="--final-epochs"
    )
    lr: float = option(3e-3, _num(minimum=0, min_exclusive=True), "Adam learning rate of the distillation")
    train_device: str = option(
        "auto",
        _Spec("str", choices=TRAIN_DEVICES),
        "where distillation runs (auto: CUDA when torch sees one)",
        flag="--train-device",
    )


@dataclass(frozen=True)
class BudgetSettings(_Section):
    """Overrides of the target's budgets (None: the profile's own), and the quality floor without one."""

    name: ClassVar[str] = "budget"
    latency_ms: float | None = option(None, None, "override the target's latency budget", flag="--latency-ms")
    peak_memory_mb: float | None = option(None, None, "override the target's peak-memory budget", flag="--memory-mb")
    model_size_mb: float | None = option(None, None, "override the target's model-size budget", flag="--size-mb")
    min_f1: float | None = option(
        None, None, "override the target's quality floor (compared with the task's metric)", flag="--min-f1"
    )
    max_quality_drop: float | None = option(
        MAX_QUALITY_DROP,
        _num(minimum=0, maximum=1, optional=True),
        "without a min_f1, the artifact must score at least the input model's score less D on the same "
        "split, or exit 1 (1 turns it off)",
        flag="--max-quality-drop",
        metavar="D",
    )

    def overrides(self) -> Mapping[str, float]:
        """The target budget fields to override (those set)."""
        return MappingProxyType({k: getattr(self, k) for k in BUDGET_KEYS if getattr(self, k) is not None})


@dataclass(frozen=True)
class TimeSettings(_Section):
    """How long the compile may take."""

    name: ClassVar[str] = "time"
    time_budget_s: float | None = option(
        TIME_BUDGET_S,
        _num(minimum=0, min_exclusive=True, optional=True),
        "seconds for the compile once the task is loaded: tables and baseline, search (to 70%%), final fine-tune, "
        "export (0: no limit)",
        flag="--time-budget",
        metavar="S",
    )
    timeout: float | None = option(
        None, _num(minimum=0, min_exclusive=True, optional=True), "stop the search after S seconds", flag="--timeout"
    )


@dataclass(frozen=True)
class StudySettings(_Section):
    """Where the Optuna study lives and who runs its trials."""

    name: ClassVar[str] = "study"
    storage: str | None = option(
        None, _opt_str(), "Optuna storage URL (default: sqlite study.db in --out), for many workers", flag="--storage"
    )
    study_name: str | None = option(None, _opt_str(), "study name (default: TASK-TARGET)", flag="--study")
    workers: int = option(
        1,
        _Spec("int", minimum=1),
        "N local worker processes on the study (one torch thread each), then ship the best (1: this process)",
        flag="--workers",
        metavar="N",
    )
    search_only: bool = option(
        False,
        _Spec("bool"),
        "run the trials and stop without shipping: a worker of a search that another run ships "
        "(--trials 0 with the same --storage and --study)",
        flag="--search-only",
    )


@dataclass(frozen=True)
class OutputSettings(_Section):
    """Where the artifact goes and how it is measured."""

    name: ClassVar[str] = "output"
    out: Path = option(Path("runs/x"), None, "output dir", flag=("--out", "-o"))
    final_bench: Mapping[str, Any] | None = option(None, None, "bench settings of the baseline and the artifact")
    progress: bool = option(True, _Spec("bool"), "progress on stderr", saved=False)

    def __post_init__(self) -> None:
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out):
            raise _validate.fail(_WHERE, "out", "a path", self.out)
        object.__setattr__(self, "out", Path(self.out))
        if self.final_bench is not None:
            object.__setattr__(self, "final_bench", _mapping(self.final_bench, "final_bench", BENCH_KEYS))
        super().__post_init__()


SECTIONS: tuple[type, ...] = (
    RunSettings,
    OptimizeSettings,
    TrainSettings,
    BudgetSettings,
    TimeSettings,
    StudySettings,
    OutputSettings,
)
# setting name -> its section's attribute on CompileConfig
_HOME = MappingProxyType({f.name: cls.name for cls in SECTIONS for f in fields(cls)})


@dataclass(frozen=True, init=False)
class CompileConfig:
    """Settings of one ``compile()`` call, in sections (``config.optimize.trials``, or ``config.trials``).

    Build it from sections, from the settings by name (``CompileConfig(trials=3, out="runs/x")``), or
    both (the names win); ``budget=`` also takes a dict of the target budget overrides. The help of every
    setting is the ``help`` of its field (``edgeopt compile --help`` prints them); the non-obvious ones:

    search_only: a worker of a search another run ships (``trials=0`` with the same ``storage`` and
        ``study_name``). workers: local worker processes on the study; they load the task from ``run``
        (``task`` or ``example``), which the CLI sets (see :mod:`edgeopt.pipeline.workers`).
    time_budget_s: split as :data:`TIME_SPLIT` says: the search up to ``search`` of it, the rest for
        selection, the final fine-tune (its epochs cut to fit) and the export; None: no limit.
    """

    run: RunSettings
    optimize: OptimizeSettings
    train: TrainSettings
    budget: BudgetSettings
    time: TimeSettings
    study: StudySettings
    output: OutputSettings

    def __init__(self, **settings: Any) -> None:
        if isinstance(settings.get("budget"), Mapping) or settings.get("budget", BudgetSettings()) is None:
            # budget={"latency_ms": 0.3, "min_f1": None}: the overrides by name (None: not overridden)
            settings.update(_mapping(settings.pop("budget"), "budget", BUDGET_KEYS))
        for cls in SECTIONS:
            section = settings.pop(cls.name, None) or cls()
            if not isinstance(section, cls):
                raise _validate.fail(_WHERE, cls.name, f"an edgeopt {cls.__name__}", section)
            mine = {k: settings.pop(k) for k in list(settings) if _HOME.get(k) == cls.name}
            object.__setattr__(self, cls.name, dataclasses.replace(section, **mine) if mine else section)
        if settings:
            key = sorted(settings)[0]
            raise _validate.unknown_key(_WHERE, key, [*_HOME, *(c.name for c in SECTIONS)])

    def __getattr__(self, key: str) -> Any:
        home = _HOME.get(key)
        if home is None:
            raise AttributeError(f"CompileConfig has no setting {key!r}")
        return getattr(object.__getattribute__(self, home), key)

    def replace(self, **settings: Any) -> CompileConfig:
        """A copy with ``settings`` (by name) changed."""
        return CompileConfig(**{c.name: getattr(self, c.name) for c in SECTIONS}, **settings)

    @property
    def directions(self) -> list[str]:
        """Optuna's study directions for the objective."""
        return ["maximize"] if self.objective == "score" else ["maximize", "minimize"]

    def artifact_bench(self) -> dict[str, Any]:
        """Bench settings of the baseline and the shipped artifact."""
        return dict(self.final_bench or FINAL_BENCH)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every setting by name, with its default."""
        return {f.name: f.default for s in SECTIONS for f in fields(s)}


def _mapping(value: Any, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _validate.fail(_WHERE, key, "a dict", value)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise _validate.fail(_WHERE, f"{key}[{unknown[0]!r}]", "one of the keys " + ", ".join(allowed), unknown[0])
    return MappingProxyType(dict(value))


__all__ = [
    "SECTIONS",
    "BudgetSettings",
    "CompileConfig",
    "FINALISTS",
    "FINAL_BENCH",
    "FINAL_EPOCHS",
    "MAX_QUALITY_DROP",
    "OptimizeSettings",
    "OutputSettings",
    "PROVENANCE_BYTES",
    "RunSettings",
    "SCREEN_BENCH",
    "StudySettings",
    "TIME_BUDGET_S",
    "TIME_SPLIT",
    "TRIAL_EPOCHS",
    "TimeSettings",
    "TrainSettings",
    "check_out_dir",
    "check_out_file",
    "option",
    "search_strategies",
]
