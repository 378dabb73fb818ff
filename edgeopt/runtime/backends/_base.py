"""The measurement backend interface and its registry.

A backend is how one measurement job (the JSON the ``_worker`` child runs) is run for a target: in
a fresh process here (``local``), on the device over SSH (``ssh``), or here with the latency
predicted for the target (``predicted``). ``bench`` and ``compare`` ask :func:`backend_for` once
and then only talk to the backend, as Olive's passes talk to an ``OliveSystem``.

A new backend (a phone over adb) is one file: a :class:`MeasurementBackend` subclass with ``name``
and ``measure``, and ``register_backend(MyBackend)``; a profile selects it with ``backend = "NAME"``
(its ``[remote]`` table says where the device is). The built-ins are registered below by module
path, so this module imports none of them (nor ``targets``) and any module may import it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgeopt import _validate
from edgeopt.errors import InputError, ModelError, TargetError

if TYPE_CHECKING:
    from edgeopt.runtime.settings import BenchSettings
    from edgeopt.runtime.targets import Target


class MeasurementBackend:
    """How measurement jobs run for one target. Subclasses set :attr:`name` and implement
    :meth:`measure`; the other methods have defaults that fit a backend measuring the target itself.

    ``measure`` returns the ``_worker`` result (``samples_ns``, memory, session figures, ``warnings``;
    a per-node ``nodes`` profile when the job asks for one). Errors: ModelError / InputError for the
    model, ``remote.DeviceError`` (or another EdgeoptError) when the device is lost.
    """

    #: the name a profile gives as ``backend = "NAME"``
    name: ClassVar[str] = ""
    #: True when the latency is this host's, transferred to the target (``latency_source`` "predicted")
    predicts: ClassVar[bool] = False
    #: True when one job may carry two models (``compare``'s interleaved A/B pairs in one process)
    pairs_in_process: ClassVar[bool] = False

    def __init__(self, target: Target):
        self.target = target

    @property
    def threads(self) -> int:
        """Intra-op threads the measurement runs with."""
        return self.target.runtime.intra_op_threads

    def job(self, model: Path, settings: BenchSettings, shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
        """The job for ``model`` on this backend: the target's runtime at :attr:`threads`, the
        settings and shapes; a per-node profile when the backend predicts."""
        return measurement_job(model, self.target, settings, threads=self.threads, shapes=shapes, profile=self.predicts)

    def measure(self, job: Mapping[str, Any], *, timeout_s: float) -> dict[str, Any]:
        """Run one job; the worker's result (see the class docstring)."""
        raise NotImplementedError(f"{type(self).__name__}.measure")

    def predict(
        self, nodes: list[dict[str, Any]] | None, *, model: str, warnings: Sequence[str], host_p50_ms: float | None
    ) -> dict[str, Any] | None:
        """The ``prediction`` document that scales this host's samples to the target; None when
        the backend measures the target itself."""
        return None

    def environment(self, out: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
        """Where and how the measurement ran (the result's ``environment``)."""
        rt = self.target.runtime
        return {
            "backend": self.name,
            "measured_on": self.describe(),
            "is_target": not self.predicts,
            "onnxruntime": out.get("onnxruntime"),
            "providers": out.get("providers"),
            "intra_op_threads_requested": rt.intra_op_threads,
            "intra_op_threads_used": self.threads,
            "inter_op_threads": rt.inter_op_threads,
            "graph_optimization": rt.graph_optimization,
            "allow_spinning": rt.allow_spinning,
            "inputs": out.get("inputs"),
            "peak_memory_exact": out.get("peak_exact"),
            "model_nodes": info.get("nodes"),
            "opsets": info.get("opsets"),
        }

    def calibrate(self, threads: int, allow_spinning: bool, budget_s: float) -> dict[str, Any]:
        """``edgeopt calibrate``'s micro-models on the device: the calibration dict with ``device``
        (its environment) added. Backends that cannot reach a device refuse."""
        raise InputError(
            f"{self.target.source}: backend: expected a backend that reaches the device to calibrate on, "
            f"found {self.name!r}"
        )

    def describe(self) -> str:
        """One line: where the measurement runs."""
        return f"{self.name} backend"


def measurement_job(
    model: Path,
    target: Target,
    settings: BenchSettings,
    *,
    threads: int,
    shapes: Mapping[str, Sequence[int]],
    profile: bool,
) -> dict[str, Any]:
    """The JSON job the measurement child runs: the target's runtime (at ``threads``), the settings,
    the input shapes, and whether to profile per node (for a prediction)."""
    runtime = dataclasses.asdict(target.runtime.with_threads(threads))
    runtime["providers"] = list(runtime["providers"])
    return {
        "model": str(model),
        **runtime,
        **settings.to_dict(),
        "min_time_s": float(settings.min_time_s),
        "shapes": {k: list(v) for k, v in shapes.items()},
        "profile": profile,
    }


def checked(job: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """The worker's result, or its reported error raised (InputError for bad input, else ModelError)."""
    err = out.get("error")
    if err:
        cls = InputError if err["kind"] == "input" else ModelError
        raise cls(f"{job['model']}: {err['message']}")
    return out


# --------------------------------------------------------------------------- registry
BackendFactory = Callable[["Target"], MeasurementBackend]
_REGISTRY: dict[str, BackendFactory | str] = {
    "local": "edgeopt.runtime.backends.local:LocalBackend",
    "predicted": "edgeopt.runtime.backends.predicted:PredictedBackend",
    "ssh": "edgeopt.runtime.backends.ssh:SshBackend",
}


def register_backend(backend: type[MeasurementBackend], *, name: str | None = None) -> type[MeasurementBackend]:
    """Make ``backend`` selectable as ``backend = "NAME"`` (its ``name``, or ``name``); usable as a
    class decorator. A name already taken is refused (ValueError): unregister it first."""
    key = name or backend.name
    if not key:
        raise ValueError(f"register_backend: {backend.__name__} has no name")
    if key in _REGISTRY:
        raise ValueError(f"register_backend: a backend named {key!r} is already registered")
    _REGISTRY[key] = backend
    return backend


def unregister_backend(name: str) -> None:
    """Remove a registered backend (tests, plugins); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def backend_names() -> tuple[str, ...]:
    """The registered backends' names, built-ins first."""
    return tuple(_REGISTRY)


def get_backend(name: str) -> BackendFactory:
    """The registered backend class named ``name`` (InputError naming the choices when unknown)."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise InputError(f"backend: expected one of {', '.join(map(repr, _REGISTRY))}, found {name!r}")
    if isinstance(entry, str):  # a built-in, imported on first use
        module, _, attr = entry.partition(":")
        entry = _REGISTRY[name] = getattr(importlib.import_module(module), attr)
    return entry


def backend_for(target: Target, *, on_device: bool | None = None) -> MeasurementBackend:
    """The backend that measures for ``target``, decided once: the one its profile names; else
    ``ssh`` when it has a ``[remote]``; else ``local`` when this machine is the target (detected,
    or ``on_device=True``), ``predicted`` otherwise (``on_device=False`` forces it)."""
    if target.backend is not None:
        name = target.backend
    elif target.remote is not None:
        name = "ssh"
    else:
        here = target.is_host() if on_device is None else bool(on_device)
        name = "local" if here else "predicted"
    _validate.choice(name, target.source, "backend", _REGISTRY, error=TargetError)  # unregistered since loading
    return get_backend(name)(target)


__all__ = [
    "MeasurementBackend",
    "register_backend",
    "unregister_backend",
    "backend_names",
    "get_backend",
    "backend_for",
    "measurement_job",
    "checked",
]
