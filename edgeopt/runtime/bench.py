"""``bench``: latency, memory and size of an ONNX model on a target, each measurement in a fresh
child process with the target's session options (docs/architecture.md, "Measurement").

The target's measurement backend (``edgeopt.runtime.backends``, chosen once by ``backend_for``)
runs the job: on the target itself (here or over SSH) the measurement is the number; anywhere else
the host is measured and the target's latency is predicted from it, labelled as such.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import ModelError
from edgeopt.runtime.backends._base import MeasurementBackend, backend_for, measurement_job
from edgeopt.runtime.backends.local import run_worker
from edgeopt.runtime.host import MB
from edgeopt.runtime.inputs import parse_shapes
from edgeopt.runtime.onnx_proto import ProtoError, summarize
from edgeopt.runtime.result import SCHEMA, BenchResult, bench_result
from edgeopt.runtime.settings import BenchSettings
from edgeopt.runtime.targets import Target

log = logging.getLogger("edgeopt.bench")


def _check_model(path: str | os.PathLike[str]) -> tuple[Path, bytes]:
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file not found: {p}")
    if p.is_dir():
        raise ModelError(f"{p}: is a directory, expected an .onnx file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if not data:
        raise ModelError(f"{p}: empty file, expected an ONNX model")
    return p, data


def model_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size, parameter count and opsets of an ONNX file; ModelError if it is not one."""
    p, data = _check_model(path)
    try:
        s = summarize(data)
    except ProtoError as exc:
        raise ModelError(f"{p}: not a valid ONNX model (truncated, or not an ONNX protobuf): {exc}") from None
    return {
        "size_bytes": len(data),
        "params": s.params,
        "nodes": s.nodes,
        "opsets": s.opsets,
        "producer": s.producer,
        "metadata": s.metadata,
        "ir_version": s.ir_version,
    }


