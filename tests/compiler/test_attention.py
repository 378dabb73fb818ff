"""Attention made decomposable: LinearAttention equals nn.MultiheadAttention, swaps cleanly, exports."""

from __future__ import annotations

import copy

import pytest

pytestmark = pytest.mark.compile

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from torch import nn  # noqa: E402

from edgeopt.compiler.attention import LinearAttention, attention_refusal, swap_attention  # noqa: E402
from edgeopt.compiler.decompose import decomposable_layers, decompose  # noqa: E402
from edgeopt.compiler.export import export_onnx_info  # noqa: E402
from edgeopt.errors import ModelError  # noqa: E402

TOL = 1e-5


def _close(a, b, tol=TOL):
    return float((a - b).abs().max()) <= tol


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_attention_equals_mha(batch_first, bias):
    mha = nn.MultiheadAttention(32, 4, bias=bias, batch_first=batch_first).eval()
    lin = LinearAttention.from_mha(mha).eval()
    b, length = 3, 7
    x = torch.randn(b, length, 32) if batch_first else torch.randn(length, b, 32)
    kpm = torch.zeros(b, length, dtype=torch.bool)
    kpm[:, -2:] = True
    causal = torch.ones(length, length, dtype=torch.bool).triu(1)
    for kw in (
        {},
        {"need_weights": False},
        {"key_padding_mask": kpm},
        {"attn_mask": torch.randn(length, length)},
        {"attn_mask": causal, "is_causal": True},
        {"average_attn_weights": False},
    ):
        ref, got = mha(x, x, x, **kw), lin(x, x, x, **kw)
        assert _close(ref[0], got[0]), kw
        assert (ref[1] is None) == (got[1] is None)
        if ref[1] is not None:
            assert _close(ref[1], got[1]), kw


def test_cross_attention_with_kdim_vdim_and_unbatched():
    mha = nn.MultiheadAttention(32, 4, kdim=16, vdim=24, batch_first=True).eval()
    lin = LinearAttention.from_mha(mha).eval()
    q, k, v = torch.randn(2, 5, 32), torch.randn(2, 6, 16), torch.randn(2, 6, 24)
    assert _close(mha(q, k, v)[0], lin(q, k, v)[0])
    mha = nn.MultiheadAttention(32, 4).eval()
    x = torch.randn(5, 32)
    assert _close(mha(x, x, x)[0], LinearAttention.from_mha(mha).eval()(x, x, x)[0])


def test_unsupported_configs_are_left_alone_with_a_reason():
    model = nn.Sequential()
    model.add_module("attn", nn.MultiheadAttention(16, 2, add_bias_kv=True))
    assert attention_refusal(model.attn) is not None
    refused = swap_attention(model)
    assert "add_bias_kv" in refused["attn"] and isinstance(model.attn, nn.MultiheadAttention)


def _encoder(batch_first: bool, norm_first: bool, width: int = 32) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=batch_first and not norm_first).eval()


@pytest.mark.parametrize("batch_first,norm_first", [(True, False), (True, True), (False, False)])
def test_swap_inside_transformer_encoder(batch_first, norm_first):
    """The teacher (eval) takes torch's fused fast path, the swapped copy the plain one: same outputs."""
    enc = _encoder(batch_first, norm_first)
    swapped = copy.deepcopy(enc)
    assert swap_attention(swapped) == {}
    assert all(isinstance(layer.self_attn, LinearAttention) for layer in swapped.layers)
    assert all(isinstance(layer.self_attn, nn.MultiheadAttention) for layer in enc.layers)  # teacher untouched
    x = torch.randn(3, 7, 32) if batch_first else torch.randn(7, 3, 32)
    kpm = torch.zeros(3, 7, dtype=torch.bool)
    kpm[:, -1] = True
    with torch.no_grad():
        assert _close(enc(x), swapped(x))
        # torch's nested-tensor fast path returns zeros at padded positions; the real positions agree
        ref, got = enc(x, src_key_padding_mask=kpm), swapped(x, src_key_padding_mask=kpm)
        keep = (slice(None), slice(0, 6)) if batch_first else (slice(0, 6), slice(None))
        assert _close(ref[keep], got[keep])
    swapped.train()
    swapped(x).sum().backward()  # trainable, gradients reach every projection
    assert all(layer.self_attn.q_proj.weight.grad is not None for layer in swapped.layers)


