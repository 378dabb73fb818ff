"""``gate``: benchmark, then check every budget of the target and give a verdict; with
``against=OLD``, also compare the model with OLD in one interleaved run (``compare``).

The latency check bounds the budgeted percentile with a one-sided distribution-free confidence
bound (``stats.percentile_bounds``): PASS when the upper bound is within budget, FAIL when the
lower bound is over it, INCONCLUSIVE otherwise. Memory and size are single deterministic
measurements and are compared directly.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt import _validate
from edgeopt.runtime import stats
from edgeopt.runtime.bench import BenchResult, bench
from edgeopt.runtime.checks import FAIL, INCONCLUSIVE, PASS, VERDICT_ICON, Check, combine
from edgeopt.runtime.compare import Comparison, Tolerances, compare
from edgeopt.runtime.targets import Target

SCHEMA = "edgeopt.gate/1"
CONFIDENCE = 0.95  # the bounds' one-sided confidence, unless asked otherwise (the compile's selection uses it too)
__all__ = ["gate", "GateResult", "Check", "latency_check", "CONFIDENCE", "PASS", "FAIL", "INCONCLUSIVE", "SCHEMA"]


@dataclass(frozen=True)
class GateResult:
    """``checks`` are the target's budgets (on NEW); ``comparison`` the checks against OLD, when asked."""

    verdict: str
    checks: tuple[Check, ...]
    bench: BenchResult
    confidence: float
    strict: bool
    target_name: str
    comparison: Comparison | None = None
    tries: tuple[dict[str, Any], ...] = ()  # every measurement, when other work disturbed one (runtime/retake.py)

    @property
    def all_checks(self) -> tuple[Check, ...]:
        return self.checks + (self.comparison.checks if self.comparison is not None else ())

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
            "checks": [c.to_dict() for c in self.checks],
            "bench": self.bench.to_dict(),
            "comparison": self.comparison.to_dict() if self.comparison is not None else None,
            "tries": list(self.tries),
        }

    def _where(self) -> str:
        b = self.bench
        if b.latency_source == "predicted":
            return f"latency predicted for {self.target_name} from {b.environment.get('measured_on')}"
        return f"measured on {self.target_name}: {b.environment.get('measured_on')}"

    def to_markdown(self) -> str:
        icon = VERDICT_ICON
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
            lines.append(
                f"| {c.name} | {fmt(c.budget, c.unit)} | {fmt(c.measured, c.unit)} | "
                f"{fmt(c.lower_bound, c.unit)} | {fmt(c.upper_bound, c.unit)} | {c.source} | {icon[c.status]} |"
            )
        if not self.checks:
            lines.append("| (no budgets checked) | | | | | | |")
        if self._retaken():
            lines += ["", f"{self._retaken()}."]
        if self.comparison is not None:
            lines += ["", self.comparison.to_markdown().rstrip("\n")]
        return "\n".join(lines) + "\n"

    def to_junit(self) -> str:
        """One testcase per budget check (classname ``edgeopt.gate.TARGET``) and per comparison check
        (classname ``edgeopt.gate.TARGET.against``)."""
        every = self.all_checks
        failures = sum(c.status == FAIL or (self.strict and c.status == INCONCLUSIVE) for c in every)
        skipped = sum(c.status == INCONCLUSIVE and not self.strict for c in every)
        suite = ET.Element(
            "testsuite",
            name=f"edgeopt.gate.{self.target_name}",
            tests=str(len(every)),
            failures=str(failures),
            errors="0",
            skipped=str(skipped),
        )
        props = ET.SubElement(suite, "properties")
        for k, v in (
            ("model", self.bench.model),
            ("target", self.target_name),
            ("verdict", self.verdict),
            ("latency_source", self.bench.latency_source),
            ("where", self._where()),
        ):
            ET.SubElement(props, "property", name=k, value=str(v))
        if self.comparison is not None:
            ET.SubElement(props, "property", name="against", value=self.comparison.old.model)
        for c in self.checks:
            self._testcase(
                suite,
                f"edgeopt.gate.{self.target_name}",
                c,
                f"{c.name}: measured {c.measured:.4g} {c.unit} ({c.source}) vs budget {c.budget:.4g} {c.unit}",
            )
        for c in self.comparison.checks if self.comparison is not None else ():
            bounds = "" if c.lower_bound is None else f" [{c.lower_bound:.4g}, {c.upper_bound:.4g}]"
            head = (
                f"{c.name}: NEW/OLD {c.measured:.4g}{bounds} ({c.source}) vs limit {c.budget:.4g}"
                if c.unit == "x"
                else f"{c.name}: {c.measured:.4g} vs limit {c.budget:.4g}"
            )
            self._testcase(suite, f"edgeopt.gate.{self.target_name}.against", c, head)
        root = ET.Element("testsuites", name="edgeopt.gate", tests=suite.get("tests"), failures=suite.get("failures"))
        root.append(suite)
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

    def _testcase(self, suite: ET.Element, classname: str, c: Check, head: str) -> None:
        case = ET.SubElement(suite, "testcase", classname=classname, name=c.name)
        msg = head + (f"; {c.detail}" if c.detail else "")
        if c.status == FAIL or (self.strict and c.status == INCONCLUSIVE):
            ET.SubElement(case, "failure", message=msg, type=c.status).text = msg
        elif c.status == INCONCLUSIVE:
            ET.SubElement(case, "skipped", message=msg)

    def to_text(self) -> str:
        lines = [
            f"edgeopt gate: {self.verdict.upper()}  "
            f"({Path(self.bench.model).name} on {self.target_name}; {self._where()})"
        ]
        for c in self.checks:
            bound = (
                ""
                if c.upper_bound is None and c.lower_bound is None
                else f"  [{'-' if c.lower_bound is None else f'{c.lower_bound:.4g}'}, "
                f"{'-' if c.upper_bound is None else f'{c.upper_bound:.4g}'}] @{self.confidence:.0%}"
            )
            lines.append(
                f"  {c.status.upper():<13} {c.name:<16} {c.measured:>10.4g} {c.unit:<3} budget "
                f"{c.budget:.4g} {c.unit}{bound}{'  ' + c.detail if c.detail else ''}"
            )
        if self._retaken():
            lines.append(f"  {self._retaken()}")
        if self.comparison is not None:
            lines += self.comparison.text_lines()
        return "\n".join(lines)

    def _retaken(self) -> str | None:
        return retaken_note(self.tries)


