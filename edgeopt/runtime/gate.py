"""``gate``: benchmark, then check every budget of the target and give a verdict.

The latency check bounds the budgeted percentile with a one-sided distribution-free confidence
bound (``stats.percentile_bounds``): PASS when the upper bound is within budget, FAIL when the
lower bound is over it, INCONCLUSIVE otherwise. Memory and size are single deterministic
measurements and are compared directly.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeopt import _validate
from edgeopt.runtime import stats
from edgeopt.runtime.bench import BenchResult, bench
from edgeopt.runtime.targets import Target

SCHEMA = "edgeopt.gate/1"
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class Check:
    """One budget check. ``passed`` is None when the check is inconclusive."""

    name: str
    budget: float
    measured: float
    upper_bound: float | None
    lower_bound: float | None
    passed: bool | None
    unit: str = ""
    source: str = "measured"  # measured | predicted
    detail: str = ""

    @property
    def status(self) -> str:
        return PASS if self.passed else FAIL if self.passed is False else INCONCLUSIVE


@dataclass(frozen=True)
class GateResult:
    verdict: str
    checks: tuple[Check, ...]
    bench: BenchResult
    confidence: float
    strict: bool
    target_name: str

    @property
    def exit_code(self) -> int:
        """0 pass, 1 over budget, 3 inconclusive (1 with strict)."""
        if self.verdict == PASS:
            return 0
        if self.verdict == FAIL:
            return 1
        return 1 if self.strict else 3

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "verdict": self.verdict,
            "model": self.bench.model,
            "target": self.target_name,
            "confidence": self.confidence,
            "strict": self.strict,
            "latency_source": self.bench.latency_source,
            "measured_on": self.bench.environment.get("measured_on"),
            "checks": [dict(asdict(c), status=c.status) for c in self.checks],
            "bench": self.bench.to_dict(),
        }

    def _where(self) -> str:
        b = self.bench
        if b.latency_source == "predicted":
            return f"latency predicted for {self.target_name} from {b.environment.get('measured_on')}"
        return f"measured on {self.target_name}: {b.environment.get('measured_on')}"

    def to_markdown(self) -> str:
        icon = {PASS: "✅ PASS", FAIL: "❌ FAIL", INCONCLUSIVE: "⚠️ INCONCLUSIVE"}
        lines = [
            f"### edgeopt gate: {icon[self.verdict]} — `{Path(self.bench.model).name}` on `{self.target_name}`",
            "",
            f"{self._where()}; {self.bench.iterations} runs; bounds one-sided at {self.confidence:.0%} confidence.",
            "",
            "| check | budget | measured | lower bound | upper bound | source | result |",
            "|---|---:|---:|---:|---:|---|---|",
        ]
        fmt = lambda v, u: "–" if v is None else f"{v:.4g} {u}".strip()  # noqa: E731
        for c in self.checks:
            lines.append(f"| {c.name} | {fmt(c.budget, c.unit)} | {fmt(c.measured, c.unit)} | "
                         f"{fmt(c.lower_bound, c.unit)} | {fmt(c.upper_bound, c.unit)} | {c.source} | {icon[c.status]} |")
        if not self.checks:
            lines.append("| (no budgets in this target) | | | | | | |")
        return "\n".join(lines) + "\n"

    def to_junit(self) -> str:
        failures = sum(c.status == FAIL or (self.strict and c.status == INCONCLUSIVE) for c in self.checks)
        skipped = sum(c.status == INCONCLUSIVE and not self.strict for c in self.checks)
        suite = ET.Element("testsuite", name=f"edgeopt.gate.{self.target_name}", tests=str(len(self.checks)),
                           failures=str(failures), errors="0", skipped=str(skipped))
        props = ET.SubElement(suite, "properties")
        for k, v in (("model", self.bench.model), ("target", self.target_name), ("verdict", self.verdict),
                     ("latency_source", self.bench.latency_source), ("where", self._where())):
            ET.SubElement(props, "property", name=k, value=str(v))
        for c in self.checks:
            case = ET.SubElement(suite, "testcase", classname=f"edgeopt.gate.{self.target_name}", name=c.name)
            msg = (f"{c.name}: measured {c.measured:.4g} {c.unit} ({c.source}) vs budget {c.budget:.4g} {c.unit}"
                   + (f"; {c.detail}" if c.detail else ""))
            if c.status == FAIL or (self.strict and c.status == INCONCLUSIVE):
                ET.SubElement(case, "failure", message=msg, type=c.status).text = msg
            elif c.status == INCONCLUSIVE:
                ET.SubElement(case, "skipped", message=msg)
        root = ET.Element("testsuites", name="edgeopt.gate", tests=suite.get("tests"), failures=suite.get("failures"))
        root.append(suite)
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

    def to_text(self) -> str:
        lines = [f"edgeopt gate: {self.verdict.upper()}  ({Path(self.bench.model).name} on {self.target_name}; {self._where()})"]
        for c in self.checks:
            bound = "" if c.upper_bound is None and c.lower_bound is None else \
                f"  [{'-' if c.lower_bound is None else f'{c.lower_bound:.4g}'}, " \
                f"{'-' if c.upper_bound is None else f'{c.upper_bound:.4g}'}] @{self.confidence:.0%}"
            lines.append(f"  {c.status.upper():<13} {c.name:<16} {c.measured:>10.4g} {c.unit:<3} budget "
                         f"{c.budget:.4g} {c.unit}{bound}{'  ' + c.detail if c.detail else ''}")
        return "\n".join(lines)


def latency_check(samples_ms, percentile: float, budget_ms: float, confidence: float, *, source: str) -> Check:
    measured = stats.percentile(samples_ms, percentile)
    lower, upper = stats.percentile_bounds(samples_ms, percentile, confidence)
    if upper is not None and upper <= budget_ms:
        passed, detail = True, ""
    elif lower is not None and lower > budget_ms:
        passed, detail = False, ""
    else:
        passed = None
        need = stats.min_samples_for_upper_bound(percentile, confidence)
        detail = (f"only {len(samples_ms)} runs, need >= {need} for an upper bound" if upper is None
                  else "the budget lies inside the confidence interval; run longer (--min-time) to decide")
    q = f"{percentile:g}"
    return Check(f"latency_p{q}", budget_ms, measured, upper, lower, passed, "ms", source, detail)


def _fixed_check(name: str, measured: float, budget: float, unit: str) -> Check:
    return Check(name, budget, measured, measured, measured, measured <= budget, unit, "measured")


def gate(
    path: str | os.PathLike[str],
    target: Target | str = "host",
    *,
    confidence: float = 0.95,
    strict: bool = False,
    bench_result: BenchResult | None = None,
    **bench_kwargs: Any,
) -> GateResult:
    """Benchmark ``path`` on ``target`` (or reuse ``bench_result``) and check the target's budgets."""
    confidence = _validate.number(confidence, "gate()", "confidence", minimum=0, maximum=1, min_exclusive=True,
                                  max_exclusive=True)
    target = Target.load(target)
    r = bench_result if bench_result is not None else bench(path, target, **bench_kwargs)
    b = target.budget
    checks: list[Check] = []
    if b.latency_ms is not None:
        checks.append(latency_check(r.samples_ms, b.latency_percentile, b.latency_ms, confidence, source=r.latency_source))
    if b.peak_memory_mb is not None:
        checks.append(_fixed_check("peak_memory", r.peak_memory_mb, b.peak_memory_mb, "MB"))
    if b.model_size_mb is not None:
        checks.append(_fixed_check("model_size", r.model_size_mb, b.model_size_mb, "MB"))
    if any(c.passed is False for c in checks):
        verdict = FAIL
    elif any(c.passed is None for c in checks):
        verdict = INCONCLUSIVE
    else:
        verdict = PASS
    return GateResult(verdict, tuple(checks), r, float(confidence), bool(strict), target.name)
