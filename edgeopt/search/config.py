"""How a compile runs: :class:`CompileConfig`, frozen and validated, and the loop's fixed settings.

Everything ``compile()`` takes besides the task and the target is one field here; ``compile()``
builds one from its keywords (or takes ``config=``). Bad values fail at construction with the one
message template of :mod:`edgeopt._validate` (``compile(): trials: expected an integer >= 0, found ...``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgeopt import _validate
from edgeopt.errors import InputError
from edgeopt.search.strategies import STRATEGY_NAMES

# Epochs of distillation inside a trial, and for the final fine-tune of the chosen plan.
TRIAL_EPOCHS = 12
FINAL_EPOCHS = 80
# The latency screen: quick, since only the plan's structure matters (not its weights).
SCREEN_BENCH = MappingProxyType({"min_iters": 40, "min_time_s": 0.1, "max_iters": 2000})
# Near-tied finalists are measured again, longer, before one is chosen.
FINALIST_BENCH = MappingProxyType({"min_iters": 200, "min_time_s": 0.6, "max_iters": 20000})
FINALISTS = 5
# The artifact's release-grade measurement.
FINAL_BENCH = MappingProxyType({"min_iters": 300, "min_time_s": 2.0, "max_iters": 20000})
# How ``time_budget_s`` is split: the search ends by this fraction of it; the rest, less the
# export/bench reserve, goes to the final fine-tune.
TIME_SPLIT = MappingProxyType({"search": 0.70, "ship_reserve": 0.05})
# The whole compile's default time budget: 10 minutes, on 2 cores, for a ~1M-parameter, ~40-layer
# model (issue 9); small models end well before it. None (``--time-budget 0``): no limit.
TIME_BUDGET_S = 600.0
# Without a min_f1, the artifact may score at most this much below the input model (5 pt).
MAX_QUALITY_DROP = 0.05
# The shipped file carries its plan and metrics in metadata_props; the screened export does not yet.
PROVENANCE_BYTES = 1024

OBJECTIVES = ("f1", "pareto")
SAMPLERS = ("tpe", "random")
SEARCHES = STRATEGY_NAMES  # the registered search strategies (edgeopt.search.strategies), live
TRAIN_DEVICES = ("auto", "cpu", "cuda")  # as edgeopt.compiler.teacher.TRAIN_DEVICES (no torch import here)
BUDGET_KEYS = ("latency_ms", "peak_memory_mb", "model_size_mb", "min_f1")
BENCH_KEYS = ("min_iters", "min_time_s", "max_iters", "warmup", "on_device", "seed")
_WHERE = "compile()"
_Spec = _validate.Spec
# The declared bounds of CompileConfig's scalar fields: checked on construction, and by the CLI on each
# flag as it is parsed (``edgeopt compile: --trials: expected an integer >= 0, found ...``).
SPECS = MappingProxyType(
    {
        "trials": _Spec("int", minimum=0),
        "seed": _Spec("int"),
        "timeout": _Spec("num", minimum=0, min_exclusive=True, optional=True),
        "max_quality_drop": _Spec("num", minimum=0, maximum=1, optional=True),
        "time_budget_s": _Spec("num", minimum=0, min_exclusive=True, optional=True),
        "objective": _Spec("str", choices=OBJECTIVES),
        "sampler": _Spec("str", choices=SAMPLERS),
        "train_device": _Spec("str", choices=TRAIN_DEVICES),
        "search": _Spec("str", choices=SEARCHES),
        "workers": _Spec("int", minimum=1),
        "trial_epochs": _Spec("int", minimum=1),
        "final_epochs": _Spec("int", minimum=0),
        "f1_tolerance": _Spec("num", minimum=0, maximum=1),
        "lr": _Spec("num", minimum=0, min_exclusive=True),
    }
)


@dataclass(frozen=True)
class CompileConfig:
    """Settings of one ``compile()`` call.

    trials: trials to run in this call (re-running with the same ``out`` resumes the study).
    out: output dir (``model.onnx``, ``baseline.onnx``, ``report.*``, ``plots/``, ``study.db``).
    storage: any Optuna storage URL (default: SQLite ``study.db`` in ``out``), for many workers.
    study_name: default ``<task>-<target>``.
    objective: ``"f1"`` maximizes the task's metric under the budgets; ``"pareto"`` searches it
        against target latency as two objectives.
    int8: add int8 quantization (onnxruntime) to the search, next to the per-layer formats.
    budget: overrides of the target's budget fields (``latency_ms``, ``peak_memory_mb``,
        ``model_size_mb``, ``min_f1``); None values are ignored.
    f1_tolerance: plans whose validation score is within this of the best feasible one count as
        equally good; the fastest of them on the target (re-measured; within 3%) ships, then the one
        with fewest nodes.
    lr: Adam learning rate of the distillation (SVD/TT-SVD-initialized students recover within a
        few epochs at 3e-3).
    final_bench: the artifact's bench settings (default :data:`FINAL_BENCH`).
    train_device: where distillation runs: ``"auto"`` (CUDA when torch sees one, else CPU), ``"cpu"``
        or ``"cuda"``.
    search_only: run the trials and stop (no selection, no artifact): a worker of a search that
        another run ships (``trials=0`` with the same ``storage`` and ``study_name``).
    workers: local worker processes on the study (``edgeopt compile --workers N``); more than one
        needs ``worker_argv``, the ``edgeopt compile`` command line that loads the task, which the
        CLI sets (see :mod:`edgeopt.search.workers`).
    search: the name of a registered search strategy (:mod:`~edgeopt.search.strategies`):
        ``"allocation"`` (default): per-layer latency and sensitivity tables are built first
        (:mod:`~edgeopt.search.allocation`), a budget below the fastest plan is refused, and each trial
        trains the knapsack allocation of a few knobs Optuna samples; ``"layers"``: Optuna samples a
        format and rank per layer.
    max_quality_drop: with no ``min_f1`` in the budget, the artifact must score at least the input
        model's score less this (0.05: 5 pt) on the same split, or the compile exits 1 and says so
        (``--max-quality-drop``); trials are not held to it. None: no floor unless the profile sets one.
    time_budget_s: seconds for the whole compile (``--time-budget``), split as
        :data:`TIME_SPLIT` says: what ``prepare`` takes (tables, baseline), the search up to
        ``search`` of the budget (stopped before a trial that would likely overrun it), and the rest
        for selection, the final fine-tune (its epochs cut to what the trials' seconds per epoch
        allow) and the artifact's export and bench. Default :data:`TIME_BUDGET_S`; None: no limit
        (``timeout`` still bounds the search).
    """

    trials: int = 30
    out: Path = Path("runs/x")
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    timeout: float | None = None
    objective: str = "f1"
    int8: bool = False
    budget: Mapping[str, Any] = field(default_factory=dict)
    trial_epochs: int = TRIAL_EPOCHS
    final_epochs: int = FINAL_EPOCHS
    sampler: str = "tpe"
    final_bench: Mapping[str, Any] | None = None
    f1_tolerance: float = 0.005
    lr: float = 3e-3
    progress: bool = True
    train_device: str = "auto"
    search_only: bool = False
    workers: int = 1
    worker_argv: tuple[str, ...] | None = None
    search: str = "allocation"
    time_budget_s: float | None = TIME_BUDGET_S
    max_quality_drop: float | None = MAX_QUALITY_DROP

    def __post_init__(self) -> None:
        v = _validate
        for key, spec in SPECS.items():
            spec.check(getattr(self, key), _WHERE, key)
        if not isinstance(self.out, (str, os.PathLike)):
            raise v.fail(_WHERE, "out", "a path", self.out)
        object.__setattr__(self, "out", Path(self.out))
        for key in ("storage", "study_name"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise v.fail(_WHERE, key, "a non-empty string or None", value)
        if self.worker_argv is not None:
            object.__setattr__(self, "worker_argv", tuple(str(a) for a in self.worker_argv))
        for key in ("int8", "progress", "search_only"):
            if not isinstance(getattr(self, key), bool):
                raise v.fail(_WHERE, key, "a boolean", getattr(self, key))
        object.__setattr__(self, "budget", _mapping(self.budget, "budget", BUDGET_KEYS, drop_none=True))
        if self.final_bench is not None:
            object.__setattr__(self, "final_bench", _mapping(self.final_bench, "final_bench", BENCH_KEYS))

    @property
    def directions(self) -> list[str]:
        """Optuna's study directions for the objective."""
        return ["maximize"] if self.objective == "f1" else ["maximize", "minimize"]

    def artifact_bench(self) -> dict[str, Any]:
        """Bench settings of the baseline and the shipped artifact."""
        return dict(self.final_bench or FINAL_BENCH)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: getattr(cls(), f.name) for f in fields(cls)}


