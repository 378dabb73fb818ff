"""``bench``: latency, memory and size of an ONNX model on a target, each measurement in a fresh
child process with the target's session options (docs/architecture.md, "Measurement").

On the target itself the measurement is the number. Anywhere else the host is measured and the
target's latency is predicted from it (``edgeopt.runtime.predict``), labelled as such.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import InputError, ModelError, TargetError
from edgeopt.runtime.calibrate import host_calibration
from edgeopt.runtime.host import MB, host_facts
from edgeopt.runtime.inputs import parse_shapes
from edgeopt.runtime.onnx_proto import ProtoError, summarize
from edgeopt.runtime.perf import PerfModel
from edgeopt.runtime.predict import breakdown, run_cost_us, transfer
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


def _governor() -> str | None:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def run_child(job: Mapping[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """One measurement in a fresh ``python -m edgeopt.runtime._worker`` process: here, or on the
    device when the job has a ``remote`` (``RemoteSpec.to_dict()``; see ``edgeopt.runtime.remote``:
    the result then carries ``device``, and a lost device raises ``remote.DeviceError``)."""
    if job.get("remote"):
        from edgeopt.runtime.remote import run_job

        return _checked(job, run_job(job, timeout_s=timeout_s))
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgeopt.runtime._worker"],
            input=json.dumps(dict(job)),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ModelError(f"{job['model']}: the measurement did not finish within {timeout_s:.0f} s") from None
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"{job['model']}: the measurement process died (exit {proc.returncode}): {tail}") from None
    if proc.stderr.strip():
        log.debug("worker stderr: %s", proc.stderr.strip())
    return _checked(job, out)


def _checked(job: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    err = out.get("error")
    if err:
        cls = InputError if err["kind"] == "input" else ModelError
        raise cls(f"{job['model']}: {err['message']}")
    return out


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
    measured_here = target.remote is not None or (target.is_host() if on_device is None else bool(on_device))
    if not measured_here and not target.device.has_perf_model:
        raise TargetError(
            f"{target.source}: [device] gflops: expected a performance model (gflops, mem_bandwidth_gbs, "
            f"op_overhead_us) to predict {target.name} latency from this host, found none; run "
            f"`edgeopt calibrate` on the device and paste its snippet, or pass --on-device"
        )
    threads = target.runtime.intra_op_threads if measured_here else target.host_threads()
    job = measurement_job(Path(path).resolve(), target, s, threads=threads, shapes=shape_map, profile=not measured_here)
    out = run_child(job, timeout_s=s.timeout_s)
    warnings = list(out.get("warnings", [])) + list((out.get("device") or {}).get("warnings", []))
    for w in warnings:
        log.warning("warning: %s", w)
    host_samples = np.asarray(out["samples_ns"], dtype=float) / 1e6
    if measured_here:
        samples, prediction = host_samples, None
    else:
        prediction = _predict(
            out.get("nodes"), target, threads, job["model"], warnings, host_p50_ms=float(np.median(host_samples))
        )
        samples = host_samples * prediction["factor"]
    return _result(str(path), target, s, info, out, samples, host_samples, prediction, warnings, threads)


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
    job = {
        "model": str(model),
        **runtime,
        **settings.to_dict(),
        "min_time_s": float(settings.min_time_s),
        "shapes": {k: list(v) for k, v in shapes.items()},
        "profile": profile,
    }
    if target.remote is not None:  # run_child measures on the device
        job["remote"] = target.remote.to_dict()
    return job


def _predict(
    nodes: list[dict[str, Any]] | None,
    target: Target,
    threads: int,
    model: str,
    warnings: list[str],
    host_p50_ms: float | None = None,
) -> dict[str, Any]:
    """The per-node roofline transfer from this host to the target (the ``prediction`` document).
    With the host's measured median (``host_p50_ms``) the target's memory-bound time is its own,
    not scaled by this host's memory error (``predict.transfer``); without it, the plain model ratio."""
    if not nodes:
        raise ModelError(
            f"{model}: no per-node profile to predict {target.name} latency from "
            f"({'; '.join(warnings) or 'the profiler reported no nodes'}); pass --on-device to report the host measurement"
        )
    cal = host_calibration(threads, target.runtime.allow_spinning)
    host_model, target_model = cal.perf, PerfModel.of(target.device)
    host_us, target_us = run_cost_us(nodes, host_model), run_cost_us(nodes, target_model)
    t = transfer(nodes, host_model, target_model, host_p50_ms * 1e3) if host_p50_ms else {"factor": target_us / host_us}
    return {
        "method": (
            "per-node roofline transfer: host samples x factor; the host's model error scales the target's "
            "dispatch and compute time, the target's memory-bound time is its own"
            if host_p50_ms
            else "per-node roofline transfer: host samples x cost(target) / cost(host)"
        ),
        **t,
        "host_model_us": host_us,
        "target_model_us": target_us,
        "host_perf": {
            "gflops": host_model.gflops,
            "mem_bandwidth_gbs": host_model.mem_bandwidth_gbs,
            "op_overhead_us": host_model.op_overhead_us,
            "run_overhead_us": host_model.run_overhead_us,
            "calibrated": cal.when,
        },
        "target_perf": {
            "gflops": target_model.gflops,
            "mem_bandwidth_gbs": target_model.mem_bandwidth_gbs,
            "op_overhead_us": target_model.op_overhead_us,
            "run_overhead_us": target_model.run_overhead_us,
            "calibrated": target.device.calibrated,
            "source": target.device.perf_source,
        },
        "nodes": len(nodes),
        "target_breakdown_us": breakdown(nodes, target_model),
    }


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
    threads: int,
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
        environment=_environment(target, out, info, threads, measured_here=prediction is None),
    )


