"""Prediction, evaluation and the training loop shared by ``train`` and ``distill``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.compiler.data import make_loader, to_arrays
from edgeopt.compiler.metrics import Metrics, MetricSpec, compute_metrics, metric_name
from edgeopt.errors import InputError

__all__ = ["evaluate", "fit", "predict_labels", "predict_logits", "train"]


def predict_logits(model: nn.Module, X: Any, *, batch_size: int = 1024) -> torch.Tensor:
    """Model outputs on X (array or tensor) in eval mode, without gradients; modes restored."""
    X = torch.as_tensor(np.asarray(X, dtype=np.float32) if not isinstance(X, torch.Tensor) else X)
    was = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(X[i:i + batch_size]) for i in range(0, len(X), batch_size)])
    finally:
        for m, t in was.items():
            m.training = t


def predict_labels(model: nn.Module, data: Any, *, batch_size: int = 1024) -> np.ndarray:
    """Argmax class labels for ``data`` ((X, y), X alone, a Dataset or a DataLoader)."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        X = data
    else:
        X, _ = to_arrays(data)
    return predict_logits(model, X, batch_size=batch_size).argmax(-1).cpu().numpy()


def evaluate(model: nn.Module, data: Any, metric: MetricSpec = "f1_macro") -> Metrics:
    """Every metric of ``model`` on ``data`` (F1, precision, recall, accuracy, confusion)."""
    X, y = to_arrays(data)
    return compute_metrics(y, predict_labels(model, X), metric)


def _check_positive(name: str, value: Any, kind: type = int, *, owner: str) -> None:
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool) and value > 0
    if not ok:
        what = "a number > 0" if kind is float else "an int >= 1"
        raise InputError(f"The '{name}' parameter of {owner} must be {what}. Got {value!r} instead.")


def fit(student: nn.Module, train: Any, val: Any, *, teacher: nn.Module | None = None, epochs: int = 20,
        lr: float = 1e-3, batch_size: int = 64, temperature: float = 4.0, alpha: float = 0.5, patience: int = 5,
        seed: int = 0, metric: MetricSpec = "f1_macro", weight_decay: float = 0.0,
        callback: Callable[[int, float], Any] | None = None, owner: str = "fit", schedule: str = "constant",
        restore_best: bool = True) -> tuple[float, list[float]]:
    """The loop: Adam, early stopping on the validation score, best weights restored at the end
    (also when ``callback`` raises, e.g. ``optuna.TrialPruned``; its exception propagates).

    Loss = alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T) with a teacher,
    plain CE without one (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015).
    ``schedule="cosine"`` anneals the learning rate to zero over ``epochs``; with
    ``restore_best=False`` the student keeps its last weights instead of the best-validation ones
    (a final fine-tune whose plan was already chosen on validation should not be selected on it
    again) and early stopping is off. Returns (best score, per-epoch scores).
    """
    if schedule not in ("constant", "cosine"):
        raise InputError(f"The 'schedule' parameter of {owner} must be 'constant' or 'cosine'. Got {schedule!r} instead.")
    for name, v, kind in (("epochs", epochs, int), ("batch_size", batch_size, int), ("patience", patience, int),
                          ("lr", lr, float), ("temperature", temperature, float)):
        _check_positive(name, v, kind, owner=owner)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise InputError(f"The 'alpha' parameter of {owner} must be a float in [0, 1]. Got {alpha!r} instead.")
    metric_name(metric)
    Xtr, ytr = to_arrays(train, name="train")
    Xva, yva = to_arrays(val, name="val")
    torch.manual_seed(seed)
    extra = []
    if teacher is not None and alpha < 1.0:
        extra.append(predict_logits(teacher, Xtr).float().numpy())  # the teacher is fixed: its logits once
    loader = make_loader(Xtr, ytr, *extra, batch_size=batch_size, shuffle=True, seed=seed)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader)) if schedule == "cosine" else None
    best, best_state, history, stale = -np.inf, None, [], 0
    try:
        for epoch in range(epochs):
            student.train()
            for batch in loader:
                xb, yb = batch[0], batch[1]
                out = student(xb)
                loss = F.cross_entropy(out, yb)
                if extra:
                    t = temperature
                    kd = F.kl_div(F.log_softmax(out / t, -1), F.log_softmax(batch[2] / t, -1), log_target=True,
                                  reduction="batchmean") * (t * t)
                    loss = alpha * loss + (1 - alpha) * kd
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
            score = compute_metrics(yva, predict_labels(student, Xva), metric).score
            history.append(score)
            if score > best:
                best, stale = score, 0
                best_state = copy.deepcopy(student.state_dict())
            else:
                stale += 1
            if callback is not None:
                callback(epoch, score)
            if stale >= patience and restore_best:
                break
    finally:
        if best_state is not None and restore_best:
            student.load_state_dict(best_state)
        student.eval()
    return float(best), history


def train(model: nn.Module, train: Any, val: Any, *, epochs: int = 20, lr: float = 1e-3, batch_size: int = 64,
          patience: int = 5, seed: int = 0, metric: MetricSpec = "f1_macro", weight_decay: float = 0.0,
          callback: Callable[[int, float], Any] | None = None) -> float:
    """Plain supervised training (cross-entropy) with the same loop; returns the best val score."""
    return fit(model, train, val, epochs=epochs, lr=lr, batch_size=batch_size, alpha=1.0, patience=patience,
               seed=seed, metric=metric, weight_decay=weight_decay, callback=callback, owner="train")[0]
