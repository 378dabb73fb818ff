"""Task validation and task loading: clear one-line errors for the ways a task can be wrong."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.compile
torch = pytest.importorskip("torch")

import edgeopt  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.errors import InputError  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.pipeline.task import load_task  # noqa: E402 - after the pytest.importorskip guards


def _model():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _data(n=12, classes=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, classes, n)


def test_task_accepts_arrays_tensors_and_loaders():
    X, y = _data()
    ds = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    task = edgeopt.Task(_model(), train=(X, y), val=torch.utils.data.DataLoader(ds, batch_size=5), test=ds)
    assert task.num_classes == 3
    assert task.X_val.shape == (12, 4) and task.y_test.dtype == np.int64
    assert task.example_input.shape == (1, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "not a model"}, "must be a torch.nn.Module"),
        ({"metric": "auc"}, "'metric' parameter of Task"),
        (
            {
                "train": (np.zeros((4, 5), np.float32), np.zeros(4, np.int64)),
                "val": (np.zeros((4, 5), np.float32), np.zeros(4, np.int64)),
            },
            "cannot run on Task.train",
        ),
        ({"val": (np.zeros((4, 5), np.float32), np.zeros(4, np.int64))}, "different sample shapes"),
        ({"val": (np.zeros((4, 4), np.float32), np.full(4, 7))}, "labels must lie in [0, 2]"),
        ({"val": (np.zeros((4, 4), np.float32), np.zeros((4, 2), np.int64))}, "1-D array"),
        ({"metric": "f1"}, "binary"),
    ],
)
def test_task_rejects_bad_input_with_one_clear_line(kwargs, message):
    X, y = _data()
    args = {"model": _model(), "train": (X, y), "val": (X, y)} | kwargs
    with pytest.raises(InputError) as exc:
        edgeopt.Task(**args)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_load_task_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_task(str(tmp_path / "missing.py") + ":make")
    with pytest.raises(InputError, match="path/to/file.py:function"):
        load_task("no-colon")
    raising = tmp_path / "raising.py"
    raising.write_text("def make():\n    raise RuntimeError('boom')\n")
    with pytest.raises(InputError, match="RuntimeError: boom"):
        load_task(f"{raising}:make")
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def make():\n    return 42\n")
    with pytest.raises(InputError, match="must return an edgeopt.Task, returned int"):
        load_task(f"{wrong}:make")
    with pytest.raises(InputError, match="has no function 'other'"):
        load_task(f"{wrong}:other")
    broken = tmp_path / "broken.py"
    broken.write_text("def broken(:\n")
    with pytest.raises(InputError, match="raised while loading: SyntaxError"):
        load_task(f"{broken}:make")


def test_load_task_returns_the_users_task(tmp_path):
    f = tmp_path / "mytask.py"
    f.write_text(
        "import numpy as np, torch, edgeopt\n"
        "def make():\n"
        "    X = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)\n"
        "    y = np.arange(10) % 2\n"
        "    m = torch.nn.Sequential(torch.nn.Linear(4, 2))\n"
        "    return edgeopt.Task(m, train=(X, y), val=(X, y), metric='f1', name='mine')\n"
    )
    task = load_task(f"{f}:make")
    assert task.name == "mine" and task.num_classes == 2


@pytest.mark.slow
def test_imbalanced_example_shows_why_f1_comes_first():
    """On the bundled imbalanced task, accuracy looks fine while F1 does not."""
    from edgeopt.compiler.metrics import compute_metrics
    from edgeopt.models.examples import load_example

    task = load_example("imbalanced")
    with torch.no_grad():
        pred = task.model(torch.from_numpy(task.X_test)).argmax(1).numpy()
    m = compute_metrics(task.y_test, pred, metric="f1")
    assert m.accuracy > 0.9
    assert m.f1 < m.accuracy - 0.2  # about 0.96 accuracy, 0.61 F1
