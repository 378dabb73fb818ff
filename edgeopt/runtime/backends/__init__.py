"""Measurement backends: how a job is run for a target (here, over SSH, or predicted), behind one
interface (:class:`MeasurementBackend`) and a registry (:func:`register_backend`); ``bench`` and
``compare`` decide once with :func:`backend_for`. See ``_base`` for how to add one."""

from typing import Any

from edgeopt.runtime.backends._base import (
    MeasurementBackend,
    backend_for,
    backend_names,
    checked,
    get_backend,
    measurement_job,
    register_backend,
    unregister_backend,
)

# the built-in classes load on first use: ``targets`` imports this package for the names only
_LAZY = {"LocalBackend": "local", "PredictedBackend": "predicted", "SshBackend": "ssh"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return get_backend(_LAZY[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MeasurementBackend",
    "LocalBackend",
    "PredictedBackend",
    "SshBackend",
    "register_backend",
    "unregister_backend",
    "backend_names",
    "get_backend",
    "backend_for",
    "measurement_job",
    "checked",
]
