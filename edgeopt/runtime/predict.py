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

The target's latency distribution is this host's measured one scaled by
``cost(target) / cost(host)``, with the host's own model from ``edgeopt calibrate``: what the
roofline gets wrong about this host it gets wrong about the target in the same way, so errors in
the absolute model largely cancel, while the host's run-to-run jitter is carried over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_MATMUL = {"MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat",
           "DynamicQuantizeMatMul", "MatMulNBits"}
_GEMM = {"Gemm", "FusedGemm", "QGemm"}
_CONV = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcConv", "NchwcConv", "NhwcFusedConv"}
#: kernels whose multiply-adds run on 8-bit integers
INT8_OPS = {"MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm",
            "QLinearConv", "ConvInteger"}
_HEAVY = _MATMUL | _GEMM | _CONV | {"ConvTranspose"}

#: int8 multiply-add throughput relative to fp32 FMA, by the best instruction the CPU has, as
#: onnxruntime's MLAS kernels use them (first match wins). The one place these factors live.
#: - x86 AVX-512 VNNI / AVX-VNNI (VPDPBUSD): 4 int8 MACs per 32-bit lane in one instruction vs one
#:   fp32 FMA: 4x in theory; `edgeopt calibrate` measured 4.5x on an AMD EPYC (Zen 4, avx512_vnni).
#: - x86 AVX2 without VNNI (VPMADDUBSW + VPMADDWD + VPADDD): 2x in theory, ~1.5x sustained.
#: - aarch64 i8mm (SMMLA/UMMLA, Armv8.6): 2x the dot-product rate again -> ~4x fp32.
#: - aarch64 dot product (SDOT/UDOT, Armv8.2 `asimddp`, e.g. Cortex-A76, A78AE): 16 MACs per
#:   128-bit instruction vs 4 fp32 FMAs -> 4x in theory, ~3x sustained.
#: - aarch64 / armv7 NEON without dot product (Cortex-A53, A72): widening SMULL/SMLAL + pairwise
#:   adds give about the fp32 FMA rate: no compute gain, only the 4x smaller weight bytes.
INT8_SPEEDUP: tuple[tuple[tuple[str, ...], float], ...] = (
    (("amx_int8",), 8.0),
    (("avx512_vnni", "avx_vnni", "avx512vnni", "avxvnni"), 4.0),
    (("i8mm",), 4.0),
    (("asimddp", "dotprod"), 3.0),
    (("avx2",), 1.5),
    (("neon", "asimd"), 1.0),
)

#: int8 convolutions (QLinearConv: NHWC im2col + QGEMM + requantization) reach only part of the
#: GEMM speed-up on the small channel counts of edge CNNs: measured here (Zen 4, VNNI) 1.2x the fp32
#: conv rate against 4.6x for GEMM. A profile without ``int8_conv_gops`` gets
#: conv rate x max(INT8_CONV_MIN, int8_speedup x INT8_CONV_EFFICIENCY): no gain without dot products.
INT8_CONV_EFFICIENCY = 0.3
INT8_CONV_MIN = 1.0
#: ... and below a reduction length (input channels x kernel area) of 16x3x3 -- the calibration
#: conv's -- int8 conv speed falls in proportion (a 1-channel 3x3 QLinearConv ran at 1/16 the rate here;
#: fp32 NCHWc convs show no such cliff).
INT8_CONV_REF_K = 144


def int8_speedup(isa: Sequence[str]) -> float:
    """int8 MAC rate / fp32 FLOP rate for a device with these ISA extensions (see INT8_SPEEDUP)."""
    have = {s.lower() for s in isa}
    for names, factor in INT8_SPEEDUP:
        if have.intersection(names):
            return factor
    return 1.0


