"""Optional dependencies fail late, with the one-line install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgeopt.errors import MissingDependencyError

COMPILE_HINT = 'pip install "edgeopt[compile]" (add -c constraints.txt to take the CPU build of torch)'


def require(module: str, *, feature: str = "the compiler half") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised in the runtime-only CI job
        raise MissingDependencyError(
            f"{feature} needs '{module.split('.')[0]}', which is not installed: {COMPILE_HINT}"
        ) from exc


def require_compile_stack() -> None:
    """Check, before any work, that every package of the compiler half imports."""
    for name in ("torch", "onnx", "optuna", "tensorly", "sklearn"):
        require(name)
