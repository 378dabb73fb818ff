"""Bundled example tasks, trained deterministically on scikit-learn's bundled data and cached.

- ``digits-mlp``: 64→1024→1024→10 MLP on the 8×8 digits (about 1.2M parameters, the seed size).
- ``digits-cnn``: a small CNN on the same digits as 1×8×8 images.
- ``imbalanced``: a binary task with 5% positives, where accuracy looks fine and F1 does not.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeopt.errors import InputError

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where trained examples (and other reusable results) are kept: $EDGEOPT_CACHE_DIR or ~/.cache/edgeopt."""
    root = os.environ.get("EDGEOPT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgeopt"
    )
    return Path(root)


def _split(X: np.ndarray, y: np.ndarray, seed: int = 0):
    from sklearn.model_selection import train_test_split

    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.4, stratify=y, random_state=seed)
    X_val, X_te, y_val, y_te = train_test_split(X_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed)
    f = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    i = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    return (f(X_tr), i(y_tr)), (f(X_val), i(y_val)), (f(X_te), i(y_te))


def _digits_data(image: bool):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.data.astype(np.float32) / 16.0
    if image:
        X = X.reshape(-1, 1, 8, 8)
    return _split(X, d.target)


def _imbalanced_data():
    from sklearn.datasets import make_classification
    from sklearn.preprocessing import StandardScaler

    X, y = make_classification(
        n_samples=6000, n_features=24, n_informative=8, n_redundant=4, n_clusters_per_class=3,
        weights=[0.95, 0.05], flip_y=0.01, class_sep=1.5, random_state=7,
    )
    X = StandardScaler().fit_transform(X)
    return _split(X, y)


def _mlp(sizes: list[int]):
    import torch.nn as nn

    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return _Named(layers, [f"fc{i + 1}" for i in range(len(sizes) - 1)])


def _Named(layers, names):
    from collections import OrderedDict

    import torch.nn as nn

    od: OrderedDict[str, nn.Module] = OrderedDict()
    k = 0
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            od[names[k]] = layer
            k += 1
        else:
            od[f"act{i}"] = layer
    return nn.Sequential(od)


def _digits_cnn():
    from collections import OrderedDict

    import torch.nn as nn

    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 32, 3, padding=1), bn1=nn.BatchNorm2d(32), act1=nn.ReLU(),
            conv2=nn.Conv2d(32, 64, 3, padding=1), bn2=nn.BatchNorm2d(64), act2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            conv3=nn.Conv2d(64, 64, 3, padding=1), act3=nn.ReLU(),
            flatten=nn.Flatten(),
            fc1=nn.Linear(64 * 4 * 4, 256), act4=nn.ReLU(),
            fc2=nn.Linear(256, 10),
        )
    )


@dataclass(frozen=True)
class Example:
    name: str
    description: str
    metric: str
    data: Callable[[], tuple]
    model: Callable[[], object]
    epochs: int
    lr: float = 1e-3
    class_weight: bool = False


EXAMPLES: dict[str, Example] = {
    "digits-mlp": Example(
        "digits-mlp",
        "MLP 64→1024→1024→10 (about 1.2M parameters) on scikit-learn's 8×8 digits",
        "f1_macro", lambda: _digits_data(image=False), lambda: _mlp([64, 1024, 1024, 10]), epochs=40,
    ),
    "digits-cnn": Example(
        "digits-cnn",
        "small CNN (3 conv + 2 linear, BatchNorm) on scikit-learn's 8×8 digits as 1×8×8 images",
        "f1_macro", lambda: _digits_data(image=True), _digits_cnn, epochs=30,
    ),
    "imbalanced": Example(
        "imbalanced",
        "binary task with 5% positives (make_classification), MLP 24→256→256→2: accuracy looks fine, F1 does not",
        "f1", _imbalanced_data, lambda: _mlp([24, 256, 256, 2]), epochs=40,
    ),
}


def example_names() -> list[str]:
    return sorted(EXAMPLES)


def _train(model, train, val, *, epochs: int, lr: float, seed: int):
    """Plain supervised training, deterministic on CPU; keeps the best validation macro-F1 weights."""
    import copy

    import torch
    from sklearn.metrics import f1_score

    torch.manual_seed(seed)
    X, y = (torch.from_numpy(a) for a in train)
    Xv, yv = val
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    best, best_state = -1.0, None
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(torch.from_numpy(Xv)).argmax(1).numpy()
        score = f1_score(yv, pred, average="macro")
        if score > best:
            best, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return model


def load_example(name: str, *, seed: int = 0):
    """Build the named example Task; the teacher is trained once and cached by content hash."""
    import torch

    from edgeopt.search.task import Task

    if name not in EXAMPLES:
        raise InputError(f"unknown example {name!r}: expected one of {', '.join(example_names())}.")
    ex = EXAMPLES[name]
    train, val, test = ex.data()
    model = ex.model()
    key = hashlib.sha256(
        f"{ex.name}|{ex.epochs}|{ex.lr}|{seed}|{torch.__version__}|{train[0].shape}|{float(train[0].sum()):.6f}|{model}".encode()
    ).hexdigest()[:16]
    path = cache_dir() / "examples" / f"{name}-{key}.pt"
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            model.eval()
        except Exception:
            path.unlink(missing_ok=True)
    if not path.exists():
        log.info("training example %s (once; cached in %s)", name, path.parent)
        torch.manual_seed(seed)
        model = ex.model()
        _train(model, train, val, epochs=ex.epochs, lr=ex.lr, seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return Task(model, train=train, val=val, test=test, metric=ex.metric, name=name, description=ex.description)
