"""One error root for edgeopt; the CLI turns these into one line and an exit code."""

from __future__ import annotations


class EdgeoptError(Exception):
    """Root of every error edgeopt raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class InputError(EdgeoptError, ValueError):
    """Bad user input: a missing or malformed file, a wrong type, a value out of range."""


class TargetError(InputError):
    """A target profile that cannot be found or does not validate."""


class ModelError(InputError):
    """A model that cannot be loaded, run, decomposed or exported."""


class BudgetRefused(EdgeoptError):
    """The budget cannot be met by any plan (the fastest or smallest one is over it): refused before training."""

    exit_code = 1


class BudgetNotConfirmed(BudgetRefused):
    """The budget sits inside the measurement noise: plans meet it, but none was confirmed within it by the
    longer measurement (refused after the search). Exit 3, like a gate that cannot decide."""

    exit_code = 3


class MissingDependencyError(EdgeoptError, ImportError):
    """An optional dependency (the compiler half) is not installed."""


__all__ = [
    "EdgeoptError",
    "InputError",
    "TargetError",
    "ModelError",
    "BudgetRefused",
    "BudgetNotConfirmed",
    "MissingDependencyError",
]
