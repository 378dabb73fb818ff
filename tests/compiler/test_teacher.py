"""Teacher logits once per (weights, data), batched; train_device resolution."""

from __future__ import annotations

import copy

import pytest

pytestmark = pytest.mark.compile

torch = pytest.importorskip("torch")
import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from edgeopt.compiler.distill import distill  # noqa: E402
from edgeopt.compiler.teacher import TeacherCache, batched_logits, resolve_device, teacher_logits  # noqa: E402
from edgeopt.errors import InputError  # noqa: E402


class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.calls, self.largest = 0, 0

    def forward(self, x):
        self.calls += 1
        self.largest = max(self.largest, len(x))
        return self.fc(x)


def test_logits_are_computed_once_in_batches_and_reused():
    teacher = _Counting()
    X = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    cache = TeacherCache(batch_size=32)
    a = cache.get(teacher, X)
    assert teacher.calls == 4 and teacher.largest == 32 and a.device.type == "cpu" and a.dtype == torch.float32
    b = cache.get(copy.deepcopy(teacher), X.copy())  # same weights, same data: a hit
    assert cache.hits == 1 and cache.misses == 1 and torch.equal(a, b)
    with torch.no_grad():
        teacher.fc.bias.add_(1.0)
    cache.get(teacher, X)  # changed weights: computed again
    assert cache.misses == 2
    torch.testing.assert_close(a, teacher.fc(torch.from_numpy(X)).detach() - 1.0)


def test_distill_reuses_the_teachers_logits():
    torch.manual_seed(0)
    teacher = _Counting()
    X = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    teacher_logits(teacher, X)
    before = teacher.calls
    for _ in range(2):
        distill(nn.Linear(8, 3), teacher, (X, y), (X, y), epochs=1, train_device="cpu")
    assert teacher.calls == before  # both students used the cached logits


def test_train_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="train_device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            resolve_device("cuda")
    assert batched_logits(nn.Linear(8, 2), np.zeros((5, 8), np.float32), batch_size=2).shape == (5, 2)
