"""BenchSettings (one declaration of the measurement settings) and session options from a profile's runtime."""

from __future__ import annotations

import dataclasses

import onnxruntime as ort
import pytest

from edgeopt.errors import InputError
from edgeopt.runtime.bench import bench, measurement_job
from edgeopt.runtime.session import Runtime, available_providers, open_session, session_options
from edgeopt.runtime.settings import GATE_SETTINGS, BenchSettings
from edgeopt.runtime.targets import Target
from testkit import graphs as testing


def test_bench_settings_defaults_declared_once():
    s = BenchSettings()
    assert (s.warmup, s.min_iters, s.min_time_s, s.max_iters, s.batch, s.seed) == (10, 100, 1.0, 10000, None, 0)
    assert (GATE_SETTINGS.min_iters, GATE_SETTINGS.min_time_s, GATE_SETTINGS.max_iters) == (200, 2.0, 10000)
    assert s.timeout_s == 120.0 and BenchSettings(min_time_s=10).timeout_s == 230.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.min_iters = 3


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"min_iters": 0}, r"bench settings: min_iters: expected an integer >= 1, found an integer 0"),
        ({"min_iters": True}, r"min_iters: expected an integer >= 1, found a boolean True"),
        ({"warmup": -1}, r"warmup: expected an integer >= 0, found an integer -1"),
        ({"min_time_s": -0.5}, r"min_time_s: expected a number >= 0, found a float -0.5"),
        ({"min_time_s": "1"}, r"min_time_s: expected a number >= 0, found a string '1'"),
        ({"max_iters": 2.5}, r"max_iters: expected an integer >= 1, found a float 2.5"),
        ({"batch": 0}, r"batch: expected an integer >= 1, found an integer 0"),
        ({"min_iters": 10, "max_iters": 5}, r"max_iters: expected an integer >= min_iters \(10\), found an integer 5"),
    ],
)
def test_bench_settings_validation(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        BenchSettings(**kwargs)
    with pytest.raises(InputError, match=needle):
        BenchSettings().updated(**kwargs)


def test_bench_settings_updated_and_from_mapping():
    s = BenchSettings().updated(min_iters=40, min_time_s=0.1, max_iters=2000, batch=None)  # the search's call
    assert (s.min_iters, s.min_time_s, s.max_iters, s.batch) == (40, 0.1, 2000, None)
    assert isinstance(BenchSettings(min_time_s=0).min_time_s, float)
    with pytest.raises(InputError, match=r"bench settings: iters: unknown setting"):
        BenchSettings().updated(iters=3)
    job = {"model": "m.onnx", "min_iters": 1, "min_time_s": 0.0, "warmup": 1, "profile": True, "intra_op_threads": 1}
    assert BenchSettings.from_mapping(job) == BenchSettings(min_iters=1, min_time_s=0.0, warmup=1)


def test_measurement_job_carries_runtime_and_settings(tmp_path):
    t = Target.load("rpi4")
    job = measurement_job(
        tmp_path / "m.onnx", t, BenchSettings(min_iters=7, batch=2), threads=2, shapes={"x": (1, 3)}, profile=True
    )
    assert Runtime.from_mapping(job) == dataclasses.replace(t.runtime, intra_op_threads=2)
    assert BenchSettings.from_mapping(job) == BenchSettings(min_iters=7, batch=2)
    assert job["shapes"] == {"x": [1, 3]} and job["profile"] is True


def test_bench_takes_settings_and_keyword_overrides(fixtures):
    r = bench(
        fixtures / "mlp_small.onnx", "host", settings=BenchSettings(min_iters=25, min_time_s=0, warmup=1), max_iters=25
    )
    assert r.iterations == 25 and r.batch_size == 1
    with pytest.raises(InputError, match="warmup"):
        bench(fixtures / "mlp_small.onnx", "host", warmup=-1)


def test_session_options_from_runtime():
    rt = Runtime(intra_op_threads=3, inter_op_threads=1, graph_optimization="basic", allow_spinning=False)
    so = session_options(rt)
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert so.log_severity_level == 3 and not so.enable_profiling
    par = session_options(Runtime(inter_op_threads=2, graph_optimization="disable"))
    assert par.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert par.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert par.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    prof = session_options(rt, profile_prefix="/tmp/x", prepacking=False)
    assert prof.enable_profiling and prof.get_session_config_entry("session.disable_prepacking") == "1"
    # a profile's [runtime] goes straight in
    so = session_options(Target.load("ci-2vcpu").runtime)
    assert so.intra_op_num_threads == 2 and so.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_providers_fall_back_with_a_warning_and_open_session_runs():
    have, warning = available_providers(["CPUExecutionProvider"])
    assert have == ["CPUExecutionProvider"] and warning is None
    have, warning = available_providers(["NoSuchExecutionProvider"])
    assert have == ["CPUExecutionProvider"] and "NoSuchExecutionProvider" in warning and "falling back" in warning
    sess = open_session(testing.mlp((8, 16, 4)).to_bytes(), Runtime(intra_op_threads=1))
    assert sess.get_providers() == ["CPUExecutionProvider"] and sess.get_inputs()[0].name == "x"
