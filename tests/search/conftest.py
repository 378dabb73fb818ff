"""Tiny tasks and targets for the compile-loop tests: real training, real ONNX, real Optuna storage."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _digits(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.4, stratify=y, random_state=seed)
    X_val, X_te, y_val, y_te = train_test_split(X_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed)
    return (X_tr, y_tr), (X_val, y_val), (X_te, y_te)


@pytest.fixture(scope="session")
def digits_splits():
    return _digits()


@pytest.fixture(scope="session")
def small_mlp_task(digits_splits):
    """A 64→256→256→10 MLP on digits (about 85k parameters), trained in about a second with edgeopt's
    one loop (cross-entropy, 15 epochs, the last weights)."""
    import edgeopt
    from edgeopt.compiler.train import train as train_model

    train, val, test = digits_splits
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )
    train_model(model, train, val, epochs=15, lr=3e-3, seed=0, patience=None, restore_best=False)
    return edgeopt.Task(model, train=train, val=val, test=test, metric="f1_macro", name="small-mlp")


TARGET_TOML = """
name = "{name}"
description = "test target: this host, with budgets set by the test"
[device]
detect = true
[runtime]
providers = ["CPUExecutionProvider"]
intra_op_threads = 1
inter_op_threads = 1
graph_optimization = "all"
allow_spinning = true
batch_size = 1
[budget]
{budget}
"""


@pytest.fixture
def make_target(tmp_path):
    """Write a host-like target profile with the given budget lines; returns its path."""

    def make(name: str = "testhost", **budget) -> str:
        lines = "\n".join(f"{k} = {v!r}" for k, v in budget.items())
        path = tmp_path / f"{name}.toml"
        path.write_text(TARGET_TOML.format(name=name, budget=lines))
        return str(path)

    return make


# Without the alternatives (their own tests turn them on): the trial counts the other tests assert stay theirs.
FAST = {
    "trial_epochs": 3,
    "final_epochs": 6,
    "final_bench": {"min_iters": 60, "min_time_s": 0.2, "max_iters": 5000},
    "no_alternatives": True,
}