def _environment(
    target: Target, out: dict[str, Any], info: dict[str, Any], threads: int, *, measured_here: bool
) -> dict[str, Any]:
    """Where and how the measurement ran (the ``environment`` document)."""
    if out.get("device"):
        return _device_environment(target, out, info)
    facts = host_facts()
    return {
        "measured_on": f"this host ({facts['cpu']}, {facts['arch']})",
        "is_target": measured_here,
        "cpu": facts["cpu"],
        "arch": facts["arch"],
        "cores": facts["cores"],
        "logical_cores": facts["logical_cores"],
        "memory_mb": facts["memory_mb"],
        "isa": facts["isa"],
        "governor": _governor(),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": out.get("onnxruntime"),
        "providers": out.get("providers"),
        "intra_op_threads_requested": target.runtime.intra_op_threads,
        "intra_op_threads_used": threads,
        "inter_op_threads": target.runtime.inter_op_threads,
        "graph_optimization": target.runtime.graph_optimization,
        "allow_spinning": target.runtime.allow_spinning,
        "inputs": out.get("inputs"),
        "peak_memory_exact": out.get("peak_exact"),
        "model_nodes": info["nodes"],
        "opsets": info["opsets"],
    }


def _device_environment(target: Target, out: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The ``environment`` of a measurement on the device over SSH: its facts, onnxruntime, conditions."""
    dev = out["device"]
    facts, before = dev.get("facts") or {}, (dev.get("conditions") or {}).get("before") or {}
    return {
        "measured_on": f"{dev['host']} over ssh ({facts.get('cpu')}, {facts.get('arch')})",
        "is_target": True,
        "remote_host": dev["host"],
        "cpu": facts.get("cpu"),
        "arch": facts.get("arch"),
        "cores": facts.get("cores"),
        "logical_cores": facts.get("logical_cores"),
        "memory_mb": facts.get("memory_mb"),
        "isa": facts.get("isa"),
        "governor": before.get("governor"),
        "load_avg": before.get("load_avg"),
        "temperature_c": before.get("temperature_c"),
        "throttled": before.get("throttled"),
        "os": dev.get("os"),
        "python": dev.get("python"),
        "edgeopt_on_device": dev.get("edgeopt"),
        "onnxruntime": out.get("onnxruntime") or dev.get("onnxruntime"),
        "providers": out.get("providers"),
        "intra_op_threads_requested": target.runtime.intra_op_threads,
        "intra_op_threads_used": target.runtime.intra_op_threads,
        "inter_op_threads": target.runtime.inter_op_threads,
        "graph_optimization": target.runtime.graph_optimization,
        "allow_spinning": target.runtime.allow_spinning,
        "inputs": out.get("inputs"),
        "peak_memory_exact": out.get("peak_exact"),
        "model_nodes": info["nodes"],
        "opsets": info["opsets"],
        "conditions": dev.get("conditions"),
        "lease": dev.get("lease"),
    }


__all__ = ["bench", "BenchResult", "BenchSettings", "model_info", "run_child", "measurement_job", "SCHEMA"]
