"""Per-layer int8: the precision in a plan entry, the artifact quantized on the chosen layers only (its
QuantizeLinear nodes counted per layer, checked against torch), and the knapsack choosing int8 where its
rung is faster and not where it is slower."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.errors import InputError
from edgeopt.search.allocation.knapsack import allocate
from edgeopt.search.allocation.tables import Candidate, Tables

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

INT8 = {"format": "dense", "precision": "int8"}


def _architecture(name: str):
    """A bundled architecture at its real size, untrained (finding layers and quantizing them needs no
    trained weights; ``load_example`` would train the teacher wherever the cache is empty, 20 s each),
    with its example input and a seeded calibration batch."""
    from edgeopt.models import ARCHITECTURES

    torch.manual_seed(0)
    arch = ARCHITECTURES[name]
    model = arch.build().eval()
    calibration = np.random.default_rng(0).standard_normal((32, *arch.input_shape)).astype(np.float32)
    return model, torch.as_tensor(calibration[:1]), calibration


def _cnn():
    from collections import OrderedDict

    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 16, 3, padding=1),
            act1=nn.ReLU(),
            conv2=nn.Conv2d(16, 16, 3, padding=1),
            act2=nn.ReLU(),
            flatten=nn.Flatten(),
            fc1=nn.Linear(16 * 8 * 8, 32),
            act3=nn.ReLU(),
            fc2=nn.Linear(32, 10),
        )
    ).eval()


def test_precision_is_validated_part_of_the_entry_and_of_the_plan_key():
    from edgeopt.compiler.formats import int8_layers, parse_config, short_label, with_precision
    from edgeopt.search.space import plan_key

    assert parse_config({"format": "lowrank", "rank": 4, "precision": "int8"}, layer="fc1").rank == 4
    with pytest.raises(InputError, match=r"plan\['fc1'\].*precision.*'fp32', 'int8'.*'int4'"):
        parse_config({"format": "lowrank", "rank": 4, "precision": "int4"}, layer="fc1")
    plan = {"fc1": {"format": "lowrank", "rank": 4}, "conv1": INT8}
    assert int8_layers(plan) == ["conv1"]
    assert plan_key(plan) != plan_key({**plan, "fc1": with_precision(plan["fc1"], "int8")})
    assert with_precision(INT8, "fp32") == {} and with_precision({}, "int8") == INT8
    assert short_label(with_precision(plan["fc1"], "int8")) == "lr4+int8"


def test_per_layer_int8_plan_exports_with_qdq_only_on_the_chosen_layers(tmp_path):
    from edgeopt.compiler.decompose import decompose
    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import qdq_per_layer, quantize_plan, verify_int8

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 1, 8, 8)).astype(np.float32)
    plan = {"conv2": INT8, "fc1": {"format": "lowrank", "rank": 8, "precision": "int8"}}
    student = decompose(_cnn(), plan).eval()
    fp32 = tmp_path / "m.onnx"
    export_onnx(student, torch.as_tensor(X[:1]), fp32, verify=True, verify_inputs=X[:8])
    q = quantize_plan(fp32, tmp_path / "m.int8.onnx", plan, calibration=X)
    counts = qdq_per_layer(q, ["conv1", "conv2", "fc1", "fc2"])
    assert counts["conv2"] >= 1 and counts["fc1"] >= 2  # fc1 is two nodes at rank 8, both int8
    assert counts["conv1"] == 0 and counts["fc2"] == 0
    check = verify_int8(student, q, X)
    assert check["argmax_agreement"] >= 0.9 and 0 < check["max_abs_diff"] < 1.0
    assert quantize_plan(fp32, tmp_path / "none.onnx", {"fc1": {"format": "lowrank", "rank": 8}}, calibration=X) == fp32


def test_every_layer_of_a_residual_network_is_found_and_quantized_alone(tmp_path):
    """ResNet-8's projection shortcut is a Sequential inside a block: TorchScript scopes its conv
    ``/stack2/shortcut/shortcut.0/Conv``, which no fixed prefix of ``stack2.shortcut.0`` matches."""
    import onnx

    from edgeopt.compiler.analysis import decomposable_layers
    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import layer_nodes, qdq_per_layer, quantize_plan

    model, example, calibration = _architecture("resnet8")
    names = list(decomposable_layers(model, example))
    assert {"stack2.shortcut.0", "stack3.shortcut.0"} <= set(names)
    path = export_onnx(model, example, tmp_path / "r8.onnx", verify=False)
    found = layer_nodes(onnx.load(str(path)), names)
    assert all(len(hit) == 1 for hit in found.values()), found  # one conv (or the classifier's Gemm) each
    assert len({h for hit in found.values() for h in hit}) == len(names)  # and no node claimed twice
    plan = {"stack2.shortcut.0": INT8}
    q = quantize_plan(path, tmp_path / "r8.int8.onnx", plan, calibration=calibration)
    counts = qdq_per_layer(q, names)
    # its input is stack2.conv1's too: that QuantizeLinear may be counted at either consumer
    assert counts["stack2.shortcut.0"] >= 1
    assert sum(n for layer, n in counts.items() if layer not in ("stack2.shortcut.0", "stack2.conv1")) == 0


def test_every_layer_of_a_dynamo_exported_transformer_is_found_and_quantized(tmp_path):
    """The ViT exports through dynamo: no scopes in node names, weights folded into constants; its nodes
    carry the traced module names, and nn.MultiheadAttention's q/k/v are one packed in-projection."""
    import onnx
    import onnxruntime as ort

    from edgeopt.compiler.analysis import decomposable_layers
    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import layer_nodes, quantize_plan

    model, example, calibration = _architecture("vit")
    names = list(decomposable_layers(model, example))
    path = export_onnx(model, example, tmp_path / "vit.onnx", verify=False)
    found = layer_nodes(onnx.load(str(path)), names)
    assert all(len(hit) == 1 for hit in found.values()), {k: v for k, v in found.items() if len(v) != 1}
    q, k = found["encoder.layers.0.self_attn.q_proj"], found["encoder.layers.0.self_attn.k_proj"]
    assert q == k and found["encoder.layers.0.linear1"] != q
    plan = {"encoder.layers.0.self_attn.q_proj": INT8, "encoder.layers.0.linear1": INT8}
    out = quantize_plan(path, tmp_path / "vit.int8.onnx", plan, calibration=calibration)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: calibration[:1]})[0]
    with torch.no_grad():
        assert got.shape[-1] == model(torch.as_tensor(calibration[:1])).shape[-1]


