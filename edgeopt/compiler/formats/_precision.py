"""A layer's precision, orthogonal to its format: a plan entry may carry ``"precision": "int8"``
(``{"format": "lowrank", "rank": 4, "precision": "int8"}``; dense int8 is ``{"format": "dense",
"precision": "int8"}``). torch builds the layer in fp32 whatever it says; the exported graph gets int8
on that layer's nodes, static QDQ for a conv and dynamic for a Linear layer
(:func:`edgeopt.compiler.quantize.quantize_layers`). Being a key
of the entry, it is part of every plan hash, claim and screen cache key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeopt._validate import fail

PRECISION_KEY = "precision"
PRECISIONS = ("fp32", "int8")


def split_precision(entry: Mapping[str, Any], where: str) -> tuple[dict[str, Any], str]:
    """``entry`` without its precision, and the precision (validated; ``fp32`` when absent)."""
    d = dict(entry)
    p = d.pop(PRECISION_KEY, "fp32")
    if p not in PRECISIONS:
        raise fail(where, PRECISION_KEY, f"one of {', '.join(map(repr, PRECISIONS))}", p)
    return d, p


def precision_of(entry: Mapping[str, Any] | None) -> str:
    """``int8`` or ``fp32`` (the default) of one plan entry."""
    return str((entry or {}).get(PRECISION_KEY, "fp32")) if isinstance(entry, Mapping) else "fp32"


def with_precision(entry: Mapping[str, Any] | None, precision: str) -> dict[str, Any]:
    """``entry`` at ``precision``: fp32 drops the key (the dense fp32 entry stays ``{}``); int8 of dense
    is ``{"format": "dense", "precision": "int8"}``."""
    d = {k: v for k, v in (entry or {}).items() if k != PRECISION_KEY}
    if precision == "fp32":
        return {} if d.get("format") == "dense" and len(d) == 1 else d
    return {**(d or {"format": "dense"}), PRECISION_KEY: precision}


def int8_layers(plan: Mapping[str, Any] | None) -> list[str]:
    """The layers ``plan`` runs in int8, in plan order."""
    return [name for name, entry in (plan or {}).items() if precision_of(entry) == "int8"]


def all_int8(plan: Mapping[str, Any] | None, layers: list[str]) -> dict[str, Any]:
    """``plan`` with every one of ``layers`` int8: what the whole-artifact int8 (``DType.INT8``) of the
    same plan is, expressed per layer."""
    out = dict(plan or {})
    for name in layers:
        out[name] = with_precision(out.get(name), "int8")
    return out


def fp32_plan(plan: Mapping[str, Any] | None) -> dict[str, Any]:
    """``plan`` with every layer in fp32 and the dense layers left out: the model torch builds for it, whose
    trained weights every precision of the plan shares (int8 is applied to the exported graph)."""
    out = {name: with_precision(entry, "fp32") for name, entry in (plan or {}).items()}
    return {name: entry for name, entry in out.items() if entry and entry.get("format", "dense") != "dense"}


def is_dense_plan(plan: Mapping[str, Any]) -> bool:
    """Whether ``plan`` leaves every layer dense (``{}`` or only ``{"format": "dense"}`` entries)."""
    return all((spec.get("format") if isinstance(spec, dict) else spec) == "dense" for spec in plan.values())


__all__ = [
    "PRECISIONS",
    "PRECISION_KEY",
    "all_int8",
    "fp32_plan",
    "int8_layers",
    "is_dense_plan",
    "precision_of",
    "split_precision",
    "with_precision",
]
