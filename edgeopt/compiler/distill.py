"""Knowledge distillation of a decomposed student from its dense teacher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from edgeopt.compiler.metrics import MetricSpec
from edgeopt.compiler.train import fit

__all__ = ["distill"]


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train: Any,
    val: Any,
    *,
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
    schedule: str = "constant",
    restore_best: bool = True,
    train_device: str = "auto",
) -> float:
    """Fine-tune ``student`` to match ``teacher`` and the labels; return the best validation score.

    Loss = alpha * cross-entropy(labels) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T)), Adam,
    early stopping on the validation ``metric`` after ``patience`` epochs without improvement. ``student`` ends with
    its best-validation weights, in eval mode; ``teacher`` is unchanged; the same call gives the same weights on CPU.

    Parameters
    ----------
    train, val : (X, y) arrays or tensors, a Dataset or a DataLoader
    schedule : {"constant", "cosine"}
        Learning-rate schedule; cosine anneals to zero over ``epochs``.
    restore_best : bool
        End with the best-validation weights (default) or, if False, the last ones (no early stop).
    callback : callable(epoch, score), optional
        Called after each epoch with the validation score; its exceptions (the search's
        ``optuna.TrialPruned``) propagate after the best weights are restored.
    train_device : {"auto", "cpu", "cuda"}
        Where to train: "auto" is CUDA when torch sees one, else the CPU. The student ends on the
        device it started on; the teacher's logits are computed once per (teacher weights, data).
    """
    return fit(
        student,
        train,
        val,
        teacher=teacher,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        temperature=temperature,
        alpha=alpha,
        patience=patience,
        seed=seed,
        metric=metric,
        weight_decay=weight_decay,
        callback=callback,
        owner="distill",
        schedule=schedule,
        restore_best=restore_best,
        train_device=train_device,
    )[0]
