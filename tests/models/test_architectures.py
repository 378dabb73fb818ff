"""The bundled architectures: each builds, learns its offline data, decomposes non-trivially, exports verified."""

from __future__ import annotations

import copy

import pytest

pytestmark = [pytest.mark.compile, pytest.mark.slow]  # compiles or trains for tens of seconds a test

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
import numpy as np  # noqa: E402

from edgeopt.compiler.attention import swap_attention  # noqa: E402
from edgeopt.compiler.decompose import _analyze, decompose, layer_reports  # noqa: E402
from edgeopt.compiler.export import export_onnx_info  # noqa: E402
from edgeopt.compiler.train import evaluate, fit  # noqa: E402


def _tiny(name):
    """(model at a tiny width, one sample's shape)."""
    if name == "resnet8":
        from edgeopt.models.resnet8 import resnet8

        return resnet8(width=0.5), (3, 16, 16)
    if name == "mobilenet":
        from edgeopt.models.mobilenet import MobileNet

        # fewer, wider blocks than the real one: at width 0.25 the 19-block network learns nothing in a few epochs
        return MobileNet(width=0.75, last=128, blocks=((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2))), (3, 16, 16)
    if name == "vit":
        from edgeopt.models.vit import vit

        return vit(width=32, depth=2, heads=2, image_size=16, patch=4), (3, 16, 16)
    from edgeopt.models.cnn1d import cnn1d

    return cnn1d(width=0.5), (1, 64)


@pytest.fixture(scope="module")
def digits16():
    from edgeopt.models.data import digits32

    return digits32(seed=0, size=16)


@pytest.fixture(scope="module")
def signals():
    from edgeopt.models.data import signals1d

    return signals1d(1500, length=64)


NAMES = ["resnet8", "mobilenet", "vit", "cnn1d"]


def test_real_sizes_match_their_descriptions():
    from edgeopt.models import ARCHITECTURES

    params = {n: sum(p.numel() for p in a.build().parameters()) for n, a in ARCHITECTURES.items()}
    assert params["resnet8"] == 78_042  # MLPerf Tiny's ResNet-8 has 78K
    assert 0.9e6 < params["mobilenet"] < 1.2e6
    assert 0.5e6 < params["vit"] < 0.6e6
    mob = _analyze(ARCHITECTURES["mobilenet"].build(), (1, 3, 32, 32))
    assert len(mob.specs) == 40
    depthwise = [n for n, why in mob.refused.items() if "grouped/depthwise" in why]
    assert len(depthwise) == 19  # the 3x3 depthwise convs stay dense, with the reason


def test_datasets_are_deterministic_and_shaped():
    from edgeopt.models.data import digits32, signals1d

    a, b = digits32(seed=0, size=16), digits32(seed=0, size=16)
    assert a[0][0].shape[1:] == (3, 16, 16) and a[0][0].dtype == np.float32 and a[0][1].dtype == np.int64
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    s = signals1d(200, length=40)
    assert s[0][0].shape[1:] == (1, 40) and sorted(set(s[0][1])) == list(range(10))
    assert np.array_equal(s[2][0], signals1d(200, length=40)[2][0])


@pytest.mark.parametrize("name", NAMES)
def test_trains_beats_chance_decomposes_and_exports(name, digits16, signals, tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, shape = _tiny(name)
    train, val, test = signals if name == "cnn1d" else digits16
    # a transformer from scratch needs more steps; the 1-D task is harder than the digits
    epochs, lr = {"vit": (15, 2e-3), "cnn1d": (10, 3e-3)}.get(name, (4, 3e-3))
    fit(model, train, val, epochs=epochs, lr=lr, alpha=1.0, patience=epochs, owner="train")
    f1 = evaluate(model, test).score
    assert f1 > 0.3, f"{name}: test macro-F1 {f1:.3f} (chance is 0.1)"

    work = copy.deepcopy(model)
    swap_attention(work)
    analysis = _analyze(work, (1, *shape))
    assert len(analysis.specs) >= 4
    names = sorted(analysis.specs)
    plan = {}
    for i, n in enumerate(names):
        spec = analysis.specs[n]
        fmt = "lowrank" if i % 2 == 0 and "lowrank" in spec.formats else "tt" if "tt" in spec.formats else None
        if fmt:
            plan[n] = {"format": fmt, "rank": max(1, spec.max_rank[fmt] // 2)}
    assert len(plan) >= 3, f"{name}: a non-trivial plan needs several layers, got {plan}"
    student = decompose(work, plan, example_input=(1, *shape))
    assert len(layer_reports(student)) == len(plan)
    info = export_onnx_info(
        student, torch.as_tensor(test[0][:1]), tmp_path / f"{name}.onnx", verify_inputs=torch.as_tensor(test[0][:8])
    )
    onnx.checker.check_model(onnx.load(str(info.path)), full_check=True)
    assert info.max_rel_deviation is not None and info.max_rel_deviation < 1e-4
    assert info.exporter == "torchscript", f"{name}: needed the dynamo fallback"
