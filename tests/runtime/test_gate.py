from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from edgeopt.errors import InputError
from edgeopt.runtime.bench import bench
from edgeopt.runtime.gate import gate, latency_check
from edgeopt.runtime.targets import Target

from .conftest import QUICK


@pytest.fixture(scope="module")
def measured(request):
    from .conftest import FIXTURES

    return bench(FIXTURES / "mlp_small.onnx", "host", **QUICK)


def with_samples(r, samples):
    return dataclasses.replace(r, samples_ms=tuple(samples))


def test_latency_check_pass_fail_inconclusive():
    xs = np.linspace(1.0, 2.0, 200)
    assert latency_check(xs, 95, 3.0, 0.95, source="measured").passed is True
    assert latency_check(xs, 95, 0.5, 0.95, source="measured").passed is False
    c = latency_check(xs, 95, 1.95, 0.95, source="measured")  # inside the interval
    assert c.passed is None and c.status == "inconclusive" and c.lower_bound <= 1.95 <= c.upper_bound
    c = latency_check(xs[:30], 95, 100.0, 0.95, source="measured")
    assert c.passed is None and "need >= 59" in c.detail


def test_gate_verdicts_and_exit_codes(measured):
    t = Target.load("host").with_budget(latency_ms=1.0, peak_memory_mb=1000, model_size_mb=1)
    ok = gate("m", t, bench_result=with_samples(measured, np.full(100, 0.5)))
    assert ok.verdict == "pass" and ok.exit_code == 0 and all(c.passed for c in ok.checks)
    over = gate("m", t, bench_result=with_samples(measured, np.full(100, 5.0)))
    assert over.verdict == "fail" and over.exit_code == 1
    few = gate("m", t, bench_result=with_samples(measured, np.full(20, 0.5)))
    assert few.verdict == "inconclusive" and few.exit_code == 3
    strict = gate("m", t, strict=True, bench_result=with_samples(measured, np.full(20, 0.5)))
    assert strict.exit_code == 1
    size = gate("m", Target.load("host").with_budget(model_size_mb=0.01), bench_result=measured)
    assert size.verdict == "fail" and [c.name for c in size.checks if c.passed is False] == ["model_size"]


def test_gate_outputs(measured):
    t = Target.load("host").with_budget(latency_ms=1000.0, model_size_mb=0.01)
    g = gate("model.onnx", t, bench_result=measured)
    d = g.to_dict()
    assert d["schema"] == "edgeopt.gate/1" and d["verdict"] == "fail"
    for c in d["checks"]:
        assert {"name", "budget", "measured", "upper_bound", "lower_bound", "passed"} <= set(c)
    root = ET.fromstring(g.to_junit().split("\n", 1)[1])
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == [c.name for c in g.checks]
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == 1 and "budget 0.01 MB" in failed[0].find("failure").get("message")
    md = g.to_markdown()
    assert "| model_size |" in md and "FAIL" in md and "measured on host" in md


def test_gate_runs_bench_itself(fixtures):
    g = gate(fixtures / "mlp_lowrank16.onnx", "rpi4", **QUICK)
    assert g.bench.latency_source == "predicted"
    assert {c.name for c in g.checks} == {"latency_p95", "peak_memory", "model_size"}
    lat = next(c for c in g.checks if c.name == "latency_p95")
    assert lat.source == "predicted"
    assert "predicted for rpi4" in g.to_markdown()


def test_bad_confidence(measured):
    with pytest.raises(InputError, match="confidence"):
        gate("m", "host", confidence=1.5, bench_result=measured)