def test_vit_projections_become_decomposable_and_export(tmp_path):
    """decomposable_layers and decompose see the teacher's MHA as LinearAttention; the teacher is not changed."""
    from edgeopt.models.vit import vit

    model = vit(num_classes=4, width=16, depth=2, heads=2, image_size=8, patch=4).eval()
    specs = decomposable_layers(model, (1, 3, 8, 8))
    names = {f"encoder.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in ("q", "k", "v", "out")}
    assert names <= set(specs)
    assert all(isinstance(layer.self_attn, nn.MultiheadAttention) for layer in model.encoder.layers)
    x = torch.randn(2, 3, 8, 8)
    dense_copy = decompose(model, {})
    with torch.no_grad():
        assert _close(model(x), dense_copy(x))
    plan = {
        "encoder.layers.0.self_attn.q_proj": {"format": "lowrank", "rank": 4},
        "encoder.layers.1.self_attn.out_proj": {"format": "tt", "rank": 2},
        "encoder.layers.0.linear1": {"format": "lowrank", "rank": 4},
    }
    student = decompose(model, plan, example_input=(1, 3, 8, 8))
    assert isinstance(model.encoder.layers[0].self_attn, nn.MultiheadAttention)  # the teacher is untouched
    assert isinstance(student.encoder.layers[0].self_attn, LinearAttention)
    info = export_onnx_info(student, torch.randn(1, 3, 8, 8), tmp_path / "vit.onnx", exporter="auto")
    assert info.exporter == "torchscript"  # the plain attention needs no fallback
    assert info.max_rel_deviation is not None and info.max_rel_deviation < 1e-4
    onnx.checker.check_model(onnx.load(str(info.path)), full_check=True)


def test_unswappable_attention_is_refused_with_its_reason():
    model = nn.Sequential()
    model.add_module("attn", nn.MultiheadAttention(16, 2, add_bias_kv=True))
    assert not any(n.startswith("attn") for n in decomposable_layers(model))
    with pytest.raises(ModelError, match="add_bias_kv"):
        decompose(model, {"attn.out_proj": {"format": "lowrank", "rank": 2}})


@pytest.mark.slow
def test_swapped_vit_exports_with_dynamo(tmp_path):
    from edgeopt.models.vit import vit

    model = vit(num_classes=4, width=16, depth=1, heads=2, image_size=8, patch=4).eval()
    swap_attention(model)
    info = export_onnx_info(model, torch.randn(1, 3, 8, 8), tmp_path / "vit.onnx", exporter="dynamo")
    assert info.exporter == "dynamo" and info.max_rel_deviation < 1e-4


class _PlainAttention(nn.Module):
    """Attention written with a q/k/v Linear trio (as many codebases do): already decomposable."""

    def __init__(self, width: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        self.head = nn.Linear(width, classes)
        self.width = width

    def forward(self, x):  # (B, T, width)
        scores = (self.q(x) @ self.k(x).transpose(1, 2)) / self.width**0.5
        return self.head(self.proj(scores.softmax(-1) @ self.v(x)).mean(1))


def test_attention_written_with_plain_linears_is_decomposable(tmp_path):
    model = _PlainAttention().eval()
    specs = decomposable_layers(model, (1, 5, 16))
    assert {"q", "k", "v", "proj"} <= set(specs)
    student = decompose(model, {n: {"format": "lowrank", "rank": 4} for n in ("q", "k", "v", "proj")})
    info = export_onnx_info(student, torch.randn(1, 5, 16), tmp_path / "plain.onnx")
    assert info.max_rel_deviation < 1e-4


@pytest.mark.slow
def test_torchscript_failure_falls_back_in_one_line(tmp_path, capfd, caplog):
    """The teacher's MHA fast path is not TorchScript-exportable: dynamo takes over, with no IR dump."""
    import logging

    from edgeopt.models.vit import vit

    model = vit(num_classes=4, width=16, depth=1, heads=2, image_size=8, patch=4).eval()
    with caplog.at_level(logging.INFO, logger="edgeopt.export"):
        info = export_onnx_info(model, torch.randn(1, 3, 8, 8), tmp_path / "mha.onnx")
    out, err = capfd.readouterr()
    assert info.exporter == "dynamo"
    assert "Torch IR graph" not in out + err and len((out + err).splitlines()) <= 2
    lines = [r.getMessage() for r in caplog.records if r.name == "edgeopt.export"]
    assert len(lines) == 1 and "used the dynamo exporter" in lines[0]
    assert not torch._C._jit_is_onnx_log_enabled()  # torch's leaked logging switch is restored
