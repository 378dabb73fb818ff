"""Prediction, evaluation and edgeopt's one training loop (``fit``), used by ``train`` (plain
cross-entropy: the bundled examples' teachers, the tests' models) and ``distill``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeopt._validate import choice, number
from edgeopt.compiler.data import make_loader, to_arrays
from edgeopt.compiler.metrics import Metrics, MetricSpec, compute_metrics, metric_name
from edgeopt.compiler.teacher import batched_logits, resolve_device, teacher_logits

__all__ = ["evaluate", "fit", "predict_labels", "predict_logits", "train"]

_SCHEDULES = ("constant", "cosine")


def predict_logits(model: nn.Module, X: Any, *, batch_size: int = 256) -> torch.Tensor:
    """Model outputs on X (array or tensor) in eval mode, without gradients, in batches on the model's
    device; float32 on the CPU; modes restored."""
    return batched_logits(model, X, batch_size=batch_size)


def predict_labels(model: nn.Module, data: Any, *, batch_size: int = 256) -> np.ndarray:
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


@dataclass(frozen=True)
class _Loss:
    """Cross-entropy on the labels, mixed with the teacher's softened outputs when a batch carries them."""

    alpha: float
    temperature: float

    def __call__(self, out: torch.Tensor, batch: list[torch.Tensor]) -> torch.Tensor:
        loss = F.cross_entropy(out, batch[1])
        if len(batch) > 2:  # the teacher's logits
            t = self.temperature
            kd = F.kl_div(
                F.log_softmax(out / t, -1), F.log_softmax(batch[2] / t, -1), log_target=True, reduction="batchmean"
            ) * (t * t)
            loss = self.alpha * loss + (1 - self.alpha) * kd
        return loss


def _check_fit_args(
    owner: str,
    epochs: Any,
    batch_size: Any,
    patience: Any,
    lr: Any,
    temperature: Any,
    alpha: Any,
    schedule: Any,
    metric: MetricSpec,
) -> None:
    where = f"{owner}()"
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        number(value, where, key, minimum=1, integer=True)
    for key, value in (("lr", lr), ("temperature", temperature)):
        number(value, where, key, minimum=0, min_exclusive=True)
    number(alpha, where, "alpha", minimum=0, maximum=1)
    choice(schedule, where, "schedule", _SCHEDULES)
    metric_name(metric)


def _run_epoch(
    student: nn.Module, loader: Any, opt: torch.optim.Optimizer, sched: Any, loss_fn: _Loss, device: torch.device
) -> None:
    """One pass over the loader: forward, loss, backward, step (and the schedule's step per batch).
    Batches stay on the CPU in the loader; each is moved to ``device`` when its turn comes."""
    student.train()
    for batch in loader:
        batch = [t.to(device, non_blocking=True) for t in batch]
        loss = loss_fn(student(batch[0]), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()


class _Best:
    """The best validation score so far, its weights, and the epochs since it improved."""

    def __init__(self) -> None:
        self.score, self.state, self.stale, self.history = -np.inf, None, 0, []

    def update(self, student: nn.Module, score: float) -> None:
        self.history.append(score)
        if score > self.score:
            self.score, self.stale, self.state = score, 0, copy.deepcopy(student.state_dict())
        else:
            self.stale += 1


def _optimizer(student: nn.Module, lr: float, weight_decay: float, schedule: str, steps: int) -> tuple[Any, Any]:
    """Adam over the trainable parameters, and the cosine schedule over ``steps`` batches (or none)."""
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if schedule == "cosine" else None


def _train_loader(train: Any, teacher: nn.Module | None, device: torch.device, batch_size: int, seed: int) -> Any:
    """Seeded shuffled batches of the training data, with the teacher's logits when there is a teacher."""
    Xtr, ytr = to_arrays(train, name="train")
    extra = []
    if teacher is not None:
        extra.append(teacher_logits(teacher, Xtr, device=device).numpy())  # fixed teacher: once per (weights, data)
    return make_loader(Xtr, ytr, *extra, batch_size=batch_size, shuffle=True, seed=seed)


def fit(
    student: nn.Module,
    train: Any,
    val: Any,
    *,
    teacher: nn.Module | None = None,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 64,
    temperature: float = 4.0,
    alpha: float = 0.5,
    patience: int = 5,
    seed: int = 0,
    metric: MetricSpec = "f1_macro",
    weight_decay: float = 0.0,
    callback: Callable[[int, float], Any] | None = None,
    owner: str = "fit",
    schedule: str = "constant",
    restore_best: bool = True,
    train_device: str = "auto",
) -> tuple[float, list[float]]:
    """edgeopt's one training loop: Adam over seeded shuffled batches, validation score per epoch,
    early stopping after ``patience`` epochs without improvement, best weights restored at the end
    (also when ``callback`` raises, e.g. ``optuna.TrialPruned``; its exception propagates).

    Loss = alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T) with a teacher,
    plain CE without one (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015).
    ``schedule="cosine"`` anneals the learning rate to zero over ``epochs``; with
    ``restore_best=False`` the student keeps its last weights instead of the best-validation ones
    and early stopping is off. Returns (best score, per-epoch scores).

    The teacher's logits on the training data are computed once (batched, cached across calls
    with the same teacher weights and data: a search distills many students from one teacher).
    ``train_device`` "auto" trains on CUDA when torch sees one, else on the CPU; the student ends
    on the device it started on.
    """
    _check_fit_args(owner, epochs, batch_size, patience, lr, temperature, alpha, schedule, metric)
    Xva, yva = to_arrays(val, name="val")
    device = resolve_device(train_device)
    torch.manual_seed(seed)
    loader = _train_loader(train, teacher if alpha < 1.0 else None, device, batch_size, seed)
    home = next((p.device for p in student.parameters()), device)
    student.to(device)
    opt, sched = _optimizer(student, lr, weight_decay, schedule, epochs * len(loader))
    loss_fn, best = _Loss(float(alpha), float(temperature)), _Best()
    try:
        for epoch in range(epochs):
            _run_epoch(student, loader, opt, sched, loss_fn, device)
            score = compute_metrics(yva, predict_labels(student, Xva), metric).score
            best.update(student, score)
            if callback is not None:
                callback(epoch, score)
            if best.stale >= patience and restore_best:
                break
    finally:
        if best.state is not None and restore_best:
            student.load_state_dict(best.state)
        student.to(home).eval()
    return float(best.score), best.history


def train(
    model: nn.Module,
    train: Any,
    val: Any,
    *,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 64,
    patience: int | None = 5,
    seed: int = 0,
    metric: MetricSpec = "f1_macro",
    weight_decay: float = 0.0,
    callback: Callable[[int, float], Any] | None = None,
    restore_best: bool = True,
    train_device: str = "auto",
    schedule: str = "constant",
) -> float:
    """Plain supervised training (cross-entropy) with the same loop; returns the best val score.

    ``patience=None`` runs every epoch (no early stop); ``restore_best=False`` keeps the last weights.
    Used by the bundled examples and the tests to train their teachers."""
    return fit(
        model,
        train,
        val,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        alpha=1.0,
        patience=epochs if patience is None else patience,
        seed=seed,
        metric=metric,
        weight_decay=weight_decay,
        callback=callback,
        owner="train",
        restore_best=restore_best,
        train_device=train_device,
        schedule=schedule,
    )[0]
