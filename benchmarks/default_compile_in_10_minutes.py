"""The goal "compile with defaults for a ~1M-parameter, ~40-layer model in <= 10 minutes on 2
cores": ``edgeopt compile`` of the bundled mobilenet (1.05M parameters, 40 decomposable layers) on
``benchmarks/host-1t.toml`` with every default (30 trials, 12 trial epochs, 80 final epochs, the
default 600 s time budget) and a latency budget of 0.7x its dense p95 (half is below its floor).

    python -m benchmarks default_compile_in_10_minutes [--set model=mobilenet --set latency_ms=0.35]
    python -m benchmarks default_compile_in_10_minutes --set existing=runs/mb   # summarize a finished run
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from benchmarks.suite import ROOT, Outcome


def run(args: SimpleNamespace) -> Outcome:
    """``edgeopt compile`` with every default (``extra`` flags added, e.g. for a quick run); or summarize
    ``existing``, an output folder of the same command."""
    compiled = args.existing or str(args.work / "compile")
    cmd = [
        sys.executable,
        "-m",
        "edgeopt",
        "compile",
        "--example",
        args.model,
        "--target",
        "benchmarks/host-1t.toml",  # relative: the command is run from the repository root
        "--latency-ms",
        str(args.latency_ms),
        *str(args.extra).split(),
        "--out",
        compiled,
    ]
    wall = None
    if not args.existing:
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        wall = time.perf_counter() - t0
    out = Path(compiled)
    rep = json.loads((out / "report.json").read_text())
    best, base, s = rep["best"], rep["baseline"], rep["search"]
    doc = {
        "command": " ".join(["edgeopt", *cmd[3:]]),
        "wall_s": round(wall or rep["wall_s"], 1),
        "exit": None if wall is None else rc,
        "passed": best["budget"]["passed"],
        "trials": s["trials"],
        "feasible": s["feasible"],
        "screened_out": s["screened_out"],
        "pruned": s["pruned"],
        "time_s": s.get("time_s"),
        "tables": {k: rep["tables"][k] for k in ("build_s", "timings", "candidates")},
        "params": [base["params"], best["params"]],
        "p50_ms": [base["latency_ms"]["p50"], best["latency_ms"]["p50"]],
        "p95_ms": [base["latency_ms"]["p95"], best["latency_ms"]["p95"]],
        "test_score": [base["metrics"]["test"]["score"], best["metrics"]["test"]["score"]],
        "notes": s.get("notes"),
        "load": os.getloadavg(),
    }
    md = (
        f"`{doc['command']}`: **{doc['wall_s']:.0f} s** wall (goal ≤ 600 s), budgets "
        f"{'met' if doc['passed'] else 'NOT met'}. Tables {doc['tables']['build_s']:.0f} s "
        f"({doc['tables']['candidates']} candidates: {doc['tables']['timings']}); {doc['trials']} trials "
        f"({doc['feasible']} feasible, {doc['screened_out']} screened out, {doc['pruned']} pruned) before the time "
        f"budget's search share ran out; params {doc['params'][0]:,} → {doc['params'][1]:,}; p50 "
        f"{doc['p50_ms'][0] * 1e3:.0f} → {doc['p50_ms'][1] * 1e3:.0f} µs, p95 {doc['p95_ms'][0] * 1e3:.0f} → "
        f"{doc['p95_ms'][1] * 1e3:.0f} µs; test F1 {doc['test_score'][0]:.4f} → {doc['test_score'][1]:.4f}. "
        f"Notes: {'; '.join(doc['notes'] or []) or 'none'}."
    )
    return Outcome(doc, md + "\n")
