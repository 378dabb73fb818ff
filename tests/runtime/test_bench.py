from __future__ import annotations

import time

import pytest

from edgeopt.errors import InputError, ModelError, TargetError
from edgeopt.runtime.bench import bench
from edgeopt.runtime.targets import Target
from testkit import graphs as testing

from .conftest import QUICK

SCHEMA_KEYS = {
    "schema",
    "model",
    "target",
    "latency_ms",
    "iterations",
    "throughput_per_s",
    "peak_memory_mb",
    "model_size_bytes",
    "params",
    "environment",
    "latency_source",
    "host_latency_ms",
}


def test_bench_on_host_is_measured(fixtures):
    r = bench(fixtures / "mlp_small.onnx", "host", **QUICK)
    assert r.latency_source == "measured" and r.latency_ms == r.host_latency_ms
    assert r.iterations >= 20 and len(r.samples_ms) == r.iterations
    assert (
        0
        < r.latency_ms["min"]
        <= r.latency_ms["p50"]
        <= r.latency_ms["p95"]
        <= r.latency_ms["p99"]
        <= r.latency_ms["max"]
    )
    assert r.latency_at(95) == r.latency_ms["p95"]
    assert r.params == 64 * 128 + 128 + 128 * 10 + 10
    assert r.model_size_bytes == (fixtures / "mlp_small.onnx").stat().st_size
    assert r.peak_memory_mb > 0 and r.process_peak_memory_mb > r.peak_memory_mb
    assert r.session_create_ms > 0 and r.first_inference_ms > 0 and r.throughput_per_s > 0
    env = r.environment
    assert env["onnxruntime"] and env["cpu"] and env["cores"] >= 1 and env["is_target"] is True
    d = r.to_dict()
    assert set(d) >= SCHEMA_KEYS and d["schema"] == "edgeopt.bench/1"
    assert set(d["latency_ms"]) == {"p50", "p90", "p95", "p99", "mean", "std", "min", "max"}


def test_bench_off_target_is_predicted_and_labelled(fixtures):
    r = bench(fixtures / "mlp_small.onnx", "rpi4", **QUICK)
    assert r.latency_source == "predicted" and r.prediction is not None
    assert r.prediction["factor"] > 1  # a Pi 4 is slower than any host this runs on
    assert r.latency_ms["p50"] == pytest.approx(r.host_latency_ms["p50"] * r.prediction["factor"], rel=1e-9)
    assert r.environment["is_target"] is False and "PREDICTED for rpi4" in r.to_text()
    assert r.environment["intra_op_threads_used"] <= r.environment["logical_cores"]


def test_on_device_forces_measurement(fixtures):
    r = bench(fixtures / "mlp_small.onnx", "rpi4", on_device=True, **QUICK)
    assert r.latency_source == "measured" and r.prediction is None


def test_quick_screen_is_fast(fixtures):
    bench(fixtures / "mlp_lowrank16.onnx", "rpi4", **QUICK)  # calibrates once (cached)
    t0 = time.perf_counter()
    bench(fixtures / "mlp_lowrank16.onnx", "rpi4", **QUICK)
    assert time.perf_counter() - t0 < 3.0  # typically ~0.7 s; loose for a loaded CI machine


def test_demo_budgets_dense_fails_lowrank_passes(fixtures, dense_mlp):
    """rpi4-demo's budgets are sized for the demo: the dense teacher is over; the size budget asks for ~30x
    fewer parameters; a rank-16 student's predicted latency is well under."""
    t = Target.load("rpi4-demo")
    dense = bench(dense_mlp, t, min_iters=50, min_time_s=0.2)
    low = bench(fixtures / "mlp_lowrank16.onnx", t, min_iters=50, min_time_s=0.2)
    assert dense.model_size_mb > 30 * t.budget.model_size_mb
    assert low.model_size_mb < dense.model_size_mb / 10
    assert dense.prediction["target_model_us"] / 1e3 > 2 * t.budget.latency_ms
    assert low.prediction["target_model_us"] / 1e3 < 0.5 * t.budget.latency_ms
    assert low.peak_memory_mb < t.budget.peak_memory_mb


