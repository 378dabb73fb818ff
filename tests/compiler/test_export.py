from __future__ import annotations

import pytest

pytestmark = pytest.mark.compile

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
import numpy as np  # noqa: E402  (imported after the importorskip guards)
import onnxruntime as ort  # noqa: E402  (imported after the importorskip guards)
from torch import nn  # noqa: E402  (imported after the importorskip guards)

from edgeopt._version import __version__  # noqa: E402  (imported after the importorskip guards)
from edgeopt.compiler.decompose import decompose  # noqa: E402  (imported after the importorskip guards)
from edgeopt.compiler.export import export_onnx, export_onnx_info, onnx_node_count  # noqa: E402  (imported after the importorskip guards)
from edgeopt.errors import InputError, ModelError  # noqa: E402  (imported after the importorskip guards)


def _mlp():
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def test_metadata_dynamic_batch_and_atomic_write(tmp_path):
    model = decompose(_mlp(), {"0": {"format": "tt", "rank": 4}, "2": {"format": "lowrank", "rank": 8}})
    info = export_onnx_info(
        model,
        torch.randn(1, 16),
        tmp_path / "sub" / "m.onnx",
        metadata={"plan": {"2": {"format": "lowrank", "rank": 8}}, "target": "rpi4"},
    )
    path = info.path
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["edgeopt_version"] == __version__ and props["target"] == "rpi4" and '"rank": 8' in props["plan"]
    assert proto.opset_import[0].version == 18
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["m.onnx"]  # no temporary left
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((7, 16)).astype(np.float32)
    ref = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], ref, rtol=1e-4, atol=1e-5)
    # TT layer (2 cores) = 6 nodes, lowrank = 2, dense head 1, 2 ReLU
    assert onnx_node_count(path) == 11 == info.nodes and info.exporter == "torchscript"
    assert info.max_rel_deviation is not None and info.max_rel_deviation <= 1e-4


def test_conv_model_round_trip(tmp_path):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 5)
    )
    student = decompose(model, {"0": {"format": "tt", "rank": 4}})
    export_onnx(student, torch.randn(2, 3, 6, 6), tmp_path / "c.onnx", verify_inputs=torch.randn(4, 3, 6, 6))


@pytest.mark.slow
def test_dynamo_exporter_also_verifies(tmp_path):
    model = decompose(_mlp(), {"2": {"format": "tt", "rank": 4}})
    info = export_onnx_info(model, torch.randn(1, 16), tmp_path / "d.onnx", exporter="dynamo")
    assert info.exporter == "dynamo" and info.path == tmp_path / "d.onnx"


class Unexportable(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4), Bad())

    def forward(self, x):
        return self.inner(x)


class Bad(nn.Module):
    def forward(self, x):
        return torch.special.i0e(x)  # no ONNX translation in either exporter


def test_mismatch_or_failure_is_a_model_error_and_writes_nothing(tmp_path):
    with pytest.raises(ModelError, match="ONNX export of Unexportable failed.*special_i0e"):
        export_onnx(Unexportable(), torch.randn(1, 4), tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments():
    with pytest.raises(InputError, match=r"^export_onnx\(\): opset: expected an integer >= 17, found an integer 13$"):
        export_onnx(_mlp(), torch.randn(1, 16), "x.onnx", opset=13)
    with pytest.raises(InputError, match=r"^export_onnx\(\): example_input: expected a tensor"):
        export_onnx(_mlp(), "nope", "x.onnx")
