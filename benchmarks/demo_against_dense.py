"""What the README's demo table says: ``edgeopt demo`` (digits-mlp for rpi4-demo) once, with its
defaults, and its artifact against the dense input model — parameters and size counted from the two
ONNX files, p50/p95 on the target (predicted from this host), peak memory, test macro-F1, the gate's
verdict, and the plan per layer.

    python -m benchmarks demo_against_dense
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.suite import ROOT, Outcome


def _row(label: str, base: Any, best: Any, fmt: str, suffix: str = "") -> str:
    return f"| {label} | {format(base, fmt)}{suffix} | {format(best, fmt)}{suffix} |"


def run(args: SimpleNamespace) -> Outcome:
    out = Path(args.work) / "demo"
    cmd = [sys.executable, "-m", "edgeopt", "demo", "--out", str(out), *str(args.extra).split()]
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    wall = time.perf_counter() - t0
    rep = json.loads((out / "report.json").read_text())
    best, base = rep["best"], rep["baseline"]
    doc = {
        "command": "edgeopt demo " + str(args.extra),
        "exit": rc,
        "wall_s": round(wall, 1),
        "verdict": best["budget"].get("verdict"),
        "passed": best["budget"]["passed"],
        "plan": best.get("plan"),
        "params": [base["params"], best["params"]],
        "size_bytes": [base["size_bytes"], best["size_bytes"]],
        "p50_ms": [base["latency_ms"]["p50"], best["latency_ms"]["p50"]],
        "p95_ms": [base["latency_ms"]["p95"], best["latency_ms"]["p95"]],
        "peak_memory_mb": [base["peak_memory_mb"], best["peak_memory_mb"]],
        "test_f1": [base["metrics"]["test"]["f1"], best["metrics"]["test"]["f1"]],
        "latency_source": best.get("latency_source"),
        "search": {k: rep["search"].get(k) for k in ("trials", "feasible", "pruned", "failed", "wall_s")},
        "checks": best["budget"]["checks"],
    }
    mib = 1024 * 1024
    md = "\n".join(
        [
            f"`{doc['command'].strip()}`: exit {rc}, {wall:.0f} s wall, gate {doc['verdict']}.",
            "",
            "| | dense fp32 | edgeopt |",
            "|---|---:|---:|",
            _row("parameters (in the .onnx)", *doc["params"], ","),
            _row("size (MiB)", doc["size_bytes"][0] / mib, doc["size_bytes"][1] / mib, ".3f"),
            _row(f"p50 on rpi4 ({doc['latency_source']}, ms)", *doc["p50_ms"], ".3f"),
            _row(f"p95 on rpi4 ({doc['latency_source']}, ms)", *doc["p95_ms"], ".3f"),
            _row("peak memory (MiB)", *doc["peak_memory_mb"], ".1f"),
            _row("test macro-F1", *doc["test_f1"], ".4f"),
            "",
            f"Plan: `{json.dumps(doc['plan'])}`. Search: {doc['search']}.",
        ]
    )
    return Outcome(doc, md)
