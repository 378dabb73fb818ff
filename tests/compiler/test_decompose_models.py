"""decompose on real model shapes: nesting, BatchNorm, residuals, tied and refused layers."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.compile

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402  (imported after the importorskip guards)
from torch import nn  # noqa: E402  (imported after the importorskip guards)

from edgeopt.compiler.decompose import decomposable_layers, decompose, layer_reports, plan_cost  # noqa: E402  (imported after the importorskip guards)
from edgeopt.compiler.export import export_onnx, onnx_op_counts  # noqa: E402  (imported after the importorskip guards)
from edgeopt.compiler.layers import TTLinear  # noqa: E402  (imported after the importorskip guards)
from edgeopt.errors import InputError, ModelError  # noqa: E402  (imported after the importorskip guards)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn(self.conv(x)))  # residual + functional call


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(Block(8), nn.ModuleDict({"inner": nn.Sequential(Block(8))}).inner)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 12)
        self.shared = nn.Linear(12, 12)
        self.head = nn.Linear(12, 4)
        self.alias = self.shared  # tied: reachable as 'shared' and 'alias'

    def forward(self, x):
        x = self.dw(self.body(self.stem(x)))
        x = F.relu(self.fc(self.pool(x).flatten(1)))
        x = self.alias(F.relu(self.shared(x)))  # the tied layer runs twice
        return self.head(x)


X = (2, 3, 8, 8)


def test_decomposable_layers_lists_what_may_change():
    specs = decomposable_layers(Net(), X)
    assert set(specs) == {"stem", "body.0.conv", "body.1.0.conv", "fc", "shared", "head"}
    conv = specs["body.0.conv"]
    assert conv.kind == "conv2d" and conv.out_positions == 64 and conv.macs == 8 * 8 * 9 * 64
    assert specs["shared"].macs == 2 * 144  # runs twice per sample
    assert "tt" in specs["fc"].formats and specs["fc"].max_rank["lowrank"] >= 1
    json.dumps({k: v.to_dict() for k, v in specs.items()})


def test_nested_batchnorm_residual_tied_and_functional():
    model = Net().eval()
    x = torch.randn(*X)
    plan = {
        "stem": {"format": "tt", "rank": 100},
        "body.1.0.conv": {"format": "lowrank", "rank": 72},
        "fc": {"format": "lowrank", "rank": 8},
        "alias": {"format": "tt", "rank": [1, 100, 1]},
        "head": {"format": "dense"},
    }
    student = decompose(model, plan, example_input=x).eval()
    torch.testing.assert_close(student(x), model(x), rtol=1e-4, atol=1e-5)  # full ranks: same function
    assert isinstance(student.shared, TTLinear) and student.shared is student.alias  # decomposed once, shared
    reports = {r.name: r for r in layer_reports(student)}
    assert set(reports) == {"stem", "body.1.0.conv", "fc", "shared", "head"}
    assert reports["shared"].aliases == ("alias",)
    assert all(r.rel_error < 1e-5 for r in reports.values())
    assert plan_cost(model, plan, x).params == sum(p.numel() for p in student.parameters())
    json.dumps([r.to_dict() for r in reports.values()])
    assert isinstance(model.shared, nn.Linear)  # teacher untouched


def test_student_exports_and_trains():
    model = Net()
    student = decompose(model, {"stem": {"format": "tt", "rank": 2}, "fc": {"format": "tt", "rank": 2}})
    student.train()
    student(torch.randn(*X)).sum().backward()
    assert all(p.grad is not None for p in student.stem.parameters())


@pytest.mark.parametrize(
    "name,match",
    [
        ("dw", "grouped/depthwise"),
        ("body.0.bn", "normalization"),
        ("pool", "not a Linear"),
        ("nope", "not in the model; decomposable layers: body.0.conv"),
    ],
)
def test_layers_left_alone_get_clear_errors(name, match):
    with pytest.raises(ModelError, match=match):
        decompose(Net(), {name: {"format": "lowrank", "rank": 2}})
    with pytest.raises(ModelError, match=match):
        plan_cost(Net(), {name: {"format": "lowrank", "rank": 2}})


def test_embedding_and_rnn_refused():
    model = nn.ModuleDict({"emb": nn.Embedding(10, 8), "rnn": nn.LSTM(8, 8)})
    assert decomposable_layers(model) == {}
    with pytest.raises(ModelError, match="'emb' cannot be decomposed: embeddings"):
        decompose(model, {"emb": {"format": "lowrank", "rank": 2}})
    with pytest.raises(ModelError, match="recurrent"):
        decompose(model, {"rnn": "dense"})


def test_tied_names_with_different_formats_conflict():
    with pytest.raises(ModelError, match="same module as 'shared'"):
        decompose(Net(), {"shared": {"format": "tt", "rank": 2}, "alias": {"format": "lowrank", "rank": 2}})


def test_conv_rejects_modes_and_plan_type_checked():
    with pytest.raises(ModelError, match="^TTConfig, layer 'stem': in_modes: expected"):
        decompose(Net(), {"stem": {"format": "tt", "rank": 2, "in_modes": [3, 1]}})
    with pytest.raises(InputError, match="A plan must be a dict"):
        decompose(Net(), [("fc", "dense")])


@pytest.mark.parametrize("fmt", ["lowrank", "tt"])
@pytest.mark.parametrize("eps", [0.3, 0.05])
def test_tolerance_ranks_bound_the_error(fmt, eps):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(48, 60), nn.Conv1d(4, 6, 3))
    for name in ("0", "1"):
        student = decompose(model, {name: {"format": fmt, "rank": eps}})
        report = layer_reports(student)[0]
        assert report.rel_error <= eps + 1e-9
        assert plan_cost(model, {name: {"format": fmt, "rank": eps}}).exact is False


def test_prime_sizes_pad_and_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(97, 53))
    spec = decomposable_layers(model)["0"]
    assert spec.tt_in_modes is not None and spec.tt_out_modes is not None
    student = decompose(model, {"0": {"format": "tt", "rank": 1000}})
    x = torch.randn(4, 97)
    torch.testing.assert_close(student(x), model(x), rtol=1e-4, atol=1e-5)
    ops = onnx_op_counts(export_onnx(student, x[:1], tmp_path / "p.onnx"))
    assert {"Pad", "Slice"} <= set(ops) and "Shape" not in ops


def test_named_modes_and_three_cores(tmp_path):
    model = nn.Sequential(nn.Linear(64, 60))
    plan = {"0": {"format": "tt", "rank": [1, 4, 4, 1], "in_modes": [4, 4, 4], "out_modes": [3, 4, 5]}}
    student = decompose(model, plan)
    rep = layer_reports(student)[0]
    assert rep.in_modes == (4, 4, 4) and rep.out_modes == (3, 4, 5) and rep.ranks == (1, 4, 4, 1)
    ops = onnx_op_counts(export_onnx(student, torch.randn(1, 64), tmp_path / "m.onnx"))
    assert sum(ops.values()) == 8 and ops["MatMul"] == 3  # one Reshape + one MatMul per core, + Reshape, Add
    with pytest.raises(ModelError, match="product is >= 64"):
        decompose(model, {"0": {"format": "tt", "rank": 2, "in_modes": [4, 4], "out_modes": [6, 10]}})


def test_contraction_order_minimizes_macs():
    from edgeopt.compiler.layers import tt_matrix_macs

    for n, m in [((4, 16), (32, 32)), ((32, 32), (2, 5)), ((8, 8, 8), (4, 4, 4))]:
        layer = TTLinear(1, 1, n, m, (1, *[4] * (len(n) - 1), 1))
        other = "ltr" if layer.order == "rtl" else "rtl"
        assert tt_matrix_macs(n, m, layer.ranks, layer.order) <= tt_matrix_macs(n, m, layer.ranks, other)


@pytest.mark.parametrize("order", ["rtl", "ltr"])
def test_both_sweeps_compute_the_same_layer(order):
    layer = TTLinear(24, 30, (2, 3, 4), (5, 3, 2), (1, 3, 2, 1), order=order)
    w = layer.reconstruct()
    x = torch.randn(5, 24)
    torch.testing.assert_close(layer(x), x @ w.T + layer.bias, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer(x[None]), layer(x)[None])  # extra leading dims


def test_attention_projections_and_direct_weight_reads_are_caught():
    mha = nn.Sequential(nn.MultiheadAttention(8, 2))  # seen as LinearAttention: its projections are plain Linears
    assert set(decomposable_layers(mha)) == {"0.q_proj", "0.k_proj", "0.v_proj", "0.out_proj"}
    assert isinstance(mha[0], nn.MultiheadAttention)  # the model itself is not changed

    class Direct(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            return F.linear(x, self.fc.weight)

    with pytest.raises(ModelError, match="reads a replaced layer's weight directly"):
        decompose(Direct(), {"fc": {"format": "lowrank", "rank": 2}}, example_input=(2, 8))


def test_left_alone_lists_the_weighted_layers_no_plan_may_touch_with_the_reason():
    from edgeopt.compiler.decompose import left_alone

    why = left_alone(Net())
    assert "grouped/depthwise" in why["dw"] and "normalization" in why["body.0.bn"]
    assert "pool" not in why and "" not in why  # no weights of its own: not listed
    assert not set(why) & set(decomposable_layers(Net()))


def test_one_layer_students_match_decompose_and_leave_the_model_alone():
    """The sensitivities' fast path (one copy, each layer swapped in and back out) gives the student
    ``decompose`` gives, on a tied layer and on attention, and restores every layer afterwards."""
    from edgeopt.compiler.decompose import OneLayerStudents

    torch.manual_seed(0)
    net, x = Net().eval(), torch.randn(*X)
    with torch.no_grad():
        before = net(x)
        students = OneLayerStudents(net, x)
        rungs = [
            ("body.0.conv", {"format": "lowrank", "rank": 2}),
            ("fc", {"format": "tt", "rank": 2}),
            ("alias", {"format": "lowrank", "rank": 3}),  # tied: both names swap, both come back
        ]
        for name, entry in rungs:
            assert students.supports(entry)
            with students.replaced(name, entry) as student:
                fast = student(x)
            slow = decompose(net, {name: entry}, example_input=x).eval()(x)
            torch.testing.assert_close(fast, slow)
            assert not torch.allclose(fast, before)  # the swap was real
            torch.testing.assert_close(students.base(x), before)  # and undone
        assert not students.supports({"format": "prune", "rank": 4})
        with pytest.raises(ValueError, match="graph-level"), students.replaced("fc", {"format": "prune", "rank": 4}):
            pass
        torch.testing.assert_close(net(x), before)

    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.head = mha, nn.Linear(8, 3)

        def forward(self, t):
            return self.head(self.attn(t, t, t, need_weights=False)[0].mean(1))

    model, t = Attn().eval(), torch.randn(2, 5, 8)
    with torch.no_grad():
        students = OneLayerStudents(model, t)
        entry = {"format": "lowrank", "rank": 2}
        with students.replaced("attn.q_proj", entry) as student:
            fast = student(t)
        torch.testing.assert_close(fast, decompose(model, {"attn.q_proj": entry}, example_input=t).eval()(t))
