"""Bundled example tasks, trained deterministically on scikit-learn's bundled data and cached.

- ``digits-mlp``: 64→1024→1024→10 MLP on the 8×8 digits (1,126,410 parameters, the seed size).
- ``digits-cnn``: a small CNN on the same digits as 1×8×8 images.
- ``imbalanced``: a binary task with 5% positives, where accuracy looks fine and F1 does not.
- ``resnet8``, ``mobilenet``, ``vit``, ``cnn1d``: the architectures of ``edgeopt.models`` (MLPerf Tiny's
  ResNet-8, a MobileNetV2-style network, a ViT on ``nn.MultiheadAttention``, a 1-D CNN) on the datasets
  of ``edgeopt.models.data`` (digits as 32x32 RGB images; MNIST-1D-style signals).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeopt._io import atomic_path, cache_dir
from edgeopt.errors import InputError

log = logging.getLogger(__name__)

# Part of the cache key: bump it when the way teachers are trained changes, so a cached teacher is
# never one the current code would not train. "fit-1": compiler.train.train (the one loop).
TEACHER_RECIPE = "fit-1"


def _split(X: np.ndarray, y: np.ndarray, seed: int = 0):
    from sklearn.model_selection import train_test_split

    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.4, stratify=y, random_state=seed)
    X_val, X_te, y_val, y_te = train_test_split(X_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed)

    def f(a):
        return np.ascontiguousarray(a, dtype=np.float32)

    def i(a):
        return np.ascontiguousarray(a, dtype=np.int64)

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
        n_samples=6000,
        n_features=24,
        n_informative=8,
        n_redundant=4,
        n_clusters_per_class=3,
        weights=[0.95, 0.05],
        flip_y=0.01,
        class_sep=1.5,
        random_state=7,
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
            conv1=nn.Conv2d(1, 32, 3, padding=1),
            bn1=nn.BatchNorm2d(32),
            act1=nn.ReLU(),
            conv2=nn.Conv2d(32, 64, 3, padding=1),
            bn2=nn.BatchNorm2d(64),
            act2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            conv3=nn.Conv2d(64, 64, 3, padding=1),
            act3=nn.ReLU(),
            flatten=nn.Flatten(),
            fc1=nn.Linear(64 * 4 * 4, 256),
            act4=nn.ReLU(),
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
    weight_decay: float = 0.0
    schedule: str = "constant"


def _architecture(name: str) -> Example:
    """An ``edgeopt.models`` architecture on its offline dataset, with its training recipe."""
    from edgeopt.models import ARCHITECTURES

    a = ARCHITECTURES[name]
    return Example(
        name,
        a.description,
        "f1_macro",
        a.data,
        a.build,
        epochs=a.epochs,
        lr=a.lr,
        weight_decay=a.weight_decay,
        schedule=a.schedule,
    )


EXAMPLES: dict[str, Example] = {
    "digits-mlp": Example(
        "digits-mlp",
        "MLP 64→1024→1024→10 (1,126,410 parameters) on scikit-learn's 8×8 digits",
        "f1_macro",
        lambda: _digits_data(image=False),
        lambda: _mlp([64, 1024, 1024, 10]),
        epochs=40,
    ),
    "digits-cnn": Example(
        "digits-cnn",
        "small CNN (3 conv + 2 linear, BatchNorm) on scikit-learn's 8×8 digits as 1×8×8 images",
        "f1_macro",
        lambda: _digits_data(image=True),
        _digits_cnn,
        epochs=30,
    ),
    "imbalanced": Example(
        "imbalanced",
        "binary task with 5% positives (make_classification), MLP 24→256→256→2: accuracy looks fine, F1 does not",
        "f1",
        _imbalanced_data,
        lambda: _mlp([24, 256, 256, 2]),
        epochs=40,
    ),
    # real architectures written in edgeopt.models: ResNet-8, MobileNet-style, ViT, 1-D CNN
    **{name: _architecture(name) for name in ("resnet8", "mobilenet", "vit", "cnn1d")},
}


def example_names() -> list[str]:
    return sorted(EXAMPLES)


def _train(model, train, val, *, epochs: int, lr: float, seed: int):
    """Train a teacher with the one loop: cross-entropy, every epoch run, the best-validation macro-F1
    weights kept; deterministic on CPU. (Kept for ``benchmarks/compare.py``; call
    ``edgeopt.compiler.train.train(..., patience=None)`` directly.)"""
    from edgeopt.compiler.train import train as train_model

    train_model(model, train, val, epochs=epochs, lr=lr, seed=seed, patience=None, metric="f1_macro")
    return model


def load_example(name: str, *, seed: int = 0):
    """Build the named example Task; the teacher is trained once and cached by content hash."""
    import torch

    from edgeopt.compiler.train import train as train_model
    from edgeopt.pipeline.task import Task

    if name not in EXAMPLES:
        raise InputError(f"unknown example {name!r}: expected one of {', '.join(example_names())}.")
    ex = EXAMPLES[name]
    train, val, test = ex.data()
    model = ex.model()
    recipe = "" if (ex.weight_decay, ex.schedule) == (0.0, "constant") else f"|{ex.weight_decay}|{ex.schedule}"
    key = hashlib.sha256(
        f"{ex.name}|{TEACHER_RECIPE}|{ex.epochs}|{ex.lr}{recipe}|{seed}|{torch.__version__}|{train[0].shape}|{float(train[0].sum()):.6f}|{model}".encode()
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
        train_model(
            model,
            train,
            val,
            epochs=ex.epochs,
            lr=ex.lr,
            seed=seed,
            patience=None,
            metric="f1_macro",
            weight_decay=ex.weight_decay,
            schedule=ex.schedule,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(model.state_dict(), tmp)
    return Task(model, train=train, val=val, test=test, metric=ex.metric, name=name, description=ex.description)
