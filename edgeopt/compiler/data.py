"""Data in any accepted form ((X, y) arrays or tensors, a Dataset, a DataLoader) -> arrays and seeded loaders."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from edgeopt.errors import InputError

__all__ = ["make_loader", "to_arrays"]


def _np(v: Any) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def to_arrays(data: Any, *, name: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of numpy arrays or tensors, a Dataset of ``(x, y)`` or a DataLoader -> (float32 X, int64 y)."""
    if data is None:
        raise InputError(f"{name} is missing: expected (X, y) arrays/tensors, a Dataset or a DataLoader.")
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        X, y = _np(data[0]), _np(data[1])
    elif isinstance(data, (DataLoader, Dataset)) or hasattr(data, "__iter__"):
        xs, ys = [], []
        items = (
            data
            if isinstance(data, DataLoader)
            else (data[i] for i in range(len(data)))
            if isinstance(data, Dataset) and hasattr(data, "__len__")
            else data
        )
        batched = isinstance(data, DataLoader) and data.batch_size is not None
        try:
            for item in items:
                x, t = item[0], item[1]
                xs.append(_np(x) if batched else _np(x)[None])
                ys.append(_np(t).reshape(-1))
        except (TypeError, IndexError) as exc:
            raise InputError(f"{name} must yield (x, y) pairs. Got {type(data).__name__} ({exc}).") from None
        if not xs:
            raise InputError(f"{name} is empty (0 samples).")
        X, y = np.concatenate(xs), np.concatenate(ys)
    else:
        raise InputError(
            f"{name} must be (X, y) arrays or tensors, a torch Dataset or a DataLoader. "
            f"Got {type(data).__name__} instead."
        )
    if X.shape[0] != y.shape[0]:
        raise InputError(f"{name}: X has {X.shape[0]} samples but y has {y.shape[0]}.")
    if X.shape[0] == 0:
        raise InputError(f"{name} is empty (0 samples).")
    if y.ndim != 1 or (y.dtype.kind == "f" and not np.all(np.equal(np.mod(y, 1), 0))):
        raise InputError(
            f"{name}: y must be a 1-D array of integer class labels. Got shape {y.shape}, dtype {y.dtype}."
        )
    return np.ascontiguousarray(X, dtype=np.float32), y.astype(np.int64)


def make_loader(
    X: np.ndarray, y: np.ndarray, *extra: np.ndarray, batch_size: int = 64, shuffle: bool = True, seed: int = 0
) -> DataLoader:
    """A DataLoader over tensors, shuffled by its own seeded generator (reproducible)."""
    tensors = [torch.as_tensor(X), torch.as_tensor(y), *(torch.as_tensor(e) for e in extra)]
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle, generator=gen)
