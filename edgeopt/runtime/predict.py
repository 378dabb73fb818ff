"""Latency on a device you are not on: a per-node roofline transfer.

Each node of the optimized graph that actually runs (as onnxruntime's profiler reports it on this
host: op, input and output shapes, activation / parameter / output bytes) costs

    t_node = overhead(op) + max(ops / rate(op), bytes / bandwidth(working set))

on a device with that performance model, and a run costs ``run_overhead + sum(t_node)``, where

- ``overhead(op)`` is the per-node dispatch cost, larger for MatMul / Gemm / Conv kernels
  (``matmul_overhead_us``: MLAS sets up packing and tiling on every call) than for element-wise ones;
- ``rate(op)`` is the fp32 GEMM rate (``gflops``), the convolution rate (``conv_gflops``: im2col /
  NCHWc kernels run at their own efficiency), or for int8 kernels (MatMulInteger,
  DynamicQuantizeMatMul, QLinearConv, ...) ``int8_gops``; a profile that does not measure it derives
  it from ``gflops`` and the device's ISA (:data:`INT8_SPEEDUP`, :func:`int8_speedup`);
- ``bandwidth(working set)`` is interpolated from a measured curve of matrix-vector bandwidth against
  the bytes a run touches (L2, last-level cache, DRAM), or, for spec-derived profiles, the cache /
  DRAM split of ``mem_bandwidth_gbs`` and ``dram_bandwidth_gbs``.

Bytes come from the profiler, so an int8 graph is costed with its int8 weight bytes, and its
quantize / dequantize nodes with their own dispatch and traffic.

The target's latency distribution is this host's measured one scaled by one factor (the host's
run-to-run spread is carried over; its stalls are not, see :func:`predicted_samples`), chosen by
:func:`transfer` so that the target's median is

    r x (run overhead + dispatch + compute-bound time on the target) + memory-bound time on the target

with ``r = measured / modelled`` on this host (its own model from ``edgeopt calibrate``): what the
roofline gets wrong about dispatch and kernels on this host -- the same onnxruntime code -- it gets
wrong on the target in the same way, so that error carries over. Memory-bound time does not: it is
set by the target's memory system, from exact bytes (the profiler's) and the target's bandwidth,
while how fast *this host* streams a weight working set depends on this host's caches, its thread
count and what else runs on it. The plain ratio ``cost(target) / cost(host)``
scaled the target's memory time by the host's memory error too: two x86 hosts predicted the
memory-bound digits-mlp on rpi4 2.2x apart (the host measured at 2 threads streamed a 4 MiB working
set from its aggregate L2 faster than the calibration's curve said; see
``benchmarks/predict_across_hosts.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.runtime.perf import CONV_OPS as _CONV
from edgeopt.runtime.perf import GEMM_OPS as _GEMM
from edgeopt.runtime.perf import HEAVY_OPS as _HEAVY
from edgeopt.runtime.perf import (
    INT8_CONV_EFFICIENCY,
    INT8_CONV_MIN,
    INT8_CONV_REF_K,
    INT8_OPS,
    INT8_SPEEDUP,
    PerfModel,
    int8_speedup,
)
from edgeopt.runtime.perf import MATMUL_OPS as _MATMUL

if TYPE_CHECKING:
    from edgeopt.runtime.stats import Dispersion


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(int(d) for d in shape)) if shape else 1


def node_flops(node: Mapping[str, Any]) -> float:
    """Arithmetic operations of one profiled node (multiply-add = 2; int8 kernels count the same)."""
    op, ins, outs = node.get("op", ""), node.get("inputs") or [], node.get("outputs") or []
    out_n = sum(_numel(s) for s in outs)
    if op in _MATMUL and ins and ins[0]:
        return 2.0 * out_n * int(ins[0][-1])
    if op in _GEMM and ins and outs and outs[0]:
        m = int(outs[0][0]) if len(outs[0]) > 1 else 1
        return 2.0 * out_n * (_numel(ins[0]) / max(m, 1)) + out_n
    if op in ("QLinearConv",) and len(ins) > 3 and len(ins[3]) > 1:  # x, x_scale, x_zp, w, ...
        return 2.0 * out_n * _numel(ins[3][1:])
    if op in _CONV and len(ins) > 1 and len(ins[1]) > 1:
        return 2.0 * out_n * _numel(ins[1][1:])
    if op == "ConvTranspose" and len(ins) > 1 and len(ins[1]) > 1:
        return 2.0 * _numel(ins[0]) * _numel(ins[1][1:])
    return float(max(out_n, sum(_numel(s) for s in ins)))


def node_bytes(node: Mapping[str, Any]) -> float:
    return float(node.get("activation_bytes", 0) + node.get("parameter_bytes", 0) + node.get("output_bytes", 0))


def working_set_bytes(nodes: Sequence[Mapping[str, Any]]) -> float:
    """Bytes one run touches: every weight once, every activation written once."""
    return float(sum(n.get("parameter_bytes", 0) + n.get("output_bytes", 0) for n in nodes))


def _int8_conv_efficiency(node: Mapping[str, Any]) -> float:
    ins = node.get("inputs") or []
    w = ins[3] if node.get("op") == "QLinearConv" and len(ins) > 3 else ins[1] if len(ins) > 1 else []
    return min(1.0, _numel(w[1:]) / INT8_CONV_REF_K) if len(w) > 1 else 1.0


def node_rate(node: Mapping[str, Any], model: PerfModel) -> float:
    """GFLOP/s (GOP/s) at which this node's arithmetic runs on ``model``."""
    op = node.get("op", "")
    rate = model.rate_for(op)
    return rate * _int8_conv_efficiency(node) if op in INT8_OPS and op in _CONV else rate


