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


class MissingDependencyError(EdgeoptError, ImportError):
    """An optional dependency (the compiler half) is not installed."""


__all__ = [
    "EdgeoptError",
    "InputError",
    "TargetError",
    "ModelError",
    "BudgetRefused",
    "MissingDependencyError",
]
