"""Formatting shared by the report's renderings: numbers, ratios, plan labels and tables as rows."""

from __future__ import annotations

import math
from typing import Any

# A ratio within this of 1 (either way) reads "same ...": what the printed digits and measurement noise blur.
SAME_BAND = 0.02


def fmt(v: Any, spec: str = "") -> str:
    """``v`` formatted with ``spec``; "–" for a missing or NaN value."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if spec:
        return format(v, spec)
    return str(v)


def mib(nbytes: Any) -> str:
    return "–" if nbytes is None else f"{nbytes / 2**20:.3f} MiB"


def round4(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else v


def trial_ref(number: Any) -> str:
    """A trial named as Optuna numbers it (0-based): ``#4``."""
    return "–" if number is None else f"#{number}"


def change(before: Any, after: Any, lower: str, higher: str, same: str, band: float = SAME_BAND) -> str:
    """How ``after`` compares with ``before`` for a quantity where lower is better: ``"2.4× faster"``,
    ``"1.25× slower"`` (never ``"0.8× faster"``), or ``same`` when equal or within ``band``; "" when unknown.
    Counts (parameters, bytes) are exact: they pass ``band=0``."""
    if not before or not after:
        return ""
    r = before / after
    if r == 1 or max(r, 1 / r) < 1 + band:
        return same
    x = r if r > 1 else 1 / r
    return f"{x:.2f}× {lower if r > 1 else higher}" if x < 2 else f"{x:.1f}× {lower if r > 1 else higher}"


def dtype_of(entry: dict[str, Any]) -> str:
    """An entry's dtype (``precision`` in reports written before 0.x renamed it)."""
    return entry.get("dtype") or entry.get("precision") or "fp32"


def plan_short(plan: dict | None, dtype: str = "fp32") -> str:
    """``fc1:lr8 fc2:tt4 int8``: each layer's label from its format's handler."""
    from edgeopt.compiler.formats import short_label

    suffix = " int8" if dtype == "int8" else ""
    if not plan:
        return short_label(None) + suffix
    return " ".join(f"{name}:{short_label(spec)}" for name, spec in plan.items()) + suffix


def render_markdown_table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


class Table(str):
    """A Markdown table (the string) that keeps its rows, for the terminal's rendering of the same table."""

    rows: list[list[str]]

    def __new__(cls, rows: list[list[str]]) -> Table:
        table = super().__new__(cls, render_markdown_table(rows))
        table.rows = rows
        return table


def render_text_table(rows: list[list[str]]) -> str:
    """Rows as aligned columns for the terminal, the header underlined."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
