"""The sequential ``edgeopt gate NEW --against OLD`` on a loaded 2-core host.

    flock /tmp/edgeopt-bench.lock .venv/bin/python -m benchmarks gate_decides_under_load [--set runs=20]

For the whole run another process keeps one core busy (a Python busy loop in a subprocess), on top of
whatever else the shared machine runs. The model: the digits-mlp teacher shape, an MLP 64-1024-1024-10
(``edgeopt.runtime.graphs.mlp``, batch 1) at one onnxruntime thread (``benchmarks/host-1t.toml``); the
slower model is the same MLP with wider hidden layers, its slowdown calibrated first in one long fixed
A/B run (``cal_pairs`` pairs) and the width nearest 10 % at p50 kept. Then, with the gate's defaults
(sequential, cap 60 s, ``--max-slowdown 5%``, 95 %):

- the model against itself ``runs`` times: goal PASS >= 19/20, never FAIL;
- the ~10 % slower model ``runs`` times: goal FAIL >= 19/20 (outputs, size and memory are not
  compared: the wider model computes something else and is bigger; the latency checks decide);
- ``pytest tests/runtime -q`` ``test_runs`` times under the same load: goal 10/10 green.

Each pair is one fresh process with both models, timed in interleaved sub-blocks (``compare``'s
in-process pairs; before, one fresh process per block).

The result is written after each phase.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks.suite import ROOT, Outcome, one_core_busy, provenance
from edgeopt.runtime.checks import combine
from edgeopt.runtime.compare import FRESH_PAIRS, SUB_BLOCKS, compare
from edgeopt.runtime.gate import gate
from edgeopt.runtime.host import host_facts
from edgeopt.runtime.settings import GATE_SETTINGS
from testkit import graphs

BASE_DIMS = (64, 1024, 1024, 10)
WIDER = (1072, 1104)  # hidden widths tried for "~10% slower"
UNCOMPARED = {
    "atol": float("inf"),
    "max_top1_disagreement": 1.0,
    "max_size_growth": "100%",
    "max_memory_growth": "100%",
}


def calibrate(work: Path, target: str, base: Path, pairs: int, min_time_s: float) -> tuple[Path, dict]:
    out = {}
    for h in WIDER:
        p = graphs.mlp((64, h, h, 10)).save(work / f"mlp_{h}.onnx")
        c = compare(p, base, target, pairs=pairs, settings=GATE_SETTINGS.updated(min_time_s=min_time_s), **UNCOMPARED)
        out[h] = {
            x.name: [x.measured, x.lower_bound, x.upper_bound] for x in c.checks if x.name.startswith("latency_ratio_")
        }
        print(f"calibration hidden {h}: {out[h]}", file=sys.stderr, flush=True)
    best = min(WIDER, key=lambda h: abs(out[h]["latency_ratio_p50"][0] - 1.10))
    return work / f"mlp_{best}.onnx", {
        "hidden": best,
        "pairs": pairs,
        "min_time_s_per_model": min_time_s,
        "ratios": {str(h): v for h, v in out.items()},
    }


def one_gate(new: Path, old: Path, target: str, **kw) -> dict:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    g = gate(new, target, against=old, budgets=False, **kw)
    c = g.comparison
    lat = [x for x in c.checks if x.name.startswith("latency_ratio_")]
    seq = c.method["sequential"]
    return {
        "verdict": g.verdict,
        "latency_verdict": combine(lat),
        "wall_s": time.perf_counter() - t0,
        "load_avg_1m": [load0, os.getloadavg()[0]],
        "pairs": seq["pairs"],
        "elapsed_s": seq["elapsed_s"],
        "stopped": seq["stopped"],
        "looks": len(seq["looks"]),
        "in_process": c.method.get("in_process"),
        "checks": {
            x.name: {"ratio": x.measured, "lower": x.lower_bound, "upper": x.upper_bound, "status": x.status}
            for x in lat
        },
    }


def gate_phase(args: SimpleNamespace, doc: dict) -> None:
    work = args.work
    base = graphs.mlp(BASE_DIMS).save(work / "mlp_1024.onnx")
    slower, doc["calibration"] = calibrate(work, args.target, base, args.cal_pairs, args.cal_time_s)
    rows = {}
    for name, new, kw in (("same model", base, {}), ("~10% slower", slower, UNCOMPARED)):
        runs = []
        for i in range(args.runs):
            r = one_gate(new, base, args.target, **kw)
            runs.append(r)
            print(
                f"{name} {i + 1}/{args.runs}: {r['latency_verdict']} after {r['pairs']} pairs, {r['elapsed_s']:.0f} s "
                f"({r['stopped']}); "
                + " ".join(
                    f"{k[-3:]} {v['ratio']:.3f} [{v['lower']:.3f}, {v['upper']:.3f}]" for k, v in r["checks"].items()
                )
                + f" load {r['load_avg_1m'][0]:.1f}",
                file=sys.stderr,
                flush=True,
            )
        rows[name] = {
            "model": new.name,
            "counts": {v: sum(r["latency_verdict"] == v for r in runs) for v in ("pass", "fail", "inconclusive")},
            "median_wall_s": float(np.median([r["wall_s"] for r in runs])),
            "max_wall_s": float(np.max([r["wall_s"] for r in runs])),
            "runs": runs,
        }
        doc["gate"] = rows
        args.save(doc, markdown(doc))


def tests_phase(args: SimpleNamespace, doc: dict) -> None:
    runs = []
    for i in range(args.test_runs):
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/runtime", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        tail = [ln for ln in p.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))] + p.stdout.splitlines()[-1:]
        runs.append({"rc": p.returncode, "wall_s": time.perf_counter() - t0, "load_avg_1m": load0, "summary": tail})
        print(
            f"pytest tests/runtime {i + 1}/{args.test_runs}: rc {p.returncode} ({tail[-1]})",
            file=sys.stderr,
            flush=True,
        )
        doc["tests"] = {"command": "pytest tests/runtime -q", "green": sum(r["rc"] == 0 for r in runs), "runs": runs}
        args.save(doc, markdown(doc))


def run(args: SimpleNamespace) -> Outcome:
    """The gate phase, then the tests phase (``phase`` picks one, keeping the other's last results)."""
    facts = host_facts()
    doc = dict(args.previous or {}) if args.phase != "all" else {}
    doc.update(
        {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": provenance()["commit"],
            "cpu": facts["cpu"],
            "cores": facts["cores"],
            "python": platform.python_version(),
            "host": platform.node(),
            "target": Path(args.target).name,
            "load_avg_at_start": os.getloadavg(),
            "load": "a busy-loop process on one core for the whole run, plus the shared machine's other work",
            "model": f"MLP {'-'.join(map(str, BASE_DIMS))} (testkit.graphs.mlp), batch 1, 1 thread",
            "gate_settings": {"sequential": True, "max_time_s": 60, "max_slowdown": "5%", "confidence": 0.95},
            "pairs": (
                f"one fresh process per pair, NEW and OLD interleaved in it ({SUB_BLOCKS} sub-blocks each, "
                f"A B B A ...), after {FRESH_PAIRS} single-model pairs for memory"
            ),
        }
    )
    with one_core_busy():
        if args.phase in ("all", "gate"):
            gate_phase(args, doc)
        if args.phase in ("all", "tests"):
            tests_phase(args, doc)
    return Outcome(doc, markdown(doc))


def markdown(doc: dict) -> str:
    lines = [
        f"### gate --against, sequential, on a loaded host ({doc['when']}, commit {doc['commit']}, "
        f"{doc['cpu']}, {doc['cores']} cores)",
        "",
        f"Load: {doc['load']}; 1-minute load average {doc['load_avg_at_start'][0]:.1f} at the start. "
        f"Model: {doc['model']}, target `{doc['target']}`. Gate defaults: sequential, cap 60 s, "
        f"max slowdown 5%, 95% one-sided; verdict of the latency checks (p95 and p50 ratios). "
        f"Pairs: {doc.get('pairs', 'one fresh process per block')}.",
        "",
    ]
    cal = doc.get("calibration")
    if cal:
        r = cal["ratios"][str(cal["hidden"])]
        lines += [
            f"Slower model: hidden layers {cal['hidden']} wide instead of 1024; measured NEW/OLD (fixed "
            f"{cal['pairs']} pairs, {cal['min_time_s_per_model']:g} s per model) p50 "
            f"{r['latency_ratio_p50'][0]:.3f} [{r['latency_ratio_p50'][1]:.3f}, {r['latency_ratio_p50'][2]:.3f}], "
            f"p95 {r['latency_ratio_p95'][0]:.3f} [{r['latency_ratio_p95'][1]:.3f}, {r['latency_ratio_p95'][2]:.3f}]. "
            "All widths tried: "
            + "; ".join(
                f"{h}: p50 {v['latency_ratio_p50'][0]:.3f}, p95 {v['latency_ratio_p95'][0]:.3f}"
                for h, v in cal["ratios"].items()
            ),
            "",
        ]
    if doc.get("gate"):
        lines += [
            "| NEW vs OLD | runs | PASS | FAIL | INCONCLUSIVE | median / max run | median pairs | goal |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        goals = {"same model": "PASS >= 19/20, FAIL 0", "~10% slower": "FAIL >= 19/20"}
        for name, row in doc["gate"].items():
            c, runs = row["counts"], row["runs"]
            lines.append(
                f"| {name} | {len(runs)} | {c['pass']} | {c['fail']} | {c['inconclusive']} | "
                f"{row['median_wall_s']:.0f} / {row['max_wall_s']:.0f} s | "
                f"{np.median([r['pairs'] for r in runs]):.0f} | {goals.get(name, '')} |"
            )
        lines.append("")
        for name, row in doc["gate"].items():
            lines.append(f"{name}, run by run (latency verdict, pairs, seconds, p95 / p50 interval):")
            lines.append("")
            for r in row["runs"]:
                ch = r["checks"]
                lines.append(
                    f"- {r['latency_verdict']} ({r['stopped']}), {r['pairs']} pairs, {r['elapsed_s']:.0f} s: "
                    + ", ".join(
                        f"{k[-3:]} {v['ratio']:.3f} [{v['lower']:.3f}, {v['upper']:.3f}]" for k, v in ch.items()
                    )
                    + f"; load {r['load_avg_1m'][0]:.1f}"
                )
            lines.append("")
    t = doc.get("tests")
    if t:
        lines += [f"`{t['command']}` under the same load: **{t['green']} of {len(t['runs'])} green** (goal 10/10).", ""]
        for i, r in enumerate(t["runs"], 1):
            lines.append(
                f"- run {i}: rc {r['rc']}, {r['wall_s']:.0f} s, load {r['load_avg_1m']:.1f}: " + "; ".join(r["summary"])
            )
        lines.append("")
    return "\n".join(lines) + "\n"