_OUT_DIR = "a directory (created if missing) in a writable place"


def check_out_dir(path: str | os.PathLike[str], where: str = _WHERE, key: str = "out") -> Path:
    """An output dir that ``compile()`` can create or write: a directory, or a new path whose nearest existing
    ancestor is a writable directory. Checked without writing anything (the CLI, before loading the task)."""
    p = Path(os.path.abspath(path))
    if p.exists() and not p.is_dir():
        raise _found(where, key, _OUT_DIR, f"the file {str(path)!r}")
    _check_writable_parent(p if p.is_dir() else p.parent, str(path), where, key, _OUT_DIR)
    return Path(path)


def check_out_file(path: str | os.PathLike[str], where: str, key: str) -> Path:
    """A file that can be written atomically: not a directory, in an existing writable directory."""
    p = Path(os.path.abspath(path))
    expected = "a file in an existing writable directory"
    if p.is_dir():
        raise _found(where, key, expected, f"the directory {str(path)!r}")
    if not p.parent.is_dir():
        raise _found(where, key, expected, f"{str(path)!r}, whose directory {str(p.parent)!r} does not exist")
    _check_writable_parent(p.parent, str(path), where, key, expected)
    return Path(path)


def _check_writable_parent(p: Path, given: str, where: str, key: str, expected: str) -> None:
    """The nearest existing ancestor of ``p`` (``p`` itself if it exists) is a writable directory."""
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise _found(where, key, expected, f"{given!r}, under the file {str(p)!r}")
    if not os.access(p, os.W_OK | os.X_OK) or _read_only(p):
        raise _found(where, key, expected, f"{given!r}, where {str(p)!r} is not writable")


