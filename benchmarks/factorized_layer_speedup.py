"""Single-layer latency in onnxruntime: dense vs lowrank vs tt at several ranks.

Linear 256x256, 1024x1024, 4096x4096 and Conv2d 64->64 3x3 on 32x32; 1 thread; batch 1 and 32;
median of many runs. Weights are random (latency does not depend on them), so no SVD is run.

Each row also gets a floor: what the nodes onnxruntime actually runs (from its profiler) cost at this
host's calibrated rates -- per-run and per-node dispatch plus max(FLOPs / GFLOP/s, bytes / GB/s)
(edgeopt.runtime.predict, 1-thread calibration) -- and "x floor" = achieved / floor.

    flock /tmp/edgeopt-bench.lock python -m benchmarks factorized_layer_speedup [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from benchmarks.suite import Outcome
from edgeopt.compiler.decompose import decomposable_layers
from edgeopt.compiler.export import export_onnx, onnx_node_count
from edgeopt.compiler.formats import DEFAULT_FORMAT, get_handler, parse_config
from edgeopt.compiler.layers import LowRankConv, LowRankLinear, TTConv, TTLinear
from edgeopt.runtime.bench import run_child
from edgeopt.runtime.calibrate import calibrate
from edgeopt.runtime.predict import PerfModel, run_cost_us
from edgeopt.runtime.session import Runtime, open_session

CASES = [
    ("Linear 256x256", lambda: nn.Linear(256, 256), (256,), [4, 16, 64], [4, 8, 16, 32]),
    ("Linear 1024x1024", lambda: nn.Linear(1024, 1024), (1024,), [4, 16, 64], [4, 8, 16, 32]),
    ("Linear 4096x4096", lambda: nn.Linear(4096, 4096), (4096,), [4, 16, 64], [4, 8, 16, 32]),
    ("Conv2d 64->64 3x3 @32x32", lambda: nn.Conv2d(64, 64, 3, padding=1), (64, 32, 32), [8, 16, 32], [8, 16, 32]),
]


def build(layer: nn.Module, spec, fmt: str, rank: int) -> tuple[nn.Module, tuple[int, ...]]:
    """The module decompose() would build, with random weights (same shapes, same sweep order).

    Built directly from the format's layer classes: an SVD / TT-SVD of a 4096x4096 weight would
    only slow the sweep down, and latency does not depend on the weights."""
    if fmt == DEFAULT_FORMAT:
        return layer, ()
    ranks = get_handler(fmt).cost(spec, parse_config(get_handler(fmt).plan_entry(rank))).ranks
    if fmt == "lowrank":
        mod = (
            LowRankLinear(spec.in_size, spec.out_size, ranks[1])
            if spec.kind == "linear"
            else LowRankConv(layer, ranks[1])
        )
    elif spec.kind == "linear":
        mod = TTLinear(spec.in_size, spec.out_size, spec.tt_in_modes, spec.tt_out_modes, ranks)
    else:
        mod = TTConv(layer, ranks)
    return mod, ranks


def time_us(path: Path, x: np.ndarray, budget_s: float = 0.4) -> float:
    sess = open_session(path, Runtime(intra_op_threads=1, inter_op_threads=1))
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(5):
        sess.run(None, feed)
    t = time.perf_counter()
    sess.run(None, feed)
    one = time.perf_counter() - t
    n = int(min(3000, max(20, budget_s / max(one, 1e-6))))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def floor_us(path: Path, batch: int, host: PerfModel) -> float:
    """Dispatch + FLOPs + bytes of the graph onnxruntime runs, at the host's calibrated rates."""
    out = run_child(
        {
            "model": str(path),
            "intra_op_threads": 1,
            "batch": batch,
            "min_iters": 1,
            "min_time_s": 0.0,
            "warmup": 1,
            "profile": True,
        },
        timeout_s=300,
    )
    return run_cost_us(out["nodes"] or [], host)