def test_batch_fills_symbolic_leading_dim(fixtures):
    r = bench(fixtures / "mlp_small.onnx", "host", batch=4, **QUICK)
    assert r.environment["inputs"]["x"]["shape"] == [4, 64] and r.batch_size == 4


def test_several_inputs_float_and_int_need_shape_for_symbolic_dims(fixtures):
    with pytest.raises(
        InputError, match=r"input 'features' has symbolic dimension 'seq' at axis 1 .*--shape features=1,N,16"
    ):
        bench(fixtures / "multi_input.onnx", "host", **QUICK)
    r = bench(fixtures / "multi_input.onnx", "host", shapes=["features=2,7,16"], **QUICK)
    assert r.environment["inputs"] == {
        "features": {"shape": [2, 7, 16], "dtype": "float32"},
        "ids": {"shape": [1, 4], "dtype": "int64"},
    }


@pytest.mark.parametrize(
    "spec, needle",
    [
        (["features=1,7"], "has rank 3"),
        (["nope=1,2"], "no input of that name"),
        (["features"], "expected NAME=D1,D2"),
        (["features=1,7,8"], "axis 2 of input 'features' is fixed at 16, found 8"),
    ],
)
def test_bad_shapes(fixtures, spec, needle):
    with pytest.raises(InputError, match=needle):
        bench(fixtures / "multi_input.onnx", "host", shapes=spec, **QUICK)


def test_bad_models(fixtures, tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        bench(tmp_path / "missing.onnx", "host", **QUICK)
    with pytest.raises(ModelError, match="not a valid ONNX model .*truncated"):
        bench(fixtures / "truncated.onnx", "host", **QUICK)
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        bench(fixtures / "not_onnx.onnx", "host", **QUICK)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="empty file"):
        bench(tmp_path / "empty.onnx", "host", **QUICK)
    with pytest.raises(ModelError, match="is a directory"):
        bench(tmp_path, "host", **QUICK)


def test_model_onnxruntime_cannot_load(tmp_path):
    g = testing.GraphBuilder() if hasattr(testing, "GraphBuilder") else None
    from edgeopt.runtime.onnx_proto import GraphBuilder

    g = GraphBuilder()
    g.input("x", [1, 4])
    g.op("NoSuchOp", "x", out="y")
    g.output("y", [1, 4])
    p = g.save(tmp_path / "bad_op.onnx")
    with pytest.raises(ModelError, match="onnxruntime cannot load the model"):
        bench(p, "host", **QUICK)


def test_unavailable_provider_falls_back_with_warning(fixtures, tmp_path):
    text = (
        Target.load("host")
        .to_toml()
        .replace(
            'providers = ["CPUExecutionProvider"]', 'providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]'
        )
    )
    text = text.replace("detect = true", "detect = true").replace("\ncalibrated = false", "")
    p = tmp_path / "cuda.toml"
    p.write_text(text)
    r = bench(fixtures / "mlp_small.onnx", p, on_device=True, **QUICK)
    assert any("CUDAExecutionProvider" in w and "falling back" in w for w in r.warnings)
    assert r.environment["providers"] == ["CPUExecutionProvider"]


def test_bad_bench_arguments(fixtures):
    for kwargs, needle in (
        ({"min_iters": 0}, "min_iters"),
        ({"batch": 0}, "batch"),
        ({"min_iters": 10, "max_iters": 5}, "max_iters"),
    ):
        with pytest.raises(InputError, match=needle):
            bench(fixtures / "mlp_small.onnx", "host", **kwargs)
    with pytest.raises(TargetError):
        bench(fixtures / "mlp_small.onnx", "nope")


def test_target_without_perf_model_needs_on_device(fixtures, tmp_path):
    p = tmp_path / "bare.toml"
    p.write_text('name = "bare"\n[device]\narch = "aarch64"\ncpu = "cortex-x9"\ncores = 4\nmemory_mb = 1024\n')
    with pytest.raises(TargetError, match=r"\[device\] gflops: expected a performance model"):
        bench(fixtures / "mlp_small.onnx", p, **QUICK)
    assert bench(fixtures / "mlp_small.onnx", p, on_device=True, **QUICK).latency_source == "measured"
