"""``edgeopt calibrate``: measure this machine's roofline with fixed reference micro-models.

Three micro-models, built in memory (no file, no onnx package), run with the given thread count:
- dispatch: a chain of tiny Add nodes, 1 and 201 long; the slope is the per-node cost, the
  intercept the per-run cost of ``session.run``;
- compute: a 256x1024 @ 1024x1024 fp32 MatMul (537 MFLOP), sustained GFLOP/s;
- bandwidth: a 1x2048 @ 2048x1024 fp32 matrix-vector product, memory-bound: it streams an 8 MiB
  weight per run, the working-set size of a typical edge model, so on a host with a large
  last-level cache this is cache bandwidth, as it is for the models benchmarked here.
The host's result is cached (``$EDGEOPT_CACHE_DIR`` or ``~/.cache/edgeopt``) per CPU model,
onnxruntime version and thread count.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.runtime.onnx_proto import GraphBuilder

log = logging.getLogger("edgeopt.calibrate")
CACHE_VERSION = 2


def _chain(n: int) -> bytes:
    g = GraphBuilder("dispatch")
    x = g.input("x", [1, 16])
    c = g.const(np.full((1, 16), 1e-3, np.float32))
    for i in range(n):
        x = g.op("Add", x, c, out="y" if i == n - 1 else None)
    g.output("y", [1, 16])
    return g.to_bytes()


def _matmul(m: int, k: int, n: int, seed: int = 0) -> bytes:
    g = GraphBuilder("matmul")
    x = g.input("x", [m, k])
    w = g.const(np.random.default_rng(seed).standard_normal((k, n)).astype(np.float32))
    g.op("MatMul", x, w, out="y")
    g.output("y", [m, n])
    return g.to_bytes()


def _session(ort: Any, model: bytes, threads: int, spinning: bool) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _time_us(sess: Any, feeds: dict[str, np.ndarray], *, budget_s: float, min_runs: int = 5) -> float:
    """Latency in microseconds of a bare run loop: the best of three blocks' lower quartiles. A
    roofline describes what the machine sustains; on a shared machine the slow tail is other work."""
    names = [o.name for o in sess.get_outputs()]
    for _ in range(3):
        sess.run(names, feeds)
    best = float("inf")
    for _block in range(3):
        samples = []
        start = time.perf_counter()
        while len(samples) < min_runs or (time.perf_counter() - start < budget_s / 3 and len(samples) < 20000):
            t0 = time.perf_counter_ns()
            sess.run(names, feeds)
            samples.append((time.perf_counter_ns() - t0) / 1e3)
        samples.sort()
        best = min(best, samples[len(samples) // 4])
    return best


def calibrate(threads: int = 0, *, allow_spinning: bool = True, budget_s: float = 0.3) -> dict[str, Any]:
    """Measure gflops, mem_bandwidth_gbs, op_overhead_us and run_overhead_us on this machine."""
    import onnxruntime as ort

    from edgeopt.runtime.targets import host_facts

    t_start = time.perf_counter()
    rng = np.random.default_rng(0)
    tiny = {"x": rng.standard_normal((1, 16)).astype(np.float32)}
    short, n_long = _time_us(_session(ort, _chain(1), threads, allow_spinning), tiny, budget_s=budget_s), 201
    long = _time_us(_session(ort, _chain(n_long), threads, allow_spinning), tiny, budget_s=budget_s)
    op_overhead = max((long - short) / (n_long - 1), 0.05)
    run_overhead = max(short - op_overhead, 0.0)

    m, k, n = 256, 1024, 1024
    x = {"x": rng.standard_normal((m, k)).astype(np.float32)}
    t = _time_us(_session(ort, _matmul(m, k, n), threads, allow_spinning), x, budget_s=budget_s, min_runs=5)
    gflops = 2.0 * m * k * n / max(t - run_overhead - op_overhead, 1e-3) / 1e3

    k2, n2 = 2048, 1024
    x = {"x": rng.standard_normal((1, k2)).astype(np.float32)}
    t = _time_us(_session(ort, _matmul(1, k2, n2, seed=1), threads, allow_spinning), x, budget_s=budget_s)
    moved = 4.0 * (k2 * n2 + k2 + n2)
    bandwidth = moved / max(t - run_overhead - op_overhead, 1e-3) / 1e3

    # DRAM: a 64 MiB weight, beyond the last-level cache of any edge device and most hosts
    k3, n3 = 4096, 4096
    x = {"x": rng.standard_normal((1, k3)).astype(np.float32)}
    t = _time_us(_session(ort, _matmul(1, k3, n3, seed=2), threads, allow_spinning), x, budget_s=budget_s, min_runs=6)
    dram = 4.0 * (k3 * n3 + k3 + n3) / max(t - run_overhead - op_overhead, 1e-3) / 1e3

    facts = host_facts()
    return {
        "gflops": round(gflops, 2),
        "mem_bandwidth_gbs": round(bandwidth, 2),
        "op_overhead_us": round(op_overhead, 3),
        "run_overhead_us": round(run_overhead, 3),
        "dram_bandwidth_gbs": round(min(dram, bandwidth), 2),
        "cache_mb": _llc_mb(),
        "threads": threads,
        "allow_spinning": allow_spinning,
        "arch": facts["arch"],
        "cpu": facts["cpu"],
        "onnxruntime": ort.__version__,
        "when": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "seconds": round(time.perf_counter() - t_start, 2),
    }


def _llc_mb() -> float | None:
    """Size of the largest CPU cache Linux reports, in MiB."""
    best = 0.0
    for p in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = p.read_text().strip().upper()
            best = max(best, float(text[:-1]) / 1024 if text.endswith("K") else float(text[:-1]) if text.endswith("M") else float(text) / 2**20)
        except (OSError, ValueError):
            continue
    return best or None


def snippet(cal: dict[str, Any]) -> str:
    """The ``[device]`` lines to paste into a target profile."""
    threads = cal["threads"] or "onnxruntime default"
    return (
        f"# measured by `edgeopt calibrate` on {cal['cpu']} ({cal['arch']}), onnxruntime {cal['onnxruntime']}, "
        f"{threads} intra-op threads, {cal['when']}\n"
        f"gflops = {cal['gflops']}\n"
        f"mem_bandwidth_gbs = {cal['mem_bandwidth_gbs']}\n"
        f"op_overhead_us = {cal['op_overhead_us']}\n"
        f"run_overhead_us = {cal['run_overhead_us']}\n"
        + (f"dram_bandwidth_gbs = {cal['dram_bandwidth_gbs']}\ncache_mb = {cal['cache_mb']}\n" if cal.get("cache_mb") else "")
        + "calibrated = true\n"
        f"perf_source = \"edgeopt calibrate, {cal['when']}\"\n"
    )


# --------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    env = os.environ.get("EDGEOPT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeopt"


def _cache_key(threads: int, allow_spinning: bool = True) -> str:
    import onnxruntime as ort

    from edgeopt.runtime.targets import host_facts

    f = host_facts()
    return f"v{CACHE_VERSION}|{f['arch']}|{f['cpu']}|ort{ort.__version__}|threads{threads}|spin{int(allow_spinning)}"


def _cache_file() -> Path:
    return cache_dir() / "calibration.json"


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def cached_calibration(threads: int, allow_spinning: bool = True) -> dict[str, Any] | None:
    return _read_cache().get(_cache_key(threads, allow_spinning))


def save_calibration(cal: dict[str, Any]) -> Path | None:
    data = _read_cache()
    data[_cache_key(cal["threads"], cal.get("allow_spinning", True))] = cal
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".calibration-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
        return path
    except OSError as exc:  # a read-only home costs a re-calibration next time, nothing more
        log.warning("warning: cannot write the calibration cache %s: %s", path, exc)
        return None


def host_calibration(threads: int, allow_spinning: bool = True) -> dict[str, Any]:
    """This host's calibration at ``threads``: from the cache, or measured now (about a second) and cached."""
    cal = cached_calibration(threads, allow_spinning)
    if cal is None:
        log.info("calibrating this host (%s intra-op threads, once; cached in %s)", threads or "default", _cache_file())
        cal = calibrate(threads, allow_spinning=allow_spinning)
        save_calibration(cal)
    return cal