def _found(where: str, key: str, expected: str, found: str) -> InputError:
    """The one template, with ``found`` already worded (a path and what is wrong with it)."""
    return InputError(f"{where}: {key}: expected {expected}, found {found}")


def _read_only(p: Path) -> bool:
    """On a read-only filesystem (which ``os.access`` does not say for root)."""
    try:
        return bool(os.statvfs(p).f_flag & getattr(os, "ST_RDONLY", 1))
    except (OSError, AttributeError):
        return False


def _mapping(value: Any, key: str, allowed: tuple[str, ...], *, drop_none: bool = False) -> Mapping[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _validate.fail(_WHERE, key, "a dict", value)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise _validate.fail(_WHERE, f"{key}[{unknown[0]!r}]", "one of the keys " + ", ".join(allowed), unknown[0])
    return MappingProxyType({k: v for k, v in value.items() if not (drop_none and v is None)})


__all__ = [
    "SPECS",
    "check_out_dir",
    "check_out_file",
    "FINALISTS",
    "FINALIST_BENCH",
    "FINAL_BENCH",
    "FINAL_EPOCHS",
    "MAX_QUALITY_DROP",
    "PROVENANCE_BYTES",
    "SCREEN_BENCH",
    "TIME_BUDGET_S",
    "TIME_SPLIT",
    "TRIAL_EPOCHS",
    "CompileConfig",
]
