"""A device's performance model (:class:`PerfModel`): the numbers the latency predictor runs on.

One dataclass, declared once: ``edgeopt calibrate`` returns one (``calibrate.Calibration.perf``),
a profile's ``[device]`` table embeds one (``targets.Device.perf``; the TOML keys stay flat:
``gflops``, ``mem_bandwidth_gbs``, ...), and ``predict`` costs a graph's nodes with one. Each
field's type and bounds are declared on it (``_validate.spec``) and checked when a profile is read.
A leaf module: standard library and ``edgeopt._validate`` only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeopt._validate import spec, specs

MATMUL_OPS = {
    "MatMul",
    "FusedMatMul",
    "MatMulInteger",
    "QLinearMatMul",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "MatMulNBits",
}
GEMM_OPS = {"Gemm", "FusedGemm", "QGemm"}
CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcConv", "NchwcConv", "NhwcFusedConv"}
#: kernels whose multiply-adds run on 8-bit integers
INT8_OPS = {
    "MatMulInteger",
    "QLinearMatMul",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "QGemm",
    "QLinearConv",
    "ConvInteger",
}
HEAVY_OPS = MATMUL_OPS | GEMM_OPS | CONV_OPS | {"ConvTranspose"}

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

    gflops: float = spec("num", minimum=0, min_exclusive=True, doc="sustained fp32 matmul GFLOP/s")
    mem_bandwidth_gbs: float = spec("num", minimum=0, min_exclusive=True, doc="matrix-vector streaming GB/s")
    op_overhead_us: float = spec("num", minimum=0, min_exclusive=True, doc="per-node dispatch cost, us")
    #: per-run fixed cost of ``session.run``, us; None (not measured): 3 node dispatches
    run_overhead_us: float = spec("num", default=None, minimum=0, optional=True)
    #: last-level cache, MiB; working sets beyond half of it stream from DRAM
    cache_mb: float | None = spec("num", default=None, minimum=0, min_exclusive=True, optional=True)
    #: streaming bandwidth from DRAM (large working sets), GB/s
    dram_bandwidth_gbs: float | None = spec("num", default=None, minimum=0, min_exclusive=True, optional=True)
    #: dispatch of a MatMul / Gemm / Conv node, us (else op_overhead_us)
    matmul_overhead_us: float | None = spec("num", default=None, minimum=0, min_exclusive=True, optional=True)
    #: sustained fp32 convolution GFLOP/s (else gflops)
    conv_gflops: float | None = spec("num", default=None, minimum=0, min_exclusive=True, optional=True)
    #: sustained int8 GEMM GOP/s (else gflops x the ISA's int8 speed-up)
    int8_gops: float | None = spec("num", default=None, minimum=0, min_exclusive=True, optional=True)
    #: sustained int8 conv GOP/s (else derived, see INT8_SPEEDUP)
    int8_conv_gops: float | None = spec("num", default=None, minimum=0, min_exclusive=True, optional=True)
    #: (working set MiB, GB/s) pairs, ascending
    bandwidth_curve: tuple[tuple[float, float], ...] | None = spec("pairs", default=None, optional=True)
    isa: tuple[str, ...] = ()  # the device's ISA extensions (a device fact, for the int8 speed-up)

    def __post_init__(self) -> None:
        if self.run_overhead_us is None:
            object.__setattr__(self, "run_overhead_us", 3.0 * float(self.op_overhead_us))

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
        if op in INT8_OPS and op in CONV_OPS:
            return self.int8_conv_gops or conv * max(INT8_CONV_MIN, int8_speedup(self.isa) * INT8_CONV_EFFICIENCY)
        if op in INT8_OPS:
            return self.int8_rate
        if op in CONV_OPS or op == "ConvTranspose":
            return conv
        return self.gflops

    def overhead_for(self, op: str) -> float:
        if op in HEAVY_OPS and self.matmul_overhead_us is not None:
            return self.matmul_overhead_us
        return self.op_overhead_us

    @classmethod
    def of(cls, device: Any) -> PerfModel:
        """From a PerfModel (itself), anything with a ``perf`` (a ``targets.Device``, a
        ``calibrate.Calibration``), or a flat mapping with the profile's keys (a profile's ``[device]``
        table, a calibration's JSON). TypeError/KeyError/ValueError when there is no model."""
        if isinstance(device, PerfModel):
            return device
        perf = getattr(device, "perf", None)
        if isinstance(perf, PerfModel):
            return perf
        if not isinstance(device, Mapping):
            raise TypeError(f"no performance model in {type(device).__name__}")
        return cls.from_mapping(device)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PerfModel:
        """From flat keys (a profile's ``[device]`` table, a calibration's JSON), unvalidated."""
        curve = data.get("bandwidth_curve")
        run = data.get("run_overhead_us")
        return cls(
            float(data["gflops"]),
            float(data["mem_bandwidth_gbs"]),
            float(data["op_overhead_us"]),
            float(run) if run is not None else None,
            data.get("cache_mb"),
            data.get("dram_bandwidth_gbs"),
            data.get("matmul_overhead_us"),
            data.get("conv_gflops"),
            data.get("int8_gops"),
            data.get("int8_conv_gops"),
            tuple((float(a), float(b)) for a, b in curve) if curve else None,
            tuple(data.get("isa") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        """The flat keys of a profile's ``[device]`` table (without ``isa``, a device fact)."""
        out = {name: getattr(self, name) for name in KEYS}
        out["bandwidth_curve"] = [list(p) for p in self.bandwidth_curve] if self.bandwidth_curve else None
        return out


#: the fields a profile must set together to have a performance model
REQUIRED_KEYS = ("gflops", "mem_bandwidth_gbs", "op_overhead_us")
#: every key of the model in a profile's [device] table, in the order profiles, `targets show` and
#: the calibration JSON list them
KEYS = (
    *REQUIRED_KEYS,
    "run_overhead_us",
    "dram_bandwidth_gbs",
    "cache_mb",
    "matmul_overhead_us",
    "conv_gflops",
    "int8_gops",
    "int8_conv_gops",
    "bandwidth_curve",
)
if set(KEYS) != set(specs(PerfModel)):  # pragma: no cover - a declaration mistake, caught on import
    raise RuntimeError("perf.KEYS must list exactly PerfModel's declared fields")

__all__ = [
    "PerfModel",
    "REQUIRED_KEYS",
    "KEYS",
    "INT8_OPS",
    "INT8_SPEEDUP",
    "int8_speedup",
    "MATMUL_OPS",
    "GEMM_OPS",
    "CONV_OPS",
    "HEAVY_OPS",
    "INT8_CONV_EFFICIENCY",
    "INT8_CONV_MIN",
    "INT8_CONV_REF_K",
]
