"""Finalists re-measured as they ship (the plan's int8 layers quantized) and side by side (rotated rounds, pooled)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.compile
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from edgeopt.compiler.decompose import decompose  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.config import CompileConfig  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.finalists import FinalistTimer  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.prepare import prepare  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.record import DType, Status, TrialRecord  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.screen import Screen  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.runtime import stats  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.runtime.targets import Target  # noqa: E402 - after the pytest.importorskip guards

BLOCK = {"min_iters": 30, "min_time_s": 0.06, "max_iters": 600}
PLAN = {"0": {"format": "prune", "rank": 64}, "2": {"format": "lowrank", "rank": 8}}
PLAN_INT8 = {"0": {"format": "prune", "rank": 64, "precision": "int8"}, "2": {"format": "lowrank", "rank": 8}}


def _rec(number: int, plan: dict) -> TrialRecord:
    return TrialRecord(number=number, status=Status.TRAINED, plan=plan, dtype=DType.FP32, val={"score": 0.9})


@pytest.fixture
def timer(small_mlp_task, tmp_path):
    target = Target.load("host")
    inputs = prepare(small_mlp_task, target, CompileConfig(out=tmp_path, trial_epochs=1, search="layers"))
    return FinalistTimer(inputs, Screen(small_mlp_task, target, tmp_path / "cache.json"), BLOCK)


def test_a_finalist_with_int8_layers_is_timed_quantized(small_mlp_task, timer, tmp_path):
    student = decompose(small_mlp_task.model, PLAN_INT8, example_input=small_mlp_task.example_input)
    path = timer.screen.export(student, "fp32", tmp_path, PLAN_INT8)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops, ops  # a Linear layer: dynamic int8
    got = timer.together([_rec(1, PLAN_INT8), _rec(2, PLAN)])
    assert got[1]["nodes"] > got[2]["nodes"]  # the int8 layer's quantize and rescale nodes are in what was timed
    assert timer(_rec(1, PLAN_INT8))["nodes"] == got[1]["nodes"]


def test_finalists_are_timed_in_rounds_and_their_samples_pooled(timer):
    records = [_rec(1, PLAN), _rec(2, PLAN_INT8), _rec(-1, {})]
    got = timer.together(records, rounds=3)
    for r in records:
        xs = got[r.number]["samples_ms"]
        assert len(xs) >= 3 * BLOCK["min_iters"] // 3  # three blocks of a third each
        assert got[r.number]["latency_p50_ms"] == stats.percentile(xs, 50)
        assert got[r.number]["latency_ms"] == stats.percentile(xs, 95)
    one = timer.together(records[:1], rounds=1)[1]
    assert len(one["samples_ms"]) >= BLOCK["min_iters"]
