"""A tiny task for worker processes: a 64-128-128-10 MLP on scikit-learn's digits, its weights
trained once by the tests and read from ``$EDGEOPT_TINY_MODEL`` so every worker has the same teacher."""

from __future__ import annotations

import os

import numpy as np


def _splits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.4, stratify=y, random_state=0)
    X_val, X_te, y_val, y_te = train_test_split(X_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=0)
    return (X_tr, y_tr), (X_val, y_val), (X_te, y_te)


def _model():
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )


def train_teacher(path) -> None:
    import torch

    from edgeopt.compiler.train import train

    train_split, val, _ = _splits()
    torch.manual_seed(0)
    model = _model()
    train(model, train_split, val, epochs=10, lr=3e-3, seed=0, patience=None, restore_best=False)
    torch.save(model.state_dict(), path)


def make_task():
    import torch

    import edgeopt

    model = _model()
    model.load_state_dict(torch.load(os.environ["EDGEOPT_TINY_MODEL"]))
    train_split, val, test = _splits()
    return edgeopt.Task(model.eval(), train=train_split, val=val, test=test, metric="f1_macro", name="tiny-mlp")