def retaken_note(tries: Any) -> str | None:
    """A sentence when the measurement was taken again (:mod:`edgeopt.runtime.retake`), naming the first
    try and why it was retaken."""
    if len(tries or ()) < 2:
        return None
    first = tries[0]
    return (
        f"measured {len(tries)} times: the first ({first['verdict']}, p50 {first['p50_ms']:.4g} ms) was "
        f"disturbed by other work ({first['noisy']}); the least disturbed counts"
    )


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
        detail = (
            f"only {len(samples_ms)} runs, need >= {need} for an upper bound"
            if upper is None
            else "the budget lies inside the confidence interval; run longer (--min-time) to decide"
        )
    q = f"{percentile:g}"
    return Check(f"latency_p{q}", budget_ms, measured, upper, lower, passed, "ms", source, detail)


def _fixed_check(name: str, measured: float, budget: float, unit: str) -> Check:
    return Check(name, budget, measured, measured, measured, measured <= budget, unit, "measured")


def gate(
    path: str | os.PathLike[str],
    target: Target | str = "host",
    *,
    confidence: float = CONFIDENCE,
    strict: bool = False,
    bench_result: BenchResult | None = None,
    against: str | os.PathLike[str] | None = None,
    budgets: bool = True,
    tolerances: Tolerances | None = None,
    **bench_kwargs: Any,
) -> GateResult:
    """Benchmark ``path`` on ``target`` (or reuse ``bench_result``) and check the target's budgets.

    With ``against`` (an OLD .onnx), ``path`` (NEW) is also measured against OLD in one interleaved
    run (:func:`edgeopt.runtime.compare.compare`: latency ratio with confidence bounds, peak memory,
    size, output agreement); the budgets are then checked on NEW's samples from that run, or not at
    all with ``budgets=False``. ``tolerances`` (a ``Tolerances``) or its fields as keywords
    (``max_slowdown="5%"``, ``atol=1e-3``, ...), ``max_time_s`` (the sequential run's cap, default
    60 s), ``pairs`` (a fixed count instead) and ``agreement_samples`` go to ``compare``; the
    measurement keywords (``settings``, ``min_time_s``, ...) are per model, split over the first
    look's pairs.
    """
    confidence = _validate.number(
        confidence, "gate()", "confidence", minimum=0, maximum=1, min_exclusive=True, max_exclusive=True
    )
    target = Target.load(target)
    comparison = None
    if against is not None:
        comparison = compare(
            path, against, target, confidence=confidence, tolerances=tolerances, **_compare_kwargs(bench_kwargs)
        )
        r = comparison.new_bench
    else:
        if not budgets:
            raise _validate.fail("gate()", "budgets", "True unless against=OLD is given", budgets)
        r = bench_result if bench_result is not None else bench(path, target, **bench_kwargs)
    checks = _budget_checks(r, target, confidence) if budgets else []
    verdict = combine(checks + list(comparison.checks if comparison is not None else ()))
    return GateResult(verdict, tuple(checks), r, float(confidence), bool(strict), target.name, comparison)


def _budget_checks(r: BenchResult, target: Target, confidence: float) -> list[Check]:
    b = target.budget
    checks: list[Check] = []
    if b.latency_ms is not None:
        checks.append(
            latency_check(r.samples_ms, b.latency_percentile, b.latency_ms, confidence, source=r.latency_source)
        )
    if b.peak_memory_mb is not None:
        checks.append(_fixed_check("peak_memory", r.peak_memory_mb, b.peak_memory_mb, "MB"))
    if b.model_size_mb is not None:
        checks.append(_fixed_check("model_size", r.model_size_mb, b.model_size_mb, "MB"))
    return checks


def _compare_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """``bench``-style keywords (``min_time_s=...``) folded into ``settings`` for ``compare``."""
    from edgeopt.runtime.settings import GATE_SETTINGS

    kw = dict(kw)
    fields = {k: kw.pop(k) for k in ("batch", "min_iters", "min_time_s", "max_iters", "warmup", "seed") if k in kw}
    kw["settings"] = (kw.get("settings") or GATE_SETTINGS).updated(**fields)
    return kw