def run_child(job: Mapping[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """One hand-built job (``measurement_job``) in a fresh worker process here, or on the device
    when it carries a ``remote`` (a ``RemoteSpec.to_dict()``). ``bench`` and ``compare`` do not
    use it: they run jobs through ``backend_for(target)``."""
    if job.get("remote"):
        from edgeopt.runtime.backends.ssh import run_job

        return run_job(job["remote"], job, timeout_s=timeout_s)
    return run_worker(job, timeout_s=timeout_s)


def bench(
    path: str | os.PathLike[str],
    target: Target | str = "host",
    *,
    batch: int | None = None,
    min_iters: int | None = None,
    min_time_s: float | None = None,
    max_iters: int | None = None,
    warmup: int | None = None,
    shapes: Sequence[str] | Mapping[str, Sequence[int]] | None = None,
    on_device: bool | None = None,
    seed: int | None = None,
    settings: BenchSettings | None = None,
) -> BenchResult:
    """Benchmark an ONNX model for a target.

    Parameters
    ----------
    path : the .onnx file (any ONNX model onnxruntime can load, not only ones edgeopt made).
    target : a Target, a built-in name or a profile path.
    settings : a BenchSettings (default ``BenchSettings()``: warm-up 10, at least 100 runs and 1 s,
        at most 10000 runs, the target's batch size, seed 0).
    batch, min_iters, min_time_s, max_iters, warmup, seed : override those fields of ``settings``
        (None leaves them): run until both minimums are met, at most max_iters runs; ``batch`` is
        the size given to a symbolic leading dimension.
    shapes : concrete shapes for inputs with other symbolic dims (``["x=1,3,224,224"]`` or a dict).
    on_device : force "this machine is the target" (True) or "predict" (False); default: detect.
        A profile's ``backend`` or ``[remote]`` decides first (``backends.backend_for``).

    Returns a BenchResult; ``latency_ms`` is the target's number and ``latency_source`` says
    whether it was measured or predicted. Raises ModelError / InputError / TargetError.
    """
    target = Target.load(target)
    s = (settings or BenchSettings()).updated(
        batch=batch, min_iters=min_iters, min_time_s=min_time_s, max_iters=max_iters, warmup=warmup, seed=seed
    )
    s = s.updated(batch=target.runtime.batch_size) if s.batch is None else s
    shape_map = parse_shapes(shapes)
    info = model_info(path)
    backend = backend_for(target, on_device=on_device)
    job = backend.job(Path(path).resolve(), s, shape_map)
    out = backend.measure(job, timeout_s=s.timeout_s)
    warnings = list(out.get("warnings", [])) + list((out.get("device") or {}).get("warnings", []))
    for w in warnings:
        log.warning("warning: %s", w)
    host_samples = np.asarray(out["samples_ns"], dtype=float) / 1e6
    prediction = backend.predict(
        out.get("nodes"), model=job["model"], warnings=warnings, host_p50_ms=float(np.median(host_samples))
    )
    samples = host_samples if prediction is None else host_samples * prediction["factor"]
    return _result(str(path), target, s, info, out, samples, host_samples, prediction, warnings, backend)


MANY_CHUNK = 48  # models loaded into one measurement process at most (their sessions held together)


def bench_many(
    paths: Sequence[str | os.PathLike[str]],
    target: Target | str = "host",
    *,
    rounds: int = 3,
    settings: BenchSettings | None = None,
    **overrides: Any,
) -> list[list[np.ndarray]]:
    """Many small models timed side by side: per model, the samples (ms) of each of its ``rounds``
    blocks. Where the target is this host (``local``), the models share one process ``MANY_CHUNK`` at
    a time and every round times one block of each (``_worker.run_many``), so a window of other work
    falls on one round of many models rather than on every block of a few; the caller takes the median
    of the rounds. Elsewhere (a device over SSH, a predicted target) each model is one :func:`bench`, a
    single round of ``rounds`` blocks' length. ``settings``/``overrides``: one block's."""
    target = Target.load(target)
    s = (settings or BenchSettings()).updated(**{k: v for k, v in overrides.items() if v is not None})
    s = s.updated(batch=target.runtime.batch_size) if s.batch is None else s
    backend = backend_for(target)
    if not backend.pairs_in_process or backend.predicts:
        whole = s.updated(
            min_iters=s.min_iters * rounds, min_time_s=float(s.min_time_s) * rounds, max_iters=s.max_iters * rounds
        )
        return [[np.asarray(bench(p, target, settings=whole).samples_ms, dtype=float)] for p in paths]
    out: list[list[np.ndarray]] = []
    resolved = [str(Path(p).resolve()) for p in paths]
    for at in range(0, len(resolved), MANY_CHUNK):
        chunk = resolved[at : at + MANY_CHUNK]
        job = dict(backend.job(Path(chunk[0]), s, {}), profile=False, many={"others": chunk[1:], "rounds": rounds})
        got = backend.measure(job, timeout_s=float(s.timeout_s) * (1 + len(chunk) * rounds / 8))
        for w in got.get("warnings", []):
            log.warning("warning: %s", w)
        out += [[np.asarray(r, dtype=float) / 1e6 for r in m["rounds"]] for m in got["many"]]
    return out


def _result(
    model: str,
    target: Target,
    s: BenchSettings,
    info: dict[str, Any],
    out: dict[str, Any],
    samples: np.ndarray,
    host_samples: np.ndarray,
    prediction: dict[str, Any] | None,
    warnings: list[str],
    backend: MeasurementBackend,
) -> BenchResult:
    return bench_result(
        model,
        target.to_dict(),
        samples,
        host_samples,
        prediction,
        warnings,
        batch_size=s.batch,
        peak_memory_mb=max(0, out["peak_rss_bytes"] - out["rss_before_bytes"]) / MB,
        process_peak_memory_mb=out["process_peak_rss_bytes"] / MB,
        model_size_bytes=info["size_bytes"],
        params=info["params"],
        session_create_ms=out["session_create_ms"],
        first_inference_ms=out["first_inference_ms"],
        environment=backend.environment(out, info),
    )


__all__ = [
    "MANY_CHUNK",
    "SCHEMA",
    "BenchResult",
    "BenchSettings",
    "bench",
    "bench_many",
    "measurement_job",
    "model_info",
    "run_child",
]