def node_cost_us(node: Mapping[str, Any], model: PerfModel, bandwidth_gbs: float | None = None) -> float:
    op = node.get("op", "")
    compute_us = node_flops(node) / (node_rate(node, model) * 1e3) if op in _HEAVY else 0.0
    memory_us = node_bytes(node) / ((bandwidth_gbs or model.mem_bandwidth_gbs) * 1e3)
    return model.overhead_for(op) + max(compute_us, memory_us)


def run_cost_us(nodes: Sequence[Mapping[str, Any]], model: PerfModel) -> float:
    """Predicted latency of one run, in microseconds."""
    bw = model.bandwidth_for(working_set_bytes(nodes))
    return model.run_overhead_us + sum(node_cost_us(n, model, bw) for n in nodes)


def transfer_factor(nodes: Sequence[Mapping[str, Any]], host: PerfModel, target: PerfModel) -> float:
    """The plain model ratio cost(target) / cost(host) (what :func:`transfer` reduces to when the
    host's model is exact)."""
    return run_cost_us(nodes, target) / run_cost_us(nodes, host)


def split_cost_us(nodes: Sequence[Mapping[str, Any]], model: PerfModel) -> tuple[float, float]:
    """(memory-bound us, everything else us: run overhead, dispatch, compute-bound) of one run."""
    bw = model.bandwidth_for(working_set_bytes(nodes))
    memory, rest = 0.0, model.run_overhead_us
    for n in nodes:
        op = n.get("op", "")
        compute = node_flops(n) / (node_rate(n, model) * 1e3) if op in _HEAVY else 0.0
        moved = node_bytes(n) / (bw * 1e3)
        rest += model.overhead_for(op) + (compute if compute >= moved else 0.0)
        memory += moved if moved > compute else 0.0
    return memory, rest


def transfer(
    nodes: Sequence[Mapping[str, Any]], host: PerfModel, target: PerfModel, host_measured_us: float
) -> dict[str, float]:
    """The factor that scales this host's samples to the target (see the module's docstring), with
    its parts: ``host_model_us``, ``host_model_error`` (measured / modelled on this host),
    ``target_model_us``, ``target_memory_us`` and ``target_us`` (the predicted median)."""
    host_us = run_cost_us(nodes, host)
    memory, rest = split_cost_us(nodes, target)
    error = host_measured_us / host_us if host_us > 0 and host_measured_us > 0 else 1.0
    target_us = error * rest + memory
    return {
        "factor": target_us / host_measured_us if host_measured_us > 0 else (memory + rest) / host_us,
        "host_model_us": host_us,
        "host_model_error": error,
        "target_model_us": memory + rest,
        "target_memory_us": memory,
        "target_us": target_us,
    }


def predicted_samples(host_samples_ms: Sequence[float], factor: float, host: Dispersion) -> np.ndarray:
    """The target's latency samples: this host's, each stall clipped to the stall threshold
    (``host``: the host samples' ``stats.dispersion``), times the transfer ``factor``.

    A stall is other work on this host, not the model: scaled by the factor it became the target's
    tail (a 32 ms host stall x 14 read as the rpi4's "predicted max" of 452.9 ms). Clipped, the
    predicted percentiles below the stall share are unchanged and the tail above it is this host's
    own run-to-run spread, scaled; the target's own stalls (its other processes, throttling) are
    not predicted.
    """
    xs = np.asarray(host_samples_ms, dtype=float)
    return np.minimum(xs, host.stall_threshold_ms) * float(factor)


def breakdown(nodes: Sequence[Mapping[str, Any]], model: PerfModel) -> dict[str, float]:
    """Where the predicted time goes: dispatch overhead, compute-bound and memory-bound nodes (us)."""
    out = {
        "run_overhead_us": model.run_overhead_us,
        "dispatch_us": 0.0,
        "compute_bound_us": 0.0,
        "memory_bound_us": 0.0,
        "flops": 0.0,
        "int8_ops": 0.0,
        "bytes": 0.0,
        "nodes": float(len(nodes)),
    }
    bw = model.bandwidth_for(working_set_bytes(nodes))
    out["bandwidth_gbs"] = bw
    for n in nodes:
        op = n.get("op", "")
        f, b = node_flops(n), node_bytes(n)
        c = f / (node_rate(n, model) * 1e3) if op in _HEAVY else 0.0
        m = b / (bw * 1e3)
        out["dispatch_us"] += model.overhead_for(op)
        out["compute_bound_us" if c >= m else "memory_bound_us"] += max(c, m)
        out["int8_ops" if op in INT8_OPS else "flops"] += f
        out["bytes"] += b
    return out


# Re-exported: the performance model and the int8 tables live in edgeopt.runtime.perf.
__all__ = [
    "PerfModel",
    "INT8_OPS",
    "INT8_SPEEDUP",
    "INT8_CONV_EFFICIENCY",
    "INT8_CONV_MIN",
    "INT8_CONV_REF_K",
    "int8_speedup",
    "node_flops",
    "node_bytes",
    "working_set_bytes",
    "node_rate",
    "node_cost_us",
    "run_cost_us",
    "transfer_factor",
    "split_cost_us",
    "transfer",
    "predicted_samples",
    "breakdown",
]
