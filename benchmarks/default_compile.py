"""Issue 9's goal "compile with defaults for a ~1M-parameter, ~40-layer model in <= 10 minutes on 2
cores": ``edgeopt compile`` of the bundled mobilenet (1.05M parameters, 40 decomposable layers) on
``benchmarks/host-1t.toml`` with every default (30 trials, 12 trial epochs, 80 final epochs, the
default 600 s time budget) and a latency budget of 0.7x its dense p95 (half is below its floor).

    python benchmarks/default_compile.py [--model mobilenet] [--latency-ms 0.35]
    python benchmarks/default_compile.py --existing runs/mb   # summarize a run made with the same command

Writes ``benchmarks/results/default_compile.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet")
    ap.add_argument("--latency-ms", type=float, default=0.35)
    ap.add_argument("--out", default=str(ROOT / "runs" / "benchmarks" / "default-compile"))
    ap.add_argument("--existing", help="an output dir of the same command: summarize it, run nothing")
    ap.add_argument("--results", default=str(HERE / "results" / "default_compile"))
    args = ap.parse_args()
    cmd = [
        sys.executable,
        "-m",
        "edgeopt",
        "compile",
        "--example",
        args.model,
        "--target",
        "benchmarks/host-1t.toml",
        "--latency-ms",
        str(args.latency_ms),
        "--out",
        args.existing or args.out,
    ]
    wall = None
    if not args.existing:
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        wall = time.perf_counter() - t0
    out = Path(args.existing or args.out)
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
    Path(args.results + ".json").write_text(json.dumps(doc, indent=1))
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
    Path(args.results + ".md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