def run(args: SimpleNamespace) -> Outcome:
    """Every case in ``CASES`` (those named in ``layers``, comma-separated), every format and rank."""
    budget = args.budget_s
    cases = [c for c in CASES if args.layers == "all" or c[0] in args.layers.split(",")]
    torch.manual_seed(0)
    host = PerfModel.of(calibrate(1))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for title, make, shape, lr_ranks, tt_ranks in cases:
            layer = make().eval()
            spec = decomposable_layers(nn.Sequential(layer), (1, *shape))["0"]
            dense_b1 = None
            for fmt, ranks in (("dense", [None]), ("lowrank", lr_ranks), ("tt", tt_ranks)):
                for rank in ranks:
                    mod, actual = build(layer, spec, fmt, rank)
                    mod = nn.Sequential(mod).eval()
                    x1 = torch.randn(1, *shape)
                    path = export_onnx(mod, x1, Path(d) / "m.onnx")
                    handler = get_handler(fmt)
                    cost = handler.cost(spec, parse_config(handler.plan_entry(rank)))
                    b1 = time_us(path, x1.numpy(), budget)
                    b32 = time_us(path, torch.randn(32, *shape).numpy(), budget)
                    f1, f32 = floor_us(path, 1, host), floor_us(path, 32, host)
                    dense_b1 = dense_b1 or b1
                    row = {
                        "layer": title,
                        "format": fmt,
                        "rank": rank,
                        "ranks": list(actual),
                        "params": cost.params,
                        "macs": cost.macs,
                        "nodes": onnx_node_count(path),
                        "p50_us_b1": round(b1, 1),
                        "p50_us_b32": round(b32, 1),
                        "speedup_b1": round(dense_b1 / b1, 2),
                        "floor_us_b1": round(f1, 1),
                        "floor_us_b32": round(f32, 1),
                        "x_floor_b1": round(b1 / f1, 2),
                        "x_floor_b32": round(b32 / f32, 2),
                    }
                    if fmt == "tt" and spec.kind == "linear":
                        row["modes"] = [list(spec.tt_in_modes), list(spec.tt_out_modes)]
                    rows.append(row)
                    print(
                        f"{title:26s} {fmt:8s} {str(rank or ''):>4s} params {cost.params:>9d} macs {cost.macs:>11d} "
                        f"nodes {row['nodes']:>2d}  b1 {b1:9.1f} us  b32 {b32:9.1f} us  x{row['speedup_b1']:.2f}  "
                        f"floor b1 {f1:8.1f} us (x{b1 / f1:.2f})  b32 {f32:8.1f} us (x{b32 / f32:.2f})",
                        flush=True,
                    )
    lines = [
        (
            "| layer | format | rank | params | MACs/sample | ONNX nodes | p50 batch 1 (µs) | p50 batch 32 (µs) "
            "| speed-up vs dense, batch 1 | floor b1 (µs) | × floor b1 | floor b32 (µs) | × floor b32 |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['format']} | {r['rank'] or ''} | {r['params']:,} | {r['macs']:,} | {r['nodes']} | "
            f"{r['p50_us_b1']:.1f} | {r['p50_us_b32']:.1f} | {r['speedup_b1']:.2f}× | {r['floor_us_b1']:.1f} | "
            f"{r['x_floor_b1']:.2f}× | {r['floor_us_b32']:.1f} | {r['x_floor_b32']:.2f}× |"
        )
    lines += ["", "How far each format is from its floor (achieved / floor, median over rows [min-max]):", ""]
    for fmt in ("dense", "lowrank", "tt"):
        for key in ("x_floor_b1", "x_floor_b32"):
            xs = sorted(r[key] for r in rows if r["format"] == fmt)
            lines.append(
                f"- {fmt} batch {key.split('_b')[1]:>2s}: x{statistics.median(xs):.2f} "
                f"[{xs[0]:.2f}-{xs[-1]:.2f}] over {len(xs)} rows"
            )
    tt4 = [r for r in rows if r["layer"] == "Linear 4096x4096" and r["format"] == "tt" and r["rank"] == 4]
    if tt4:
        lines += ["", f"TT rank 4 on 4096x4096, batch 1: {tt4[0]['speedup_b1']:.1f}x faster than dense (goal >= 20x)"]
    return Outcome(rows, "\n".join(lines) + "\n")
