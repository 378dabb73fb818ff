"""Latency on a device you are not on: a per-node roofline transfer.

Each node of the optimized graph that actually runs (as onnxruntime's profiler reports it on this
host: op, input and output shapes, activation / parameter / output bytes) costs

    t_node = op_overhead + max(flops / gflops, bytes / mem_bandwidth)

on a device with that performance model, and a run costs ``run_overhead + sum(t_node)``. The
target's latency distribution is this host's measured one scaled by
``cost(target) / cost(host)``, with the host's own model from ``edgeopt calibrate``: what the
roofline gets wrong about this host it gets wrong about the target in the same way, so errors in
the absolute model largely cancel, while the host's run-to-run jitter is carried over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

_MATMUL = {"MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat",
           "DynamicQuantizeMatMul", "MatMulNBits"}
_GEMM = {"Gemm", "FusedGemm", "QGemm"}
_CONV = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcConv", "NchwcConv"}


@dataclass(frozen=True)
class PerfModel:
    """A device's roofline: sustained GFLOP/s, streaming GB/s, per-node and per-run overheads (us)."""

    gflops: float
    mem_bandwidth_gbs: float
    op_overhead_us: float
    run_overhead_us: float
    cache_mb: float | None = None  # last-level cache; working sets beyond half of it stream from DRAM
    dram_bandwidth_gbs: float | None = None  # streaming bandwidth from DRAM (large working sets)

    def bandwidth_for(self, working_set_bytes: float) -> float:
        """Effective GB/s for a run touching ``working_set_bytes``: the part that fits in (half) the
        last-level cache at ``mem_bandwidth_gbs``, the rest at ``dram_bandwidth_gbs``."""
        if not self.cache_mb or not self.dram_bandwidth_gbs:
            return self.mem_bandwidth_gbs
        fits = self.cache_mb * 1024 * 1024 / 2
        if working_set_bytes <= fits:
            return self.mem_bandwidth_gbs
        seconds = fits / self.mem_bandwidth_gbs + (working_set_bytes - fits) / self.dram_bandwidth_gbs
        return working_set_bytes / seconds

    @classmethod
    def of(cls, device: Any) -> "PerfModel":
        """From a targets.Device or a calibration dict; a missing run overhead is 3 node dispatches."""
        get = (lambda k: device.get(k)) if isinstance(device, Mapping) else (lambda k: getattr(device, k))
        run = get("run_overhead_us")
        opt = lambda k: (device.get(k) if isinstance(device, Mapping) else getattr(device, k, None))  # noqa: E731
        return cls(float(get("gflops")), float(get("mem_bandwidth_gbs")), float(get("op_overhead_us")),
                   float(run) if run is not None else 3.0 * float(get("op_overhead_us")),
                   opt("cache_mb"), opt("dram_bandwidth_gbs"))


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(int(d) for d in shape)) if shape else 1


def node_flops(node: Mapping[str, Any]) -> float:
    """Floating-point operations of one profiled node (multiply-add = 2)."""
    op, ins, outs = node.get("op", ""), node.get("inputs") or [], node.get("outputs") or []
    out_n = sum(_numel(s) for s in outs)
    if op in _MATMUL and ins and ins[0]:
        return 2.0 * out_n * int(ins[0][-1])
    if op in _GEMM and ins and outs and outs[0]:
        m = int(outs[0][0]) if len(outs[0]) > 1 else 1
        return 2.0 * out_n * (_numel(ins[0]) / max(m, 1)) + out_n
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


def node_cost_us(node: Mapping[str, Any], model: PerfModel, bandwidth_gbs: float | None = None) -> float:
    compute_us = node_flops(node) / (model.gflops * 1e3)
    memory_us = node_bytes(node) / ((bandwidth_gbs or model.mem_bandwidth_gbs) * 1e3)
    return model.op_overhead_us + max(compute_us, memory_us)


def run_cost_us(nodes: Sequence[Mapping[str, Any]], model: PerfModel) -> float:
    """Predicted latency of one run, in microseconds."""
    bw = model.bandwidth_for(working_set_bytes(nodes))
    return model.run_overhead_us + sum(node_cost_us(n, model, bw) for n in nodes)


def transfer_factor(nodes: Sequence[Mapping[str, Any]], host: PerfModel, target: PerfModel) -> float:
    """How much slower (>1) or faster (<1) the target runs this graph than the host."""
    return run_cost_us(nodes, target) / run_cost_us(nodes, host)


def breakdown(nodes: Sequence[Mapping[str, Any]], model: PerfModel) -> dict[str, float]:
    """Where the predicted time goes: dispatch overhead, compute-bound and memory-bound nodes (us)."""
    out = {"run_overhead_us": model.run_overhead_us, "dispatch_us": 0.0, "compute_bound_us": 0.0,
           "memory_bound_us": 0.0, "flops": 0.0, "bytes": 0.0, "nodes": float(len(nodes))}
    bw = model.bandwidth_for(working_set_bytes(nodes))
    out["bandwidth_gbs"] = bw
    for n in nodes:
        f, b = node_flops(n), node_bytes(n)
        c, m = f / (model.gflops * 1e3), b / (bw * 1e3)
        out["dispatch_us"] += model.op_overhead_us
        out["compute_bound_us" if c >= m else "memory_bound_us"] += max(c, m)
        out["flops"] += f
        out["bytes"] += b
    return out
