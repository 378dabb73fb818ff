"""How onnxruntime runs on a device: a profile's ``[runtime]`` table (:class:`Runtime`) and the one
place that turns it into ``onnxruntime.SessionOptions`` (:func:`session_options`) and a session
(:func:`open_session`).

Everything in edgeopt that creates an onnxruntime session goes through here: the measurement child
process, calibration's micro-models, the compiler's export check and the search's scoring. A leaf
module: standard library and ``edgeopt._validate``; onnxruntime is imported when a session is made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edgeopt._validate import spec

GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
_GRAPH_LEVEL = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class Runtime:
    """How onnxruntime runs on the device (a profile's ``[runtime]`` table; bounds declared here)."""

    providers: tuple[str, ...] = spec("strs", default=(CPU,), doc="execution providers, in order of preference")
    #: 0: onnxruntime's default (one per physical core)
    intra_op_threads: int = spec("int", default=0, minimum=0)
    inter_op_threads: int = spec("int", default=1, minimum=0)
    graph_optimization: str = spec("str", default="all", choices=GRAPH_OPTIMIZATIONS)
    allow_spinning: bool = spec("bool", default=True)
    batch_size: int = spec("int", default=1, minimum=0, min_exclusive=True)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Runtime:
        """The fields present in a flat mapping (a measurement job), defaults for the rest; unvalidated."""
        known = {
            k: data[k]
            for k in ("intra_op_threads", "inter_op_threads", "graph_optimization", "allow_spinning", "batch_size")
            if k in data
        }
        if "providers" in data:
            known["providers"] = tuple(data["providers"])
        return cls(**known)

    def with_threads(self, intra_op_threads: int) -> Runtime:
        return replace(self, intra_op_threads=int(intra_op_threads))


def session_options(
    runtime: Runtime | None = None, *, profile_prefix: str | None = None, prepacking: bool = True
) -> Any:
    """``onnxruntime.SessionOptions`` for ``runtime`` (default: ``Runtime()``, onnxruntime's defaults
    with spinning on): thread counts, graph optimization level, sequential execution unless
    inter-op threads > 1, intra- and inter-op spinning, warnings-only logging.

    ``profile_prefix`` turns onnxruntime's profiler on (files at that prefix); ``prepacking=False``
    keeps weights unpacked so the profiler reports their shapes and bytes."""
    import onnxruntime as ort

    rt = runtime or Runtime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(rt.intra_op_threads)
    so.inter_op_num_threads = int(rt.inter_op_threads)
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _GRAPH_LEVEL[rt.graph_optimization])
    so.execution_mode = (
        ort.ExecutionMode.ORT_SEQUENTIAL if int(rt.inter_op_threads) <= 1 else ort.ExecutionMode.ORT_PARALLEL
    )
    spin = "1" if rt.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    so.log_severity_level = 3
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if not prepacking:
        so.add_session_config_entry("session.disable_prepacking", "1")
    return so


def available_providers(wanted: Sequence[str]) -> tuple[list[str], str | None]:
    """The providers of ``wanted`` this onnxruntime build has (CPU if none), and a warning naming
    the missing ones (None when all are there)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    have = [p for p in wanted if p in available]
    missing = [p for p in wanted if p not in available]
    warning = None
    if missing:
        warning = (
            f"execution provider(s) {', '.join(missing)} not available in this onnxruntime build "
            f"({', '.join(available)}); falling back to {', '.join(have) if have else CPU}"
        )
    return have or [CPU], warning


def open_session(model: str | bytes | os.PathLike[str], runtime: Runtime | None = None, **options: Any) -> Any:
    """An ``onnxruntime.InferenceSession`` for a model file (or its bytes) with :func:`session_options`;
    providers are the runtime's that this build has. ``options`` go to :func:`session_options`."""
    import onnxruntime as ort

    rt = runtime or Runtime()
    providers, _ = available_providers(rt.providers)
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, session_options(rt, **options), providers=providers)


__all__ = ["Runtime", "GRAPH_OPTIMIZATIONS", "session_options", "available_providers", "open_session"]
