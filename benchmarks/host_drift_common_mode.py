"""Does this host's speed move for every model alike, so that a reference micro-model timed beside a
measurement could take the window out of a prediction?

A ``predicted`` target's latency is this host's measured median, transferred: when this host runs slower
for a while, the prediction for the Pi moves with it (the demo's rpi4 p50 spread 50.9 % over five
compiles with one core busy, while the shipped plans were within 7 % of each other on this host). The
obvious fix is a probe: time one of ``edgeopt calibrate``'s micro-models next to the model and divide
the model's median by the probe's slowdown against its calibrated figure. That works only if the
host's drift is common to both. This benchmark measures whether it is.

In one process (1 thread, the calibration's session options), the calibration's reference micro-models
(a chain of 201 Adds, a chain of 101 16x16 MatMuls, a 64x1024x1024 GEMM, a 4 MiB matrix-vector product,
a 32->32 3x3 conv) and six models of the predictor's own benchmark are timed in ``rounds`` rounds, one
short block of each per round (its median), with another core kept busy in every other stretch of
``stretch`` rounds. Per model: the spread of its block medians over the rounds (p90 / p10), as they are
and after dividing each by the same round's probe (relative to the probe's own median). A probe that
tracked the host's drift would shrink every model's spread; one that does not adds its own.

    flock /tmp/edgeopt-bench.lock python -m benchmarks host_drift_common_mode [--set rounds=60]
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks.predictor_error_on_this_host import MODELS as PREDICTOR_MODELS
from benchmarks.suite import Outcome, one_core_busy
from edgeopt.runtime import micromodels as mm
from edgeopt.runtime.inputs import make_feeds
from edgeopt.runtime.session import Runtime, open_session

MODELS = (
    "mlp 64-128-10 (small)",
    "mlp 64-1024-1024-10",
    "mlp lowrank16 64-1024-1024-10",
    "cnn 28x28 (small CNN)",
    "cnn 1-16-32-64 @64x64",
    "many_small (160 nodes)",
)


def probes(rt: Runtime) -> dict[str, tuple[Any, dict[str, np.ndarray]]]:
    """The calibration's reference micro-models: session and inputs, by name."""
    rng = np.random.default_rng(0)
    tiny = {"x": rng.standard_normal((1, 16)).astype(np.float32)}
    return {
        "add chain 201": (open_session(mm.chain(201), rt), tiny),
        "matmul chain 101": (open_session(mm.chain(101, "MatMul"), rt), tiny),
        "gemm 64x1024x1024": (
            open_session(mm.matmul(64, 1024, 1024), rt),
            {"x": rng.standard_normal((64, 1024)).astype(np.float32)},
        ),
        "matvec 4 MiB": (
            open_session(mm.matmul(1, 1024, 1024, seed=4), rt),
            {"x": rng.standard_normal((1, 1024)).astype(np.float32)},
        ),
        "conv 32x32x3x3": (
            open_session(mm.conv(32, 32, 32), rt),
            {"x": rng.standard_normal((1, 32, 32, 32)).astype(np.float32)},
        ),
    }


def block_us(sess: Any, feeds: dict[str, np.ndarray], seconds: float) -> float:
    """The median of one short block of bare runs (µs), after three untimed ones."""
    names = [o.name for o in sess.get_outputs()]
    for _ in range(3):
        sess.run(names, feeds)
    xs: list[int] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(xs) < 20:
        t0 = time.perf_counter_ns()
        sess.run(names, feeds)
        xs.append(time.perf_counter_ns() - t0)
    return statistics.median(xs) / 1e3


def spread(xs: list[float]) -> float:
    """p90 / p10 of ``xs`` (nearest rank)."""
    s = sorted(xs)
    return s[int(0.9 * (len(s) - 1))] / s[int(0.1 * (len(s) - 1))]


def summarize(rounds: list[dict[str, float]], probe_names: list[str]) -> list[dict[str, Any]]:
    """Per timed graph: its spread over the rounds, raw and divided by each probe's drift in the round."""
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    rows = []
    for k in rounds[0]:
        by_probe = {p: spread([r[k] / (r[p] / med[p]) for r in rounds]) for p in probe_names if p != k}
        raw = spread([r[k] for r in rounds])
        best = min(by_probe.values(), default=raw)
        rows.append(
            {"graph": k, "probe": k in probe_names, "median_us": med[k], "raw": raw, "by_probe": by_probe}
            | {"best_probe_spread": best, "shrunk": best < raw}
        )
    return rows


def run(args: SimpleNamespace) -> Outcome:
    """``rounds`` rounds of one block per graph, a core kept busy in every other ``stretch`` rounds."""
    rt = Runtime(intra_op_threads=1, inter_op_threads=1, graph_optimization="all", allow_spinning=True)
    graphs = probes(rt)
    probe_names = list(graphs)
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(MODELS):
            sess = open_session(PREDICTOR_MODELS[name]().save(Path(tmp) / f"m{i}.onnx"), rt)
            graphs[name] = (sess, make_feeds(sess.get_inputs(), batch=1, shapes={}, seed=0))
        rounds: list[dict[str, float]] = []
        for r in range(int(args.rounds)):
            busy = (r // int(args.stretch)) % 2 == 1
            with one_core_busy() if busy else contextlib.nullcontext():
                rounds.append({k: block_us(s, f, float(args.block_s)) for k, (s, f) in graphs.items()})
    rows = summarize(rounds, probe_names)
    models = [x for x in rows if not x["probe"]]
    doc = {"rounds": rounds, "rows": rows, "models_shrunk_by_some_probe": sum(x["shrunk"] for x in models)}
    for p in probe_names:
        doc[f"models_shrunk_by {p}"] = sum(x["by_probe"][p] < x["raw"] for x in models)
    note = (
        f"{doc['models_shrunk_by_some_probe']} of {len(models)} models' spreads shrink with their best probe; "
        + ", ".join(f"{p}: {doc[f'models_shrunk_by {p}']}" for p in probe_names)
    )
    return Outcome(doc, markdown(rows, probe_names, args), notes=[note])


def markdown(rows: list[dict[str, Any]], probe_names: list[str], args: SimpleNamespace) -> str:
    lines = [
        f"{args.rounds} rounds of {args.block_s} s blocks, 1 thread, a core kept busy in every other stretch of "
        f"{args.stretch} rounds. p90 / p10 of each graph's block medians: raw, then divided by each probe's "
        "ratio to its own median in the same round.",
        "",
        "| graph | median µs | raw | " + " | ".join(f"÷ {p}" for p in probe_names) + " |",
        "|---|---:|---:|" + "---:|" * len(probe_names),
    ]
    for x in rows:
        cells = [f"{x['by_probe'][p]:.3f}" if p in x["by_probe"] else "–" for p in probe_names]
        lines.append(f"| {x['graph']} | {x['median_us']:.1f} | {x['raw']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["MODELS", "run", "spread", "summarize"]