def test_a_layer_named_int8_without_nodes_is_refused(tmp_path):
    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import quantize_layers
    from edgeopt.errors import ModelError

    export_onnx(_cnn(), torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx", verify=False)
    with pytest.raises(ModelError, match="nope"):
        quantize_layers(tmp_path / "m.onnx", tmp_path / "q.onnx", ["nope"], calibration=np.zeros((4, 1, 8, 8)))


def _synthetic(int8_ms: dict[str, float]) -> Tables:
    """Two layers of 1 ms dense, a low-rank rung each, and an int8 rung at ``int8_ms`` of equal sensitivity."""
    rows = {
        name: [
            Candidate("dense", {}, 1000, 1.0, 0.0),
            Candidate("lowrank 4", {"format": "lowrank", "rank": 4}, 200, 0.5, 0.05),
            Candidate("dense int8", INT8, 1000, ms, 0.001),
            Candidate("lowrank 4 int8", {"format": "lowrank", "rank": 4, "precision": "int8"}, 200, ms / 2, 0.051),
        ]
        for name, ms in int8_ms.items()
    }
    return Tables(rows, dense_ms=2.1, rest_ms=0.1, build_s=0.0)


@pytest.mark.parametrize("solver", ["milp", "sweep"])
def test_knapsack_picks_int8_where_its_rung_is_faster_and_not_where_slower(solver):
    t = _synthetic({"vnni_conv": 0.3, "small_conv": 1.5})
    a = allocate(t, latency_ms=1.5, solver=solver)  # both dense is 2.1 ms: one layer must give
    plan = t.plan_of(a.choice)
    assert a.feasible and plan == {"vnni_conv": INT8}
    assert t.latency_of(plan) == pytest.approx(1.4)
    a = allocate(t, latency_ms=0.95, solver=solver)
    plan = t.plan_of(a.choice)
    assert plan["vnni_conv"]["precision"] == "int8" and "precision" not in plan.get("small_conv", {})


def test_int8_rungs_are_on_where_the_targets_isa_runs_int8_well():
    from types import SimpleNamespace

    from edgeopt.runtime.targets import Target
    from edgeopt.search.allocation.build import int8_pays

    def target(*isa):
        return SimpleNamespace(device=SimpleNamespace(isa=isa))

    assert int8_pays(target("avx2", "avx512f", "avx512_vnni")) and int8_pays(target("asimd", "asimddp"))
    assert not int8_pays(target("neon", "asimd")) and not int8_pays(target())
    assert int8_pays(Target.load("rpi5")) and not int8_pays(Target.load("rpi4"))  # A76 dot product; A72 none


def test_fp32_flag_keeps_every_layer_fp32_and_int8_flag_is_only_deprecated():
    from edgeopt.pipeline.config import CompileConfig

    assert CompileConfig(fp32=True).fp32 and not CompileConfig().fp32
    assert CompileConfig(int8=True).int8  # accepted; prepare warns and samples no whole-artifact dtype


def test_a_convolution_is_static_qdq_and_a_linear_layer_dynamic(tmp_path):
    """Static QDQ of a Linear layer ran slower than dynamic int8 (vit: p50 281 µs against 234); a conv's
    QDQ is what a run of int8 layers fuses (dynamic int8 of a conv is ~10x slower than fp32)."""
    import onnx

    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import quantize_layers, static_layer

    model = _cnn()
    assert static_layer(model.conv2) and not static_layer(model.fc1) and static_layer(model)
    X = np.random.default_rng(0).normal(size=(32, 1, 8, 8)).astype(np.float32)
    fp32 = export_onnx(model.eval(), torch.as_tensor(X[:1]), tmp_path / "m.onnx", verify=False)
    q = quantize_layers(fp32, tmp_path / "q.onnx", ["conv2", "fc2"], calibration=X)
    ops = [n.op_type for n in onnx.load(str(q)).graph.node]
    assert "QuantizeLinear" in ops and ops.count("MatMulInteger") == 1 and "ConvInteger" not in ops
