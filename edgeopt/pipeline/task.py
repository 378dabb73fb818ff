"""``Task``: the model to compress, its data splits and the metric that judges it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeopt._deps import require
from edgeopt.errors import InputError

_METRICS = ("f1_macro", "f1_micro", "f1_weighted", "f1", "accuracy")


@dataclass
class Task:
    """A trained classifier and its data.

    Parameters
    ----------
    model : torch.nn.Module
        The trained teacher. It is never modified.
    train, val : data
        ``(X, y)`` numpy arrays or tensors, a torch ``Dataset`` or a ``DataLoader``. ``val``
        selects plans; ``test`` (optional) is scored only on the final artifact.
    metric : str or callable
        What the search maximizes: ``"f1_macro"`` (default), ``"f1_micro"``, ``"f1_weighted"``,
        ``"f1"`` (binary, positive class 1), ``"accuracy"``, or ``callable(y_true, y_pred)``.
    name : str
        Used in reports and the default study name.
    """

    model: Any
    train: Any
    val: Any
    test: Any = None
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "f1_macro"
    name: str = "task"
    description: str = ""
    # filled by __post_init__
    X_train: np.ndarray = field(init=False, repr=False)
    y_train: np.ndarray = field(init=False, repr=False)
    X_val: np.ndarray = field(init=False, repr=False)
    y_val: np.ndarray = field(init=False, repr=False)
    X_test: np.ndarray | None = field(init=False, repr=False, default=None)
    y_test: np.ndarray | None = field(init=False, repr=False, default=None)
    num_classes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        torch = require("torch")
        from edgeopt.compiler.data import to_arrays

        if not isinstance(self.model, torch.nn.Module):
            raise InputError(f"Task.model must be a torch.nn.Module, got {type(self.model).__name__} instead.")
        if not (callable(self.metric) or self.metric in _METRICS):
            raise InputError(
                f"The 'metric' parameter of Task must be one of {', '.join(_METRICS)} or a "
                f"callable(y_true, y_pred). Got {self.metric!r} instead."
            )
        splits = {"train": self.train, "val": self.val, "test": self.test}
        arrays: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        for split, data in splits.items():
            if data is None:
                if split != "test":
                    raise InputError(f"Task.{split} is required: give (X, y), a Dataset or a DataLoader.")
                arrays[split] = None
                continue
            try:
                arrays[split] = to_arrays(data)
            except InputError as exc:
                raise InputError(f"Task.{split}: {exc}") from None
        self.X_train, self.y_train = arrays["train"]  # type: ignore[misc]
        self.X_val, self.y_val = arrays["val"]  # type: ignore[misc]
        if arrays["test"] is not None:
            self.X_test, self.y_test = arrays["test"]
        self._check_model_fits()

    def _check_model_fits(self) -> None:
        """Run the model on two samples: the output must be [N, C] logits covering every label."""
        import torch

        shapes = {
            s: getattr(self, f"X_{s}").shape[1:]
            for s in ("train", "val", "test")
            if getattr(self, f"X_{s}") is not None
        }
        if len(set(shapes.values())) != 1:
            raise InputError(f"Task splits have different sample shapes: {shapes}.")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(torch.from_numpy(self.X_train[:2]))
        except Exception as exc:
            raise InputError(
                f"Task.model cannot run on Task.train samples of shape {list(self.X_train.shape[1:])}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
        finally:
            self.model.train(was_training)
        if not hasattr(out, "shape") or out.ndim != 2:
            raise InputError(
                f"Task.model must return class logits of shape [batch, classes], got "
                f"{list(getattr(out, 'shape', [])) or type(out).__name__}."
            )
        self.num_classes = int(out.shape[1])
        for split in ("train", "val", "test"):
            y = getattr(self, f"y_{split}")
            if y is None:
                continue
            if y.ndim != 1:
                raise InputError(
                    f"Task.{split} labels must be a 1-D array of class indices, got shape {list(y.shape)}."
                )
            if y.size and (y.min() < 0 or y.max() >= self.num_classes):
                raise InputError(
                    f"Task.{split} labels must lie in [0, {self.num_classes - 1}] (the model has "
                    f"{self.num_classes} outputs), found labels in [{int(y.min())}, {int(y.max())}]."
                )
        if self.metric == "f1" and self.num_classes != 2:
            raise InputError(
                f"metric 'f1' is binary (positive class 1) but the model has {self.num_classes} outputs; "
                "use 'f1_macro' for multi-class tasks."
            )

    @property
    def example_input(self):
        """One sample, as the float32 tensor the model takes (batch of 1)."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.X_train[:1]))

    @property
    def metric_name(self) -> str:
        return self.metric if isinstance(self.metric, str) else getattr(self.metric, "__name__", "custom")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "metric": self.metric_name,
            "num_classes": self.num_classes,
            "input_shape": list(self.X_train.shape[1:]),
            "samples": {
                "train": int(len(self.y_train)),
                "val": int(len(self.y_val)),
                "test": int(len(self.y_test)) if self.y_test is not None else 0,
            },
        }


def load_task(spec: str) -> Task:
    """Load ``path/to/file.py:function`` (the function returns a Task)."""
    import importlib.util
    import os
    import sys

    path, sep, func_name = spec.rpartition(":")
    if not sep or not path or not func_name:
        raise InputError(f"TASK must be 'path/to/file.py:function', got {spec!r}.")
    if not os.path.isfile(path):
        raise InputError(f"task file {path!r} does not exist.")
    mod_name = f"_edgeopt_task_{abs(hash(os.path.abspath(path)))}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:
        raise InputError(f"task file {path!r} is not a Python file.")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise InputError(f"task file {path!r} raised while loading: {type(exc).__name__}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise InputError(f"task file {path!r} has no function {func_name!r}.")
    try:
        task = func()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{spec} raised: {type(exc).__name__}: {exc}") from exc
    if not isinstance(task, Task):
        raise InputError(f"{spec} must return an edgeopt.Task, returned {type(task).__name__} instead.")
    return task
