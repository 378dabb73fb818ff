"""``bench``: latency, memory and size of an ONNX model on a target, each measurement in a fresh
child process with the target's session options (see DESIGN.md, "Measurement").

On the target itself the measurement is the number. Anywhere else the host is measured and the
target's latency is predicted from it (``edgeopt.runtime.predict``), labelled as such.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import InputError, ModelError, TargetError
from edgeopt.runtime import stats
from edgeopt.runtime.inputs import parse_shapes
from edgeopt.runtime.onnx_proto import ProtoError, summarize
from edgeopt.runtime.targets import MB, Target, host_facts

log = logging.getLogger("edgeopt.bench")
SCHEMA = "edgeopt.bench/1"
NOISY_CV = 0.10  # coefficient of variation above which a run is flagged as noisy

# Defaults fit a quick check on a laptop; raise them for release-grade runs.
DEFAULT_WARMUP = 10
DEFAULT_MIN_ITERS = 100
DEFAULT_MIN_TIME_S = 1.0
DEFAULT_MAX_ITERS = 10000


@dataclass(frozen=True)
class BenchResult:
    """What one benchmark measured. ``latency_ms`` is the target's number (measured or predicted)."""

    model: str
    target: dict[str, Any]
    latency_ms: dict[str, float]
    host_latency_ms: dict[str, float]
    latency_source: str  # "measured" | "predicted"
    samples_ms: tuple[float, ...]  # the target's scale (predicted: host samples x transfer factor)
    host_samples_ms: tuple[float, ...]
    iterations: int
    throughput_per_s: float
    batch_size: int
    peak_memory_mb: float
    process_peak_memory_mb: float
    model_size_bytes: int
    params: int
    session_create_ms: float
    first_inference_ms: float
    cv: float
    environment: dict[str, Any]
    prediction: dict[str, Any] | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def latency_at(self, percentile: float) -> float:
        """The target's latency at any percentile (nearest rank), in ms."""
        return stats.percentile(self.samples_ms, percentile)

    @property
    def model_size_mb(self) -> float:
        return self.model_size_bytes / MB

    def to_dict(self) -> dict[str, Any]:
        """The ``edgeopt.bench/1`` document."""
        return {
            "schema": SCHEMA,
            "model": self.model,
            "target": self.target,
            "latency_ms": self.latency_ms,
            "latency_source": self.latency_source,
            "host_latency_ms": self.host_latency_ms,
            "iterations": self.iterations,
            "batch_size": self.batch_size,
            "throughput_per_s": self.throughput_per_s,
            "cv": self.cv,
            "session_create_ms": self.session_create_ms,
            "first_inference_ms": self.first_inference_ms,
            "peak_memory_mb": self.peak_memory_mb,
            "process_peak_memory_mb": self.process_peak_memory_mb,
            "model_size_bytes": self.model_size_bytes,
            "params": self.params,
            "environment": self.environment,
            "prediction": self.prediction,
            "warnings": list(self.warnings),
        }

    def to_text(self) -> str:
        """A readable table for stdout."""
        where = self.environment.get("measured_on", "this host")
        src = ("measured on the target" if self.latency_source == "measured"
               else f"PREDICTED for {self.target['name']} from {where} (per-node roofline, x{self.prediction['factor']:.2f})")
        lines = [
            f"model      {self.model}",
            f"target     {self.target['name']}: {self.target['description']}",
            f"latency    {src}",
            f"measured   {where}, {self.iterations} runs, batch {self.batch_size}, "
            f"{self.environment.get('intra_op_threads_used') or 'default'} intra-op threads",
            "",
            f"{'latency (ms)':<14}" + "".join(f"{k:>10}" for k in stats.SUMMARY_KEYS),
            f"{self.target['name'][:13]:<14}" + "".join(f"{self.latency_ms[k]:>10.4f}" for k in stats.SUMMARY_KEYS),
        ]
        if self.latency_source == "predicted":
            lines.append(f"{'this host':<14}" + "".join(f"{self.host_latency_ms[k]:>10.4f}" for k in stats.SUMMARY_KEYS))
        lines += [
            "",
            f"cv                 {self.cv:.3f}{'  (noisy: > %.2f)' % NOISY_CV if self.cv > NOISY_CV else ''}",
            f"throughput         {self.throughput_per_s:,.1f} inferences/s ({self.latency_source})",
            f"session create     {self.session_create_ms:.2f} ms (this host)",
            f"first inference    {self.first_inference_ms:.3f} ms (this host)",
            f"peak memory        {self.peak_memory_mb:.2f} MB added by the model "
            f"(process peak {self.process_peak_memory_mb:.1f} MB, this host)",
            f"model size         {self.model_size_bytes:,} bytes ({self.model_size_mb:.3f} MB)",
            f"parameters         {self.params:,}",
            f"onnxruntime        {self.environment.get('onnxruntime')} {', '.join(self.environment.get('providers', []))}",
        ]
        return "\n".join(lines)


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
    return {"size_bytes": len(data), "params": s.params, "nodes": s.nodes, "opsets": s.opsets,
            "producer": s.producer, "metadata": s.metadata, "ir_version": s.ir_version}


