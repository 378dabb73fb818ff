"""What ``gate --against`` found (:class:`Comparison`, one :class:`Side` per model) and how it reads:
JSON, Markdown, text."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.runtime.checks import VERDICT_ICON, Check, combine
from edgeopt.runtime.compare._design import MEDIAN, Tolerances
from edgeopt.runtime.host import MB


@dataclass(frozen=True)
class Side:
    """One model's figures from the A/B run. ``latency_ms`` is on the target's scale."""

    model: str
    latency_ms: dict[str, float]
    host_latency_ms: dict[str, float]
    blocks: int
    iterations: int
    peak_memory_mb: float  # median over blocks
    peak_memory_range_mb: tuple[float, float]
    model_size_bytes: int
    params: int
    prediction_factor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "latency_ms": self.latency_ms,
            "host_latency_ms": self.host_latency_ms,
            "blocks": self.blocks,
            "iterations": self.iterations,
            "peak_memory_mb": self.peak_memory_mb,
            "peak_memory_range_mb": list(self.peak_memory_range_mb),
            "model_size_bytes": self.model_size_bytes,
            "model_size_mb": self.model_size_bytes / MB,
            "params": self.params,
            "prediction_factor": self.prediction_factor,
        }


@dataclass(frozen=True)
class Comparison:
    """NEW against OLD: both sides, the checks (ratios with bounds, agreement) and the verdict."""

    new: Side
    old: Side
    checks: tuple[Check, ...]
    agreement: dict[str, Any]
    tolerances: Tolerances
    confidence: float
    percentile: float
    latency_source: str  # measured | predicted
    target_name: str
    method: dict[str, Any]
    new_samples_ms: tuple[tuple[float, ...], ...] = field(default=(), repr=False)  # per block, target scale
    old_samples_ms: tuple[tuple[float, ...], ...] = field(default=(), repr=False)
    new_bench: Any = field(default=None, repr=False)  # bench.BenchResult of NEW's pooled blocks (budget checks)
    warnings: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        return combine(self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:

        return {
            "verdict": self.verdict,
            "new": self.new.to_dict(),
            "old": self.old.to_dict(),
            "latency_source": self.latency_source,
            "percentile": self.percentile,
            "confidence": self.confidence,
            "tolerances": {k: getattr(self.tolerances, k) for k in self.tolerances.__dataclass_fields__},
            "latency_ratio": {
                f"p{q:g}": {
                    "new_ms": self.new.latency_ms[f"p{q:g}"],
                    "old_ms": self.old.latency_ms[f"p{q:g}"],
                    "ratio": c.measured,
                    "lower_bound": c.lower_bound,
                    "upper_bound": c.upper_bound,
                    "limit": c.budget,
                    "status": c.status,
                }
                for q, c in self._latency_checks()
            },
            "checks": [c.to_dict() for c in self.checks],
            "agreement": self.agreement,
            "method": self.method,
            "warnings": list(self.warnings),
        }

    def _latency_checks(self) -> list[tuple[float, Check]]:
        out = []
        for q in dict.fromkeys((self.percentile, MEDIAN)):
            out.append((q, self.check(f"latency_ratio_p{q:g}")))
        return out

    def describe(self) -> str:
        """One line: how it was measured."""
        m = self.method
        seq = m.get("sequential")
        run = (
            ""
            if seq is None
            else (
                f"sequential: {seq['elapsed_s']:.0f} s, look {len(seq['looks'])} of {seq['max_looks']}, "
                + {
                    "decided": "decided",
                    "check failed": f"stopped: {', '.join(seq.get('failed_checks') or ['a check'])} failed "
                    "(latency not decided)",
                    "time cap": f"stopped at the {seq['max_time_s']:g} s cap, within noise",
                    "last look": "stopped at the last look, within noise",
                }[seq["stopped"]]
                + "; "
            )
        )
        how = (
            "one fresh process per pair, NEW and OLD interleaved in it"
            if m.get("in_process")
            else "fresh process per block"
        )
        return (
            f"NEW and OLD {self.latency_source} in {m['pairs']} counterbalanced pairs of blocks "
            f"({m['block_time_s']:.2g} s each, {how}; {run}ratio bounds one-sided at "
            f"{self.confidence:.0%}{' over all looks' if seq else ''}, median of per-pair ratios, "
            f"sign-test order statistics)"
        )

    def to_markdown(self) -> str:
        icon = VERDICT_ICON
        lines = [
            f"#### against `{Path(self.old.model).name}`: {icon[self.verdict]}",
            "",
            f"{self.describe()}.",
            "",
            "| check | NEW | OLD | NEW/OLD | lower bound | upper bound | limit | result |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        f4 = lambda v: "–" if v is None else f"{v:.4g}"  # noqa: E731
        for c in self.checks:
            new, old = self._sides(c)
            if c.unit == "x":
                lines.append(
                    f"| {c.name} | {new} | {old} | {c.measured:.4f} | {f4(c.lower_bound)} | "
                    f"{f4(c.upper_bound)} | {c.budget:.4g} | {icon[c.status]} |"
                )
            else:
                detail = c.detail.replace("|", "\\|")
                lines.append(f"| {c.name} | {detail} | | {f4(c.measured)} | | | {f4(c.budget)} | {icon[c.status]} |")
        return "\n".join(lines) + "\n"

    def _sides(self, c: Check) -> tuple[str, str]:
        if c.name.startswith("latency_ratio_p"):
            key = "p" + c.name[len("latency_ratio_p") :]
            return f"{self.new.latency_ms[key]:.4g} ms", f"{self.old.latency_ms[key]:.4g} ms"
        if c.name == "peak_memory_ratio":
            return f"{self.new.peak_memory_mb:.3g} MB", f"{self.old.peak_memory_mb:.3g} MB"
        if c.name == "model_size_ratio":
            return f"{self.new.model_size_bytes:,} B", f"{self.old.model_size_bytes:,} B"
        return "", ""

    def text_lines(self) -> list[str]:
        lines = [f"  against {Path(self.old.model).name}: {self.verdict.upper()}  ({self.describe()})"]
        for c in self.checks:
            new, old = self._sides(c)
            if c.unit == "x":
                lines.append(
                    f"  {c.status.upper():<13} {c.name:<22} {c.measured:>8.4f}x  "
                    f"[{'-' if c.lower_bound is None else f'{c.lower_bound:.4f}'}, "
                    f"{'-' if c.upper_bound is None else f'{c.upper_bound:.4f}'}]  limit {c.budget:.4g}x"
                    f"  (NEW {new}, OLD {old}){'  ' + c.detail if c.detail and c.passed is not True else ''}"
                )
            else:
                lines.append(
                    f"  {c.status.upper():<13} {c.name:<22} {c.measured:>9.4g}  limit {c.budget:.4g}  {c.detail}"
                )
        return lines
