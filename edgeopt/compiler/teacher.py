"""Training at the cost of real models: the teacher's logits once, data in batches, a device choice.

A search distills dozens of students from one teacher on the same training data; the teacher's
outputs never change, so :class:`TeacherCache` computes them once (in batches, on the training
device, without gradients) and keeps them on the CPU, keyed by the teacher's weights and the
data's content. :func:`resolve_device` turns ``train_device`` ("auto" | "cpu" | "cuda") into a
``torch.device``; "auto" is CUDA when ``torch.cuda.is_available()``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeopt.errors import InputError

__all__ = [
    "TRAIN_DEVICES",
    "TeacherCache",
    "batched_logits",
    "data_fingerprint",
    "model_fingerprint",
    "resolve_device",
    "teacher_logits",
]

TRAIN_DEVICES = ("auto", "cpu", "cuda")


def resolve_device(train_device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when torch sees one, else CPU; ``"cuda"`` without one is an InputError."""
    if isinstance(train_device, torch.device):
        return train_device
    if train_device not in TRAIN_DEVICES:
        raise InputError(f"train_device must be one of {', '.join(TRAIN_DEVICES)}. Got {train_device!r} instead.")
    if train_device == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "train_device='cuda' but torch sees no CUDA device (torch.cuda.is_available() is False); "
            "use 'auto' or 'cpu'."
        )
    if train_device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(train_device)


def batched_logits(
    model: nn.Module, X: Any, *, batch_size: int = 256, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """``model`` outputs on X in batches (eval mode, no gradients, modes restored), as float32 on the CPU.

    The model runs where its parameters are; batches are moved to ``device`` (the model's device
    when it has parameters). Nothing but one batch of inputs and activations is on the device at once.
    """
    X = torch.as_tensor(np.asarray(X, dtype=np.float32) if not isinstance(X, torch.Tensor) else X)
    param = next(iter(model.parameters()), None)
    dev = param.device if param is not None else torch.device(device)
    was = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            outs = [
                model(X[i : i + batch_size].to(dev, non_blocking=True)).float().cpu()
                for i in range(0, len(X), batch_size)
            ]
    finally:
        for m, t in was.items():
            m.training = t
    return torch.cat(outs) if outs else torch.empty(0)


def model_fingerprint(model: nn.Module) -> str:
    """A content hash of the model's parameters and buffers (names, shapes, values)."""
    h = hashlib.sha1()
    for name, t in list(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(
            t.detach().cpu().contiguous().numpy().tobytes()
            if t.dtype != torch.bfloat16
            else t.detach().float().cpu().numpy().tobytes()
        )
    return h.hexdigest()


def data_fingerprint(X: Any) -> str:
    """A content hash of an input array or tensor."""
    a = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    h = hashlib.sha1(str((a.shape, str(a.dtype))).encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class TeacherCache:
    """Teacher logits, computed once per (teacher weights, data) and kept on the CPU.

    ``get(teacher, X)`` returns the cached float32 CPU tensor, computing it in batches on the first
    call; later calls with the same teacher (same weights, even a copy) and the same data cost a
    hash. At most ``max_entries`` results are kept (least recently used dropped).
    """

    def __init__(self, max_entries: int = 8, batch_size: int = 256) -> None:
        self.max_entries, self.batch_size = max_entries, batch_size
        self._entries: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, teacher: nn.Module, X: Any, *, device: str | torch.device = "cpu") -> torch.Tensor:
        key = (model_fingerprint(teacher), data_fingerprint(X))
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return hit
        logits = _on_device(teacher, X, self.batch_size, resolve_device(device))
        with self._lock:
            self.misses += 1
            self._entries[key] = logits
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return logits

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


def _on_device(teacher: nn.Module, X: Any, batch_size: int, device: torch.device) -> torch.Tensor:
    """Run ``teacher`` on ``device`` without moving the caller's module (a copy goes there if needed)."""
    param = next(iter(teacher.parameters()), None)
    if param is None or param.device == device:
        return batched_logits(teacher, X, batch_size=batch_size, device=device)
    import copy

    moved = copy.deepcopy(teacher).to(device)
    return batched_logits(moved, X, batch_size=batch_size, device=device)


_DEFAULT = TeacherCache()


def teacher_logits(
    teacher: nn.Module, X: Any, *, device: str | torch.device = "cpu", cache: TeacherCache | None = None
) -> torch.Tensor:
    """The teacher's logits on X (float32, CPU), from the process-wide cache (or ``cache``)."""
    return (cache or _DEFAULT).get(teacher, X, device=device)