def _governor() -> str | None:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def run_child(job: Mapping[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """One measurement in a fresh ``python -m edgeopt.runtime._worker`` process."""
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    try:
        proc = subprocess.run([sys.executable, "-m", "edgeopt.runtime._worker"], input=json.dumps(dict(job)),
                              capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{job['model']}: the measurement did not finish within {timeout_s:.0f} s") from None
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"{job['model']}: the measurement process died (exit {proc.returncode}): {tail}") from None
    if proc.stderr.strip():
        log.debug("worker stderr: %s", proc.stderr.strip())
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
    min_iters: int = DEFAULT_MIN_ITERS,
    min_time_s: float = DEFAULT_MIN_TIME_S,
    max_iters: int = DEFAULT_MAX_ITERS,
    warmup: int = DEFAULT_WARMUP,
    shapes: Sequence[str] | Mapping[str, Sequence[int]] | None = None,
    on_device: bool | None = None,
    seed: int = 0,
) -> BenchResult:
    """Benchmark an ONNX model for a target.

    Parameters
    ----------
    path : the .onnx file (any ONNX model onnxruntime can load, not only ones edgeopt made).
    target : a Target, a built-in name or a profile path.
    batch : the size given to a symbolic leading dimension (default: the target's batch_size).
    min_iters, min_time_s, max_iters : run until both minimums are met, at most max_iters runs.
    warmup : untimed runs before the timed loop.
    shapes : concrete shapes for inputs with other symbolic dims (``["x=1,3,224,224"]`` or a dict).
    on_device : force "this machine is the target" (True) or "predict" (False); default: detect.

    Returns a BenchResult; ``latency_ms`` is the target's number and ``latency_source`` says
    whether it was measured or predicted. Raises ModelError / InputError / TargetError.
    """
    target = Target.load(target)
    for name, value in (("min_iters", min_iters), ("max_iters", max_iters)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name}: expected an integer >= 1, found {value!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise InputError(f"warmup: expected an integer >= 0, found {warmup!r}")
    if not isinstance(min_time_s, (int, float)) or min_time_s < 0:
        raise InputError(f"min_time_s: expected a number >= 0, found {min_time_s!r}")
    if max_iters < min_iters:
        raise InputError(f"max_iters: expected >= min_iters ({min_iters}), found {max_iters}")
    batch = target.runtime.batch_size if batch is None else batch
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch: expected an integer >= 1, found {batch!r}")
    shape_map = parse_shapes(shapes)
    info = model_info(path)
    model_path = str(Path(path).resolve())

    measured_here = target.is_host() if on_device is None else bool(on_device)
    if not measured_here and not target.device.has_perf_model:
        raise TargetError(
            f"{target.source}: [device] gflops: expected a performance model (gflops, mem_bandwidth_gbs, "
            f"op_overhead_us) to predict {target.name} latency from this host, found none; run "
            f"`edgeopt calibrate` on the device and paste its snippet, or pass --on-device"
        )
    threads = target.runtime.intra_op_threads if measured_here else target.host_threads()
    job = {
        "model": model_path, "providers": list(target.runtime.providers), "intra_op_threads": threads,
        "inter_op_threads": target.runtime.inter_op_threads, "graph_optimization": target.runtime.graph_optimization,
        "allow_spinning": target.runtime.allow_spinning, "batch": batch, "shapes": {k: list(v) for k, v in shape_map.items()},
        "warmup": warmup, "min_iters": min_iters, "min_time_s": float(min_time_s), "max_iters": max_iters,
        "profile": not measured_here, "seed": seed,
    }
    est_s = 30.0 + 20.0 * float(min_time_s) + max_iters * 0.0  # generous: a slow first run is not a hang
    out = run_child(job, timeout_s=max(120.0, est_s))
    warnings = list(out.get("warnings", []))
    for w in warnings:
        log.warning("warning: %s", w)

    host_samples = np.asarray(out["samples_ns"], dtype=float) / 1e6
    host_summary = stats.summarize(host_samples)
    prediction = None
    if measured_here:
        samples, source = host_samples, "measured"
    else:
        from edgeopt.runtime.calibrate import host_calibration
        from edgeopt.runtime.predict import PerfModel, breakdown, run_cost_us

        nodes = out.get("nodes")
        if not nodes:
            raise ModelError(f"{model_path}: no per-node profile to predict {target.name} latency from "
                             f"({'; '.join(warnings) or 'the profiler reported no nodes'}); pass --on-device to report the host measurement")
        cal = host_calibration(threads, target.runtime.allow_spinning)
        host_model, target_model = PerfModel.of(cal), PerfModel.of(target.device)
        host_us, target_us = run_cost_us(nodes, host_model), run_cost_us(nodes, target_model)
        factor = target_us / host_us
        samples, source = host_samples * factor, "predicted"
        prediction = {
            "method": "per-node roofline transfer: host samples x cost(target) / cost(host)",
            "factor": factor,
            "host_model_us": host_us,
            "target_model_us": target_us,
            "host_perf": {"gflops": host_model.gflops, "mem_bandwidth_gbs": host_model.mem_bandwidth_gbs,
                          "op_overhead_us": host_model.op_overhead_us, "run_overhead_us": host_model.run_overhead_us,
                          "calibrated": cal.get("when")},
            "target_perf": {"gflops": target_model.gflops, "mem_bandwidth_gbs": target_model.mem_bandwidth_gbs,
                            "op_overhead_us": target_model.op_overhead_us,
                            "run_overhead_us": target_model.run_overhead_us,
                            "calibrated": target.device.calibrated, "source": target.device.perf_source},
            "nodes": len(nodes),
            "target_breakdown_us": breakdown(nodes, target_model),
        }
    summary = stats.summarize(samples)
    cv = host_summary["std"] / host_summary["mean"] if host_summary["mean"] > 0 else 0.0
    if cv > NOISY_CV:
        msg = (f"noisy measurement: coefficient of variation {cv:.2f} > {NOISY_CV:.2f}; close other work "
               f"or raise --min-time")
        warnings.append(msg)
        log.warning("warning: %s", msg)

    facts = host_facts()
    import onnxruntime as ort  # already loaded by the child; here only for its version string

    environment = {
        "measured_on": f"this host ({facts['cpu']}, {facts['arch']})",
        "is_target": measured_here,
        "cpu": facts["cpu"], "arch": facts["arch"], "cores": facts["cores"], "logical_cores": facts["logical_cores"],
        "memory_mb": facts["memory_mb"], "isa": facts["isa"], "governor": _governor(),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(), "python": platform.python_version(),
        "onnxruntime": out.get("onnxruntime", ort.__version__), "providers": out.get("providers"),
        "intra_op_threads_requested": target.runtime.intra_op_threads, "intra_op_threads_used": threads,
        "inter_op_threads": target.runtime.inter_op_threads, "graph_optimization": target.runtime.graph_optimization,
        "allow_spinning": target.runtime.allow_spinning, "inputs": out.get("inputs"),
        "peak_memory_exact": out.get("peak_exact"),
        "model_nodes": info["nodes"], "opsets": info["opsets"],
    }
    mean_s = float(np.mean(samples)) / 1e3
    return BenchResult(
        model=str(path),
        target=target.to_dict(),
        latency_ms=summary,
        host_latency_ms=host_summary,
        latency_source=source,
        samples_ms=tuple(float(x) for x in samples),
        host_samples_ms=tuple(float(x) for x in host_samples),
        iterations=len(host_samples),
        throughput_per_s=batch / mean_s if mean_s > 0 else float("inf"),
        batch_size=batch,
        peak_memory_mb=max(0, out["peak_rss_bytes"] - out["rss_before_bytes"]) / MB,
        process_peak_memory_mb=out["process_peak_rss_bytes"] / MB,
        model_size_bytes=info["size_bytes"],
        params=info["params"],
        session_create_ms=out["session_create_ms"],
        first_inference_ms=out["first_inference_ms"],
        cv=cv,
        environment=environment,
        prediction=prediction,
        warnings=tuple(warnings),
    )
