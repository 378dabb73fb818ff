"""Shipping: fine-tune, export, measure, gate; the artifact appears whole, with its provenance."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.compile
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from edgeopt.pipeline.config import CompileConfig  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.finetune import fine_tune  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.record import DType, Status, TrialRecord  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.ship import layer_table, ship, write_state  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.runtime.targets import Target  # noqa: E402 - after the importorskips

QUICK = {"min_iters": 20, "min_time_s": 0.05, "max_iters": 500}


def test_ship_without_a_plan_ships_the_input_model_measured_and_gated(small_mlp_task, tmp_path):
    config = CompileConfig(out=tmp_path, final_bench=QUICK)
    target = Target.load("host").with_budget(model_size_mb=1.0)
    shipped = ship(small_mlp_task.model, None, small_mlp_task, target, config)
    assert shipped.path == tmp_path / "model.onnx" and shipped.path.exists()
    assert shipped.plan == {} and shipped.dtype is DType.FP32 and shipped.trial is None
    assert shipped.measured.gate.verdict == "pass"
    assert set(shipped.measured.metrics) == {"val", "test"}
    meta = {p.key: p.value for p in onnx.load(str(shipped.path)).metadata_props}
    assert meta["edgeopt.role"] == "artifact" and meta["edgeopt.dtype"] == "fp32" and "edgeopt.metrics" in meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no staging dir or temp file left


@pytest.mark.slow
def test_ship_fine_tunes_the_chosen_plan(small_mlp_task, tmp_path):
    config = CompileConfig(out=tmp_path, final_bench=QUICK, final_epochs=2)
    plan = {"0": {"format": "lowrank", "rank": 4}}
    chosen = TrialRecord(number=7, status=Status.TRAINED, plan=plan)
    shipped = ship(small_mlp_task.model, chosen, small_mlp_task, Target.load("host"), config)
    assert shipped.trial == 7 and shipped.plan == plan and "distill" in shipped.timings
    assert shipped.cost.params < sum(p.numel() for p in small_mlp_task.model.parameters())
    rows = layer_table(
        {"0": type("S", (), {"params": 16640, "kind": "linear", "macs": 16384})()}, plan, None, shipped.cost
    )
    assert rows[0]["format"] == "lowrank" and rows[0]["params"] < rows[0]["dense_params"]


def test_fine_tune_leaves_the_teacher_alone(small_mlp_task):
    before = [p.detach().clone() for p in small_mlp_task.model.parameters()]
    tuned = fine_tune(small_mlp_task.model, {}, small_mlp_task, CompileConfig())
    assert tuned.student is not small_mlp_task.model and "distill" not in tuned.timings and tuned.epoch == 0
    assert all(torch.equal(a, b) for a, b in zip(before, small_mlp_task.model.parameters()))


def test_write_state_is_json(tmp_path):
    path = write_state(tmp_path, {"schema": "edgeopt.compile-state/1", "out": tmp_path, "t": (1, 2)})
    assert json.loads(path.read_text()) == {"schema": "edgeopt.compile-state/1", "out": str(tmp_path), "t": [1, 2]}


def test_an_undecided_final_gate_is_reported_as_undecided_and_exits_3(tmp_path):
    from edgeopt.pipeline.loop import CompileResult
    from edgeopt.pipeline.ship import gate_outcome

    latency = {"name": "latency_p95", "budget": 0.1032, "measured": 0.101386, "upper_bound": 0.1101, "passed": None}
    size = {"name": "model_size", "budget": 50.0, "measured": 0.03, "upper_bound": None, "passed": True}
    verdict, lines = gate_outcome({"verdict": "inconclusive", "passed": False, "checks": [latency, size]})
    assert verdict == "inconclusive" and len(lines) == 2 and lines[0].startswith("final gate: INCONCLUSIVE")
    assert lines[1].startswith("latency_p95: undecided: measured 0.101386 is within budget 0.1032")
    assert "upper bound 0.1101" in lines[1] and ">" not in lines[1]
    result = CompileResult(tmp_path, False, {}, {}, tmp_path / "model.onnx", inconclusive=verdict == "inconclusive")
    assert result.exit_code == 3
    floor = {"name": "quality floor (f1)", "budget": 0.7, "measured": 0.6, "passed": False}
    verdict, lines = gate_outcome({"verdict": "inconclusive", "passed": False, "checks": [latency, floor]})
    assert verdict == "fail" and lines[1] == "quality floor (f1): measured 0.6 < budget 0.7"
    over = {"name": "latency_p95", "budget": 0.05, "measured": 0.08, "lower_bound": 0.07, "passed": False}
    assert gate_outcome({"verdict": "fail", "checks": [over]})[1] == [
        "latency_p95: measured 0.08 > budget 0.05 (lower bound 0.07 too)"
    ]
