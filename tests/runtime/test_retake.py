"""``edgeopt gate`` takes a measurement again while other work disturbed it and its latency did not pass
(runtime/retake.py): real measurements of a real file, replayed through the real gate as a busy host
would leave them."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from edgeopt.cli import main
from edgeopt.runtime import gate as gate_mod
from edgeopt.runtime.bench import bench
from edgeopt.runtime.result import summary
from edgeopt.runtime.retake import RETAKES, gate_retaking
from edgeopt.runtime.targets import Target

QUICK = {"min_iters": 400, "min_time_s": 0.1, "max_iters": 2000}
REAL_GATE = gate_mod.gate


def _with(r, xs):
    return dataclasses.replace(r, **summary(xs, xs, 1, None, []))


def _quiet(r):
    """Every run within 3 % of the median, no stalls (a loaded test host would flag the real one itself)."""
    xs = np.array(r.samples_ms)
    med = float(np.median(xs))
    return _with(r, np.clip(xs, 0.97 * med, 1.03 * med))


def _stalled(r, share: float = 0.08, factor: float = 20.0):
    """``share`` of the runs ``factor`` x slower: a neighbour's bursts."""
    xs = np.array(r.samples_ms)
    xs[:: int(1 / share)] *= factor
    return _with(r, xs)


@pytest.fixture
def quiet(fixtures):
    return _quiet(bench(fixtures / "mlp_small.onnx", "host", **QUICK))


def _replaying(monkeypatch, results):
    calls = []

    def replay(path, target, **kwargs):
        calls.append(kwargs)
        return REAL_GATE(path, target, bench_result=results[min(len(calls), len(results)) - 1])

    monkeypatch.setattr(gate_mod, "gate", replay)
    return calls


def test_a_disturbed_failing_measurement_is_taken_again_and_the_least_disturbed_counts(fixtures, quiet, monkeypatch):
    path = fixtures / "mlp_small.onnx"
    target = Target.load("host").with_budget(latency_ms=2 * quiet.latency_at(95))
    assert REAL_GATE(path, target, bench_result=_stalled(quiet)).verdict != "pass"  # the stalls fail it alone
    calls = _replaying(monkeypatch, [_stalled(quiet), quiet])
    g = gate_retaking(path, target)
    assert len(calls) == 2 and g.verdict == "pass"
    assert [t["verdict"] for t in g.tries] != ["pass"] and g.tries[0]["noisy"] and g.tries[1]["noisy"] is None
    assert "measured 2 times" in g.to_text() and "measured 2 times" in g.to_markdown()
    assert json.loads(json.dumps(g.to_dict()))["tries"][1]["verdict"] == "pass"
    # a model slow when measured quietly fails at once: nothing flags its measurement
    slow = Target.load("host").with_budget(latency_ms=0.5 * quiet.latency_at(50))
    calls = _replaying(monkeypatch, [quiet])
    g = gate_retaking(path, slow)
    assert len(calls) == 1 and g.verdict == "fail" and g.tries == ()
    # disturbed every time: it stops after the last try, and fails
    calls = _replaying(monkeypatch, [_stalled(quiet)])
    g = gate_retaking(path, slow)
    assert len(calls) == RETAKES and g.verdict == "fail" and len(g.tries) == RETAKES


def test_the_gate_command_retakes_and_says_so(fixtures, quiet, monkeypatch, capsys, tmp_path):
    path = fixtures / "mlp_small.onnx"
    budget = f"{2 * quiet.latency_at(95):.6f}"
    calls = _replaying(monkeypatch, [_stalled(quiet), quiet])
    out = tmp_path / "gate.json"
    code = main(["gate", str(path), "--target", "host", "--latency-ms", budget, "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and len(calls) == 2 and "measured 2 times" in text
    assert len(json.loads(out.read_text())["tries"]) == 2
    calls = _replaying(monkeypatch, [_stalled(quiet), quiet])
    code = main(["gate", str(path), "--target", "host", "--latency-ms", budget, "--retakes", "1"])
    assert code == 1 and len(calls) == 1  # asked to measure once: the disturbed measurement decides
    capsys.readouterr()
    code = main(["gate", str(path), "--retakes", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--retakes" in err[0] and "found 0" in err[0]
