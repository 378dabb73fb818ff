"""How often ``edgeopt gate NEW --against OLD`` cries wolf, and how small a slowdown it catches.

    flock /tmp/edgeopt-bench.lock .venv/bin/python -m benchmarks gate_false_alarms_and_detection [--set runs=20]

The model: an MLP chain of ``LAYERS`` MatMul(256x256) + Add + Relu layers at batch 64 (about 1 ms
at one thread here: long enough not to be dispatch noise). A slowdown is injected by adding layers
of the same kind to the graph (nominal 5%, 10%, 20% of the layer cost); the true slowdown of each
variant is calibrated by measuring it (one long A/B run: ``CAL_PAIRS`` pairs, ``CAL_TIME_S`` s per
model). Then each variant is gated against the base model ``runs`` times with the gate's default
measurement (16 pairs, 2 s per model) and tolerance (``--max-slowdown 5%``), and the verdicts on the
latency checks (p95 and p50 ratios; size, memory and output checks are left out: the variants are
bigger and compute something else) are counted. Goals: 0 FAILs of the model against
itself; at least 19 of 20 runs FAIL the 10% slowdown.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks.suite import Outcome
from edgeopt.runtime.checks import combine
from edgeopt.runtime.compare import DEFAULT_PAIRS, compare
from edgeopt.runtime.host import host_facts
from edgeopt.runtime.onnx_proto import GraphBuilder
from edgeopt.runtime.settings import GATE_SETTINGS

WIDTH, LAYERS, BATCH = 256, 20, 64
VARIANTS = {"same model": 0, "+5%": 1, "+10%": 2, "+20%": 4}  # extra layers (of LAYERS)
NO_AGREEMENT = {"atol": 1e9, "max_top1_disagreement": 1.0}


def chain(extra: int, seed: int = 0) -> GraphBuilder:
    rng = np.random.default_rng(seed)
    g = GraphBuilder("chain")
    h = g.input("x", [BATCH, WIDTH])
    for _ in range(LAYERS + extra):
        h = g.op("MatMul", h, g.const((rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)))
        h = g.op("Add", h, g.const(np.zeros(WIDTH, np.float32)))
        h = g.op("Relu", h)
    g.op("MatMul", h, g.const((rng.standard_normal((WIDTH, 10)) / np.sqrt(WIDTH)).astype(np.float32)), out="y")
    g.output("y", [BATCH, 10])
    return g


def one_run(new: Path, old: Path, target: str, **kw) -> dict:
    t0 = time.perf_counter()
    c = compare(new, old, target, **NO_AGREEMENT, **kw)
    lat = [x for x in c.checks if x.name.startswith("latency_ratio_")]
    return {
        "verdict": combine(lat),
        "wall_s": time.perf_counter() - t0,
        "load_avg_1m": os.getloadavg()[0],
        "checks": {
            x.name: {"ratio": x.measured, "lower": x.lower_bound, "upper": x.upper_bound, "status": x.status}
            for x in lat
        },
        "new_p50_ms": c.new.latency_ms["p50"],
        "old_p50_ms": c.old.latency_ms["p50"],
    }


def run(args: SimpleNamespace) -> Outcome:
    """Each variant gated ``runs`` times against the base model; verdicts counted."""
    variants = {n: VARIANTS[n] for n in ("same model", *args.variants.split(","))}
    paths = {name: chain(extra).save(args.work / f"chain_plus{extra}.onnx") for name, extra in variants.items()}
    base = paths["same model"]
    cal = {}
    for name in variants:
        if name == "same model":
            continue
        c = compare(
            paths[name],
            base,
            args.target,
            pairs=args.cal_pairs,
            settings=GATE_SETTINGS.updated(min_time_s=args.cal_time_s),
            **NO_AGREEMENT,
        )
        cal[name] = {x.name: x.measured for x in c.checks if x.name.startswith("latency_ratio_")}
        print(f"calibration {name}: {cal[name]}", file=sys.stderr, flush=True)
    rows = {}
    for name in variants:
        runs = []
        for i in range(args.runs):
            r = one_run(paths[name], base, args.target)
            runs.append(r)
            print(
                f"{name} run {i + 1}/{args.runs}: {r['verdict']} "
                + " ".join(
                    f"{k[-3:]} {v['ratio']:.3f} [{v['lower']:.3f}, {v['upper']:.3f}]" for k, v in r["checks"].items()
                )
                + f" ({r['wall_s']:.1f} s, load {r['load_avg_1m']:.1f})",
                file=sys.stderr,
                flush=True,
            )
        rows[name] = {
            "extra_layers": variants[name],
            "true_ratio": cal.get(name),
            "counts": {v: sum(r["verdict"] == v for r in runs) for v in ("pass", "fail", "inconclusive")},
            "median_wall_s": float(np.median([r["wall_s"] for r in runs])),
            "runs": runs,
        }
    facts = host_facts()
    doc = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "target": args.target,
        "cpu": facts["cpu"],
        "cores": facts["cores"],
        "python": platform.python_version(),
        "model": f"MLP chain {LAYERS} x MatMul({WIDTH}x{WIDTH})+Add+Relu, batch {BATCH}",
        "gate": {
            "pairs": DEFAULT_PAIRS,
            "min_time_s_per_model": GATE_SETTINGS.min_time_s,
            "max_slowdown": 0.05,
            "confidence": 0.95,
        },
        "calibration": {"pairs": args.cal_pairs, "min_time_s_per_model": args.cal_time_s},
        "variants": rows,
    }
    return Outcome(doc, markdown(doc))


def markdown(doc: dict) -> str:
    g = doc["gate"]
    lines = [
        f"### gate --against: false alarms and detection ({doc['when']}, {doc['cpu']}, {doc['cores']} cores)",
        "",
        f"Model: {doc['model']}; target `{Path(doc['target']).name}`. Each run: `compare(NEW, OLD)` with the "
        f"gate's defaults ({g['pairs']} pairs, {g['min_time_s_per_model']:g} s per model, max slowdown "
        f"{g['max_slowdown']:.0%}, {g['confidence']:.0%} one-sided); verdict of the p95 and p50 latency-ratio "
        f"checks. True ratio: one long A/B run ({doc['calibration']['pairs']} pairs, "
        f"{doc['calibration']['min_time_s_per_model']:g} s per model).",
        "",
        "| NEW vs OLD | true ratio p50 / p95 | PASS | FAIL | INCONCLUSIVE | median run time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in doc["variants"].items():
        t = row["true_ratio"]
        true = "1 (itself)" if t is None else f"{t['latency_ratio_p50']:.3f} / {t['latency_ratio_p95']:.3f}"
        c = row["counts"]
        lines.append(
            f"| {name} | {true} | {c['pass']} | {c['fail']} | {c['inconclusive']} | {row['median_wall_s']:.1f} s |"
        )
    return "\n".join(lines) + "\n"
