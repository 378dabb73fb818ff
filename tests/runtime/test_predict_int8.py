"""int8 in the roofline: ISA-aware rates, int8 bytes, the bandwidth curve, profile ISA facts."""

from __future__ import annotations

import pytest

from edgeopt.runtime.predict import INT8_OPS, PerfModel, int8_speedup, node_flops, run_cost_us
from edgeopt.runtime.targets import Target

# What each built-in's CPU really has (Arm TRMs, Intel ARK, AMD): dot product is Armv8.2+
# (A76, A78AE), not A53/A72; Tiger Lake and Zen 3 differ in AVX-512 / VNNI.
EXPECTED_ISA = {
    "rpi4": ({"neon", "asimd"}, {"asimddp", "dotprod", "i8mm"}),
    "rpi-zero-2w": ({"neon", "asimd"}, {"asimddp", "dotprod", "i8mm"}),
    "rpi5": ({"neon", "asimd", "asimddp"}, {"i8mm"}),
    "jetson-orin-nano-cpu": ({"neon", "asimd", "asimddp"}, {"i8mm"}),
    "laptop-x86": ({"avx2", "fma", "avx512_vnni"}, set()),
    "ci-2vcpu": ({"avx2", "fma"}, {"avx512_vnni", "avx_vnni", "avx512f"}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_ISA))
def test_builtin_isa_lists(name):
    has, lacks = EXPECTED_ISA[name]
    isa = set(Target.load(name).device.isa)
    assert has <= isa and not (lacks & isa), (name, isa)


def test_int8_speedup_follows_isa():
    assert int8_speedup(["neon", "asimd"]) == 1.0
    assert int8_speedup(["neon", "asimd", "asimddp"]) >= 3.0
    assert int8_speedup(["dotprod"]) == int8_speedup(["asimddp"])
    assert int8_speedup(["avx2", "fma", "avx512_vnni"]) > int8_speedup(["avx2", "fma"]) > 1.0
    assert int8_speedup(["avx_vnni"]) == int8_speedup(["avx512_vnni"])


def _mm(op, k, n, weight_bytes):
    return {
        "op": op,
        "inputs": [[1, k], [k, n]],
        "outputs": [[64, n]],
        "activation_bytes": 4 * 64 * k,
        "parameter_bytes": weight_bytes,
        "output_bytes": 4 * 64 * n,
    }


def test_int8_compute_rate_from_isa_and_calibration():
    fp32 = _mm("MatMul", 1024, 1024, 4 * 1024 * 1024)
    q = _mm("DynamicQuantizeMatMul", 1024, 1024, 1024 * 1024)
    assert "DynamicQuantizeMatMul" in INT8_OPS and node_flops(q) == node_flops(fp32)
    base = {"gflops": 10.0, "mem_bandwidth_gbs": 100.0, "op_overhead_us": 1.0, "run_overhead_us": 0.0}
    a72, a76 = PerfModel(**base, isa=("neon", "asimd")), PerfModel(**base, isa=("neon", "asimd", "asimddp"))
    # compute-bound at batch 64: no gain without dot products, ~3x with them
    assert run_cost_us([q], a72) == pytest.approx(run_cost_us([fp32], a72), rel=0.01)
    assert run_cost_us([fp32], a76) / run_cost_us([q], a76) > 2.5
    # a calibrated int8 rate wins over the ISA table
    cal = PerfModel(**base, isa=("neon",), int8_gops=40.0)
    assert run_cost_us([q], cal) == pytest.approx(1.0 + node_flops(q) / 40e3)


def test_int8_weights_bytes_at_batch_1():
    fp32 = {
        "op": "MatMul",
        "inputs": [[1, 1024], [1024, 1024]],
        "outputs": [[1, 1024]],
        "activation_bytes": 4096,
        "parameter_bytes": 4 << 20,
        "output_bytes": 4096,
    }
    q = dict(fp32, op="DynamicQuantizeMatMul", parameter_bytes=1 << 20)
    rpi4 = PerfModel.of(Target.load("rpi4").device)
    assert run_cost_us([fp32], rpi4) / run_cost_us([q], rpi4) > 2.5  # memory-bound: 4x fewer weight bytes


def test_bandwidth_curve_interpolates():
    m = PerfModel(10, 50, 1, 1, bandwidth_curve=((1.0, 100.0), (4.0, 80.0), (64.0, 20.0)))
    assert m.bandwidth_for(0.5 * 2**20) == 100.0 and m.bandwidth_for(128 * 2**20) == 20.0
    assert m.bandwidth_for(4 * 2**20) == pytest.approx(80.0)
    assert 20.0 < m.bandwidth_for(16 * 2**20) < 80.0
    assert m.bandwidth_for(8 * 2**20) > m.bandwidth_for(16 * 2**20)


def test_profile_with_new_perf_keys(tmp_path):
    toml = (
        Target.load("rpi5")
        .to_toml()
        .replace(
            "calibrated = false",
            "calibrated = false\nint8_gops = 120.0\nconv_gflops = 30.0\nbandwidth_curve = [[1, 40.0], [8, 9.0]]",
        )
    )
    p = tmp_path / "t.toml"
    p.write_text(toml)
    d = Target.load(p).device
    assert d.int8_gops == 120.0 and d.bandwidth_curve == ((1.0, 40.0), (8.0, 9.0))
    assert PerfModel.of(d).int8_rate == 120.0
    p.write_text(toml.replace("[[1, 40.0], [8, 9.0]]", "[1, 2]"))
    with pytest.raises(Exception, match="bandwidth_curve"):
        Target.load(p)
