"""The contract every registered format passes, for every layer kind it supports.

A new format registered with ``register_format`` is picked up here automatically.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.compile

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edgeopt.compiler.decompose import decomposable_layers, decompose, layer_reports, plan_cost  # noqa: E402
from edgeopt.compiler.export import export_onnx, onnx_op_counts  # noqa: E402
from edgeopt.compiler.formats import get_handler, registered_formats  # noqa: E402

LAYERS = {
    "linear": (lambda: nn.Linear(24, 36), (3, 24)),
    "conv1d": (lambda: nn.Conv1d(6, 10, 3, padding=1), (3, 6, 16)),
    "conv2d": (lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1), (3, 6, 9, 9)),
}
CASES = [(fmt, kind) for fmt in registered_formats() for kind in LAYERS if kind in get_handler(fmt).kinds]
# every format's nodes per layer: the forward is meant to stay this small
MAX_NODES = {"dense": 1, "lowrank": 3, "tt": 6}


def _model(kind):
    make, shape = LAYERS[kind]
    torch.manual_seed(0)
    return nn.Sequential(make()), torch.randn(*shape)


def _max_bond(model, x, fmt):
    spec = decomposable_layers(model, x)["0"]
    cost = get_handler(fmt).cost(spec, get_handler(fmt).config_cls.from_dict({"ranks": 10_000}) if fmt != "dense"
                                 else get_handler(fmt).config_cls())
    return max(cost.ranks) if cost.ranks else None


def _plan(fmt, rank):
    return {"0": {"format": fmt} if fmt == "dense" else {"format": fmt, "rank": rank}}


@pytest.mark.parametrize("fmt,kind", CASES)
def test_shape_preserved_and_teacher_untouched(fmt, kind):
    model, x = _model(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    student = decompose(model, _plan(fmt, 2))
    assert student(x).shape == model(x).shape
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("fmt,kind", [c for c in CASES if c[0] != "dense"])
def test_error_non_increasing_in_rank_and_full_rank_exact(fmt, kind):
    model, x = _model(kind)
    top = _max_bond(model, x, fmt)
    errors = [layer_reports(decompose(model, _plan(fmt, r)))[0].rel_error for r in range(1, top + 1)]
    assert all(b <= a + 1e-9 for a, b in zip(errors, errors[1:])), errors
    full = decompose(model, _plan(fmt, top))
    assert errors[-1] < 1e-5
    torch.testing.assert_close(full(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt,kind", CASES)
@pytest.mark.parametrize("rank", [1, 3])
def test_params_equal_formula_and_plan_cost(fmt, kind, rank):
    model, x = _model(kind)
    plan = _plan(fmt, rank)
    student = decompose(model, plan, example_input=x)
    counted = sum(p.numel() for p in student.parameters())
    report = layer_reports(student)[0]
    assert report.params == counted
    cost = plan_cost(model, plan, x)
    assert cost.params == counted and cost.size_bytes == 4 * counted
    assert cost.macs == report.macs
    layer = student[0]
    w = model[0].weight
    out_size, in_size, k = w.shape[0], w.shape[1], w[0, 0].numel()
    bias = out_size
    if fmt == "lowrank":
        r = report.ranks[1]
        assert counted == r * (in_size * k + out_size) + bias
    elif fmt == "tt" and kind == "linear":
        rk, n, m = report.ranks, report.in_modes, report.out_modes
        assert counted == sum(rk[i] * n[i] * m[i] * rk[i + 1] for i in range(len(n))) + bias
        assert layer.reconstruct().shape == w.shape
    elif fmt == "tt":
        _, r1, r2, _ = report.ranks
        assert counted == in_size * r1 + r1 * k * r2 + r2 * out_size + bias


@pytest.mark.parametrize("fmt,kind", CASES)
def test_onnx_round_trip_no_einsum(fmt, kind, tmp_path):
    model, x = _model(kind)
    student = decompose(model, _plan(fmt, 3))
    path = export_onnx(student, x[:1], tmp_path / "m.onnx", verify_inputs=x)
    ops = onnx_op_counts(path)
    assert "Einsum" not in ops
    assert not {"Shape", "Gather", "Concat"} & set(ops), ops  # static shapes except batch
    assert sum(ops.values()) <= MAX_NODES[fmt], ops
