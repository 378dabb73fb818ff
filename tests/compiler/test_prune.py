"""The ``prune`` format (issue 16): channels removed for real through torch-pruning's dependency
graph, on the repository's real architectures, exported and checked in onnxruntime against torch."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from torch import nn  # noqa: E402  (after the importorskip guards)

from edgeopt.compiler.decompose import decompose, layer_reports, plan_cost  # noqa: E402
from edgeopt.errors import ModelError  # noqa: E402


def _arch(name):
    from edgeopt.models import ARCHITECTURES

    a = ARCHITECTURES[name]
    torch.manual_seed(0)
    return a.build().eval(), torch.randn(4, *a.input_shape)


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.slow
def test_resnet8_residual_group_is_pruned_together_and_exports(tmp_path):
    from edgeopt.compiler.export import export_onnx

    model, x = _arch("resnet8")
    plan = {"stack2.conv2": {"format": "prune", "rank": 16}, "stack3.conv1": {"format": "lowrank", "rank": 8}}
    student = decompose(model, plan, example_input=x).eval()
    assert student(x).shape == model(x).shape
    # stack2's residual: conv2, the shortcut and the BatchNorms after them lose the same channels
    assert student.get_submodule("stack2.conv2").out_channels == 16
    assert student.get_submodule("stack2.shortcut.0").out_channels == 16
    assert (
        student.get_submodule("stack3.conv1").first.in_channels == 16
    )  # the low-rank layer built on the narrower input
    assert _params(student) < _params(model) and _params(model) == 78042  # the teacher is untouched
    reports = {r.name: r for r in layer_reports(student)}
    assert reports["stack2.conv2"].format == "prune" and reports["stack2.conv2"].ranks == (1, 16, 1)
    assert 0 < reports["stack2.conv2"].rel_error < 1
    export_onnx(student, x[:1], tmp_path / "r.onnx", verify=True, verify_inputs=x)  # onnx.checker + ORT vs torch


@pytest.mark.slow
def test_mobilenet_pruning_reaches_the_depthwise_conv_and_batchnorm():
    model, x = _arch("mobilenet")
    name = "features.3.block.0.0"  # the expansion 1x1 conv in front of a depthwise conv
    dense_dw = model.get_submodule("features.3.block.1.0")
    assert dense_dw.groups == dense_dw.out_channels > 48
    student = decompose(model, {name: {"format": "prune", "rank": 48}}, example_input=x).eval()
    dw = student.get_submodule("features.3.block.1.0")
    assert dw.groups == dw.in_channels == dw.out_channels == 48  # decomposition never reaches this layer
    assert student.get_submodule("features.3.block.0.1").num_features == 48  # its BatchNorm
    assert student.get_submodule("features.3.block.2.0").in_channels == 48  # the projection reads 48
    assert student(x).shape == model(x).shape


def test_vit_mlp_prunes_and_attention_and_classifier_are_refused():
    model, x = _arch("vit")
    student = decompose(model, {"encoder.layers.0.linear1": {"format": "prune", "rank": 128}}, example_input=x).eval()
    assert student.get_submodule("encoder.layers.0.linear1").out_features == 128
    assert student.get_submodule("encoder.layers.0.linear2").in_features == 128
    assert student(x).shape == model(x).shape
    with pytest.raises(ModelError, match="encoder.layers.0.self_attn.q_proj"):
        decompose(model, {"encoder.layers.0.self_attn.q_proj": {"format": "prune", "rank": 64}}, example_input=x)
    with pytest.raises(ModelError, match=r"'head'\]: pruning changes the model's output shape"):
        decompose(model, {"head": {"format": "prune", "rank": 5}}, example_input=x)


def test_the_channels_kept_are_the_largest_by_group_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        scale = torch.tensor([1.0, 9.0, 2.0, 8.0, 3.0, 7.0])
        model[0].weight.copy_(torch.ones(6, 4) * scale[:, None])
        model[0].bias.zero_()
        model[2].weight.fill_(0.1)
    x = torch.randn(3, 4)
    student = decompose(model, {"0": {"format": "prune", "rank": 3}}, example_input=x)
    kept = sorted(student[0].weight[:, 0].tolist())
    assert kept == [7.0, 8.0, 9.0]
    assert student[2].weight.shape == (2, 3)
    cost = plan_cost(model, {"0": {"format": "prune", "rank": 3}}, x)
    assert not cost.exact and cost.layers["0"].params == 3 * 4 + 3


def test_bad_prune_entries_are_one_line_errors():
    from edgeopt.errors import InputError

    model, x = _arch("cnn1d")
    with pytest.raises(ModelError, match="needs an example input"):
        decompose(model, {"features.0.0": {"format": "prune", "rank": 4}})
    with pytest.raises(InputError, match=r"rank: expected an int >= 1 \(output channels kept\), found"):
        decompose(model, {"features.0.0": {"format": "prune", "rank": 0.5}}, example_input=x)


def test_decompose_sets_no_attribute_on_torch_modules():
    """Reports live beside the modules (a weak side table), not on them: a student pickles as plain torch."""
    model, x = _arch("cnn1d")
    student = decompose(model, {"features.1.0": {"format": "prune", "rank": 8}}, example_input=x)
    assert student.get_submodule("features.1.0").out_channels == 8
    assert [r.name for r in layer_reports(student)] == ["features.1.0"]
    for m in (model, *model.modules(), student, *student.modules()):
        assert not [k for k in vars(m) if k.startswith("edgeopt")], type(m).__name__


def test_only_the_allocation_offers_prune_by_default():
    """The per-layer search space cannot price a graph-level format, so it offers prune only when asked."""
    from edgeopt.compiler.decompose import decomposable_layers
    from edgeopt.search.space import SearchSpace

    model, x = _arch("cnn1d")
    layers = decomposable_layers(model, x)
    assert all("prune" in spec.formats for spec in layers.values())
    assert not any("prune" in c.formats for c in SearchSpace(layers).choices)
    assert all("prune" in c.formats for c in SearchSpace(layers, formats=["prune"]).choices)


def test_the_prune_rungs_are_finest_at_the_narrow_end():
    """cnn1d's 64-channel convs offer 12 kept channels between 8 and 16 (the user's uniform 0.8 kept 12 and
    beat every plan the 8-or-16 rungs allowed at 1/3 of its dense p95, decision 0118); wider counts stay
    multiples of 8, layers under 32 channels take any count."""
    from edgeopt.compiler.decompose import decomposable_layers
    from edgeopt.compiler.formats import get_handler

    model, x = _arch("cnn1d")
    layers = decomposable_layers(model, x)
    ranks = {name: get_handler("prune").search_ranks(spec) for name, spec in layers.items()}
    assert ranks["features.1.0"] == [8, 12, 16, 24, 32, 40, 48, 56]  # 64 channels
    assert ranks["features.3.0"] == [16, 24, 32, 48, 64, 80, 96, 112]  # 128
    assert ranks["features.0.0"][:3] == [4, 8, 12]  # 32
