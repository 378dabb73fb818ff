from __future__ import annotations

import pytest

pytestmark = pytest.mark.compile

torch = pytest.importorskip("torch")
import numpy as np  # noqa: E402  (imported after the importorskip guards)
from torch import nn  # noqa: E402  (imported after the importorskip guards)
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402  (imported after the importorskip guards)

from edgeopt.compiler.data import to_arrays  # noqa: E402  (imported after the importorskip guards)
from edgeopt.compiler.decompose import decompose  # noqa: E402  (imported after the importorskip guards)
from edgeopt.compiler.distill import distill  # noqa: E402  (imported after the importorskip guards)
from edgeopt.compiler.metrics import compute_metrics  # noqa: E402  (imported after the importorskip guards)
from edgeopt.compiler.train import evaluate, train  # noqa: E402  (imported after the importorskip guards)
from edgeopt.errors import InputError  # noqa: E402  (imported after the importorskip guards)


def test_metrics_all_together_and_averaging():
    y, p = [0, 0, 0, 0, 1, 2], [0, 0, 0, 0, 2, 2]
    m = compute_metrics(y, p)
    assert m.metric == "f1_macro" and m.score == m.f1 and m.accuracy == pytest.approx(5 / 6)
    assert m.confusion == ((4, 0, 0), (0, 0, 1), (0, 0, 1))
    assert set(m.to_dict()) >= {"f1", "precision", "recall", "accuracy", "confusion"}
    assert compute_metrics(y, p, "f1_micro").f1 == pytest.approx(5 / 6)
    assert compute_metrics(y, p, "accuracy").score == pytest.approx(5 / 6)
    assert compute_metrics(y, p, "accuracy").f1 == m.f1  # macro alongside
    b = compute_metrics([0, 1, 1, 0], [0, 1, 0, 0], "f1")
    assert b.f1 == pytest.approx(2 / 3) and b.average == "binary"
    c = compute_metrics(y, p, lambda t, q: 0.25)
    assert c.score == 0.25 and c.f1 == m.f1
    with pytest.raises(InputError, match="'metric' parameter"):
        compute_metrics(y, p, "auc")
    with pytest.raises(InputError, match="binary"):
        compute_metrics(y, p, "f1")


def test_data_forms_agree():
    X = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float64)
    y = np.arange(10) % 2
    ds = TensorDataset(torch.from_numpy(X).float(), torch.from_numpy(y))
    for data in [(X, y), (torch.from_numpy(X), torch.from_numpy(y)), ds, DataLoader(ds, batch_size=3)]:
        Xa, ya = to_arrays(data)
        assert Xa.dtype == np.float32 and ya.dtype == np.int64
        np.testing.assert_allclose(Xa, X.astype(np.float32))
        np.testing.assert_array_equal(ya, y)
    with pytest.raises(InputError, match="3 samples but y has 2"):
        to_arrays((X[:3], y[:2]))


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, 16)).astype(np.float32) + np.eye(3, 16, dtype=np.float32)[y] * 2.5
    return X, y


@pytest.fixture(scope="module")
def task():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    tr, va = _blobs(300, 1), _blobs(100, 2)
    train(teacher, tr, va, epochs=15, seed=0)
    return teacher, tr, va


@pytest.mark.slow
def test_distill_recovers_and_is_deterministic(task):
    teacher, tr, va = task
    plan = {"2": {"format": "lowrank", "rank": 2}, "0": {"format": "tt", "rank": 2}}
    scores, weights = [], []
    for _ in range(2):
        student = decompose(teacher, plan)
        scores.append(distill(student, teacher, tr, va, epochs=6, seed=3))
        weights.append([p.detach().clone() for p in student.parameters()])
    assert scores[0] == scores[1]
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    assert evaluate(student, va).f1 == pytest.approx(scores[1])  # ends with best weights
    assert scores[0] >= evaluate(teacher, va).f1 - 0.05


@pytest.mark.slow
def test_callback_sees_each_epoch_and_its_exception_propagates(task):
    teacher, tr, va = task
    student = decompose(teacher, {"2": {"format": "lowrank", "rank": 1}})
    seen = []

    class Pruned(Exception):
        pass

    def cb(epoch, score):
        seen.append((epoch, score))
        if epoch == 2:
            raise Pruned

    with pytest.raises(Pruned):
        distill(student, teacher, tr, va, epochs=10, callback=cb)
    assert [e for e, _ in seen] == [0, 1, 2]
    assert evaluate(student, va).f1 == pytest.approx(max(s for _, s in seen))


def test_distill_validates_options(task):
    teacher, tr, va = task
    with pytest.raises(InputError, match=r"^distill\(\): alpha: expected a number in \[0, 1\], found an integer 2$"):
        distill(teacher, teacher, tr, va, alpha=2)
    with pytest.raises(InputError, match=r"^distill\(\): epochs: expected an integer >= 1"):
        distill(teacher, teacher, tr, va, epochs=0)


def test_cosine_schedule_keeps_last_weights_when_asked():
    """restore_best=False ends on the last epoch's weights (no early stop, no re-selection on val)."""
    import copy

    import numpy as np
    import torch

    from edgeopt.compiler.distill import distill
    from edgeopt.errors import InputError

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    teacher = torch.nn.Sequential(torch.nn.Linear(6, 2))
    seen = []
    student = copy.deepcopy(teacher)
    distill(
        student,
        teacher,
        (X, y),
        (X, y),
        epochs=5,
        patience=1,
        schedule="cosine",
        restore_best=False,
        callback=lambda e, s: seen.append(e),
    )
    assert seen == [0, 1, 2, 3, 4]  # patience does not stop it
    with pytest.raises(InputError, match=r"^distill\(\): schedule: expected one of 'constant', 'cosine'"):
        distill(copy.deepcopy(teacher), teacher, (X, y), (X, y), epochs=1, schedule="step")