@dataclass(frozen=True)
class PerfModel:
    """A device's roofline: sustained GFLOP/s, streaming GB/s, per-node and per-run overheads (us).

    Optional refinements (None: fall back to the basic fields): ``matmul_overhead_us`` (dispatch of
    a MatMul / Gemm / Conv node), ``conv_gflops``, ``int8_gops`` (else ``gflops`` x
    ``int8_speedup(isa)``), ``int8_conv_gops``, ``bandwidth_curve`` ((working set MiB, GB/s) pairs, ascending).
    """

    gflops: float
    mem_bandwidth_gbs: float
    op_overhead_us: float
    run_overhead_us: float
    cache_mb: float | None = None  # last-level cache; working sets beyond half of it stream from DRAM
    dram_bandwidth_gbs: float | None = None  # streaming bandwidth from DRAM (large working sets)
    matmul_overhead_us: float | None = None
    conv_gflops: float | None = None
    int8_gops: float | None = None
    int8_conv_gops: float | None = None
    bandwidth_curve: tuple[tuple[float, float], ...] | None = None
    isa: tuple[str, ...] = ()

    def bandwidth_for(self, working_set_bytes: float) -> float:
        """Effective GB/s for a run touching ``working_set_bytes``: interpolated (time per byte,
        log working set) on the measured curve; else the part that fits in (half) the last-level
        cache at ``mem_bandwidth_gbs``, the rest at ``dram_bandwidth_gbs``."""
        if self.bandwidth_curve:
            pts = sorted(self.bandwidth_curve)
            mb = max(working_set_bytes / 2**20, 1e-6)
            if mb <= pts[0][0]:
                return pts[0][1]
            if mb >= pts[-1][0]:
                return pts[-1][1]
            for (m0, g0), (m1, g1) in zip(pts, pts[1:]):
                if m0 <= mb <= m1:
                    w = (math.log(mb) - math.log(m0)) / (math.log(m1) - math.log(m0))
                    return 1.0 / ((1 - w) / g0 + w / g1)
        if not self.cache_mb or not self.dram_bandwidth_gbs:
            return self.mem_bandwidth_gbs
        fits = self.cache_mb * 1024 * 1024 / 2
        if working_set_bytes <= fits:
            return self.mem_bandwidth_gbs
        seconds = fits / self.mem_bandwidth_gbs + (working_set_bytes - fits) / self.dram_bandwidth_gbs
        return working_set_bytes / seconds

    @property
    def int8_rate(self) -> float:
        """int8 GOP/s (multiply-add = 2): measured, or fp32 GFLOP/s x the ISA's int8 speed-up."""
        return self.int8_gops or self.gflops * int8_speedup(self.isa)

    def rate_for(self, op: str) -> float:
        """GFLOP/s (GOP/s for int8 kernels) at which this op's arithmetic runs."""
        conv = self.conv_gflops or self.gflops
        if op in INT8_OPS and op in _CONV:
            return self.int8_conv_gops or conv * max(INT8_CONV_MIN, int8_speedup(self.isa) * INT8_CONV_EFFICIENCY)
        if op in INT8_OPS:
            return self.int8_rate
        if op in _CONV or op == "ConvTranspose":
            return conv
        return self.gflops

    def overhead_for(self, op: str) -> float:
        if op in _HEAVY and self.matmul_overhead_us is not None:
            return self.matmul_overhead_us
        return self.op_overhead_us

    @classmethod
    def of(cls, device: Any) -> PerfModel:
        """From a targets.Device or a calibration dict; a missing run overhead is 3 node dispatches."""
        if isinstance(device, Mapping):
            get = device.get
        else:
            def get(k: str) -> Any:
                return getattr(device, k, None)
        run = get("run_overhead_us")
        curve = get("bandwidth_curve")
        return cls(float(get("gflops")), float(get("mem_bandwidth_gbs")), float(get("op_overhead_us")),
                   float(run) if run is not None else 3.0 * float(get("op_overhead_us")),
                   get("cache_mb"), get("dram_bandwidth_gbs"), get("matmul_overhead_us"), get("conv_gflops"),
                   get("int8_gops"), get("int8_conv_gops"), tuple((float(a), float(b)) for a, b in curve) if curve else None,
                   tuple(get("isa") or ()))


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
    """How much slower (>1) or faster (<1) the target runs this graph than the host."""
    return run_cost_us(nodes, target) / run_cost_us(nodes, host)


def breakdown(nodes: Sequence[Mapping[str, Any]], model: PerfModel) -> dict[str, float]:
    """Where the predicted time goes: dispatch overhead, compute-bound and memory-bound nodes (us)."""
    out = {"run_overhead_us": model.run_overhead_us, "dispatch_us": 0.0, "compute_bound_us": 0.0,
           "memory_bound_us": 0.0, "flops": 0.0, "int8_ops": 0.0, "bytes": 0.0, "nodes": float(len(nodes))}
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
