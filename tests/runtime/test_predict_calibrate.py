from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest

from edgeopt.runtime import calibrate as cal_mod
from edgeopt.runtime.onnx_proto import ProtoError, summarize
from edgeopt.runtime.predict import PerfModel, node_flops, run_cost_us, transfer_factor
from edgeopt.runtime.targets import Target
from testkit import graphs as testing


def test_node_flops():
    assert node_flops({"op": "MatMul", "inputs": [[1, 64], [64, 128]], "outputs": [[1, 128]]}) == 2 * 64 * 128
    assert (
        node_flops({"op": "FusedGemm", "inputs": [[4, 64], [64, 128], [128]], "outputs": [[4, 128]]})
        == 2 * 4 * 64 * 128 + 4 * 128
    )
    conv = {"op": "Conv", "inputs": [[1, 3, 8, 8], [16, 3, 3, 3], [16]], "outputs": [[1, 16, 8, 8]]}
    assert node_flops(conv) == 2 * 16 * 64 * 27
    assert node_flops({"op": "Relu", "inputs": [[1, 100]], "outputs": [[1, 100]]}) == 100


def test_roofline_regimes():
    m = PerfModel(gflops=10, mem_bandwidth_gbs=1, op_overhead_us=2, run_overhead_us=5)
    tiny = {"op": "Add", "inputs": [[1]], "outputs": [[1]], "activation_bytes": 4, "output_bytes": 4}
    big = {
        "op": "MatMul",
        "inputs": [[1, 1000], [1000, 1000]],
        "outputs": [[1, 1000]],
        "activation_bytes": 4000,
        "parameter_bytes": 4_000_000,
        "output_bytes": 4000,
    }
    assert run_cost_us([tiny], m) == pytest.approx(5 + 2 + 0.008)
    assert run_cost_us([big], m) == pytest.approx(5 + 2 + 4008)  # memory-bound: 4.008 MB at 1 GB/s
    fast = PerfModel(100, 10, 1, 2)
    assert transfer_factor([big], fast, m) == pytest.approx(4015 / (2 + 1 + 400.8))


def test_calibrate_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_CACHE_DIR", str(tmp_path))
    c = cal_mod.calibrate(1, budget_s=0.1)
    perf = c.perf
    assert isinstance(perf, PerfModel) and PerfModel.of(c) is perf  # what benchmarks/layers.py relies on
    assert perf.gflops > 0.5 and perf.int8_gops > 0.5 and perf.conv_gflops > 0.5 and len(perf.bandwidth_curve) == 5
    assert perf.mem_bandwidth_gbs > 0.1 and perf.op_overhead_us > 0 and perf.run_overhead_us >= 0
    assert c.threads == 1 and c.cpu and c.onnxruntime == ort.__version__
    assert cal_mod.cached_calibration(1) is None
    cal_mod.save_calibration(c)
    assert cal_mod.cached_calibration(1) == c
    doc = json.loads((tmp_path / "calibration.json").read_text())
    (entry,) = doc.values()
    # the JSON keeps the performance model's keys flat, as a profile's [device] table does
    assert entry["gflops"] == perf.gflops and entry["bandwidth_curve"] == [list(p) for p in perf.bandwidth_curve]
    assert entry["threads"] == 1 and cal_mod.Calibration.from_dict(entry) == c
    # the snippet pastes into a profile that validates
    toml = Target.load("rpi4").to_toml()
    start, end = toml.index("gflops"), toml.index("perf_source")
    toml = (
        toml[:start]
        + "\n".join(line for line in cal_mod.snippet(c).splitlines() if not line.startswith("#"))
        + "\n"
        + toml[toml.index("\n", end) + 1 :]
    )
    p = tmp_path / "mine.toml"
    p.write_text(toml)
    t = Target.load(p)
    assert t.device.calibrated and t.device.perf == dataclasses.replace(c.perf, isa=t.device.isa)
    assert t.device.gflops == perf.gflops  # the flat names still read through


def test_host_profile_uses_cached_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_CACHE_DIR", str(tmp_path))
    assert not Target.load("host").device.has_perf_model
    cal_mod.host_calibration(0)
    d = Target.load("host").device
    assert d.has_perf_model and d.calibrated and "calibrate" in d.perf_source


def test_writer_reader_round_trip_and_errors(tmp_path):
    g = testing.mlp((8, 16, 4))
    data = g.to_bytes(metadata={"edgeopt.target": "rpi4"})
    s = summarize(data)
    assert (
        s.params == 8 * 16 + 16 + 16 * 4 + 4
        and s.opsets == {"ai.onnx": 17}
        and s.metadata == {"edgeopt.target": "rpi4"}
    )
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": np.ones((3, 8), np.float32)})[0]
    assert y.shape == (3, 4)
    for bad in (b"garbage!", data[:-7], b"\x08"):
        with pytest.raises(ProtoError):
            summarize(bad)


@pytest.mark.compile
def test_writer_output_passes_onnx_checker(tmp_path):
    import onnx

    for build in (lambda: testing.mlp((8, 16, 4), rank=2), testing.cnn, testing.many_small, testing.multi_input):
        p = build().save(tmp_path / "m.onnx")
        onnx.checker.check_model(onnx.load(p), full_check=True)
