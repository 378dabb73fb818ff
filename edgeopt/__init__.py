"""edgeopt: an edge-deployment compiler and benchmarker.

The runtime half (``Target``, ``bench``, ``gate``) needs only onnxruntime, numpy and psutil;
importing ``edgeopt`` never imports torch. The compiler half (``Task``, ``compile``,
``decompose``, ``distill``, ``export_onnx``) loads on first use and needs ``edgeopt[compile]``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edgeopt._version import __version__
from edgeopt.errors import (
    EdgeoptError,
    InputError,
    MissingDependencyError,
    ModelError,
    TargetError,
)

# public name -> (module, attribute); loaded lazily so the runtime half stays torch-free.
_LAZY = {
    # runtime half
    "Target": ("edgeopt.runtime.targets", "Target"),
    "bench": ("edgeopt.runtime.bench", "bench"),
    "BenchResult": ("edgeopt.runtime.bench", "BenchResult"),
    "gate": ("edgeopt.runtime.gate", "gate"),
    "GateResult": ("edgeopt.runtime.gate", "GateResult"),
    # compiler half
    "decompose": ("edgeopt.compiler.decompose", "decompose"),
    "plan_cost": ("edgeopt.compiler.decompose", "plan_cost"),
    "distill": ("edgeopt.compiler.distill", "distill"),
    "export_onnx": ("edgeopt.compiler.export", "export_onnx"),
    "metrics": ("edgeopt.compiler.metrics", None),
    "Task": ("edgeopt.pipeline.task", "Task"),
    "compile": ("edgeopt.pipeline.loop", "compile"),
    "CompileResult": ("edgeopt.pipeline.loop", "CompileResult"),
    "CompileConfig": ("edgeopt.pipeline.config", "CompileConfig"),
}

__all__ = [
    "__version__",
    "EdgeoptError",
    "InputError",
    "MissingDependencyError",
    "ModelError",
    "TargetError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'edgeopt' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from edgeopt.compiler import metrics
    from edgeopt.compiler.decompose import decompose, plan_cost
    from edgeopt.compiler.distill import distill
    from edgeopt.compiler.export import export_onnx
    from edgeopt.pipeline.config import CompileConfig
    from edgeopt.pipeline.loop import CompileResult, compile  # noqa: A004 - edgeopt.compile is the public verb
    from edgeopt.pipeline.task import Task
    from edgeopt.runtime.bench import BenchResult, bench
    from edgeopt.runtime.gate import GateResult, gate
    from edgeopt.runtime.targets import Target
