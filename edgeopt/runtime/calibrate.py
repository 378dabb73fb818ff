"""``edgeopt calibrate``: measure this machine's roofline with fixed reference micro-models.

Micro-models, built in memory (no file, no onnx package), run with the given thread count:
- dispatch: chains of tiny Add nodes, 1 and 201 long (slope: per-node cost, intercept: per-run cost
  of ``session.run``), and a chain of 101 tiny MatMuls (the dispatch cost of a GEMM-class kernel);
- compute: a 64x1024 @ 1024x1024 fp32 MatMul (134 MFLOP), sustained GFLOP/s; a 32->32 channel
  3x3 Conv on 32x32 (19 MFLOP), the convolution rate; a uint8 64x1024 @ int8 1024x1024
  MatMulInteger and a 16->32 QLinearConv, the int8 GEMM and conv rates (GOP/s) on this CPU's ISA;
- bandwidth: 1xK @ KxN fp32 matrix-vector products, memory-bound, with weights of 1, 4, 16, 32 and
  64 MiB: a curve of streaming bandwidth against working set (L2, last-level cache, DRAM).

Robust to a loaded machine: every micro-model is timed in short blocks, interleaved with the others
round after round, so a burst of other work hits all of them alike; each block gives its median
(the p50 is what the predictor is checked against), and a figure is the median over rounds. The
run's ``noise`` is the largest relative spread (1.48 x MAD / median) of a micro-model's round
medians: one disturbed figure (the DRAM bandwidth, say) spoils every prediction it feeds, so the
worst one is what counts. A run noisier than the cached calibration (by more than
``NOISIER_BY``) does not replace it unless forced (:func:`refusal`).
The host's result is cached (``edgeopt._io.cache_dir()``: ``$EDGEOPT_CACHE_DIR`` or
``~/.cache/edgeopt``) per CPU model, onnxruntime version and thread count.

``calibrate()`` returns a :class:`Calibration`: the :class:`~edgeopt.runtime.perf.PerfModel` it
measured and where and how (CPU, threads, onnxruntime version, date). Its JSON (``to_dict``, the
cache and ``edgeopt calibrate --json``) keeps the performance model's keys flat, as a profile's
``[device]`` table does.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt._io import atomic_write_text, cache_dir
from edgeopt.runtime import stats
from edgeopt.runtime.host import host_facts
from edgeopt.runtime.micromodels import chain as _chain
from edgeopt.runtime.micromodels import conv as _conv
from edgeopt.runtime.micromodels import matmul as _matmul
from edgeopt.runtime.micromodels import matmul_int8 as _matmul_int8
from edgeopt.runtime.micromodels import qconv as _qconv
from edgeopt.runtime.perf import PerfModel
from edgeopt.runtime.session import Runtime, open_session

log = logging.getLogger("edgeopt.calibrate")
CACHE_VERSION = 3
NOISIER_BY = 1.25  # a new run must be this many times noisier than the cached one to be refused
#: (working-set MiB, K, N) of the bandwidth curve's matrix-vector products
BANDWIDTH_POINTS = ((1, 512, 512), (4, 1024, 1024), (16, 2048, 2048), (32, 4096, 2048), (64, 4096, 4096))


@dataclass(frozen=True)
class Calibration:
    """What ``edgeopt calibrate`` measured (``perf``) and under which conditions."""

    perf: PerfModel
    threads: int
    allow_spinning: bool
    arch: str
    cpu: str
    isa: tuple[str, ...]
    onnxruntime: str
    when: str
    seconds: float
    noise: float | None = None  # largest relative spread of a micro-model over the rounds; None: not recorded

    @property
    def source(self) -> str:
        """A profile's ``perf_source`` for this measurement."""
        return f"edgeopt calibrate on this host ({self.when})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: the performance model's flat keys, then the conditions."""
        return {
            **self.perf.to_dict(),
            "threads": self.threads,
            "allow_spinning": self.allow_spinning,
            "arch": self.arch,
            "cpu": self.cpu,
            "isa": list(self.isa),
            "onnxruntime": self.onnxruntime,
            "when": self.when,
            "seconds": self.seconds,
            "noise": self.noise,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            PerfModel.from_mapping(data),
            int(data["threads"]),
            bool(data.get("allow_spinning", True)),
            str(data["arch"]),
            str(data["cpu"]),
            tuple(data.get("isa") or ()),
            str(data["onnxruntime"]),
            str(data["when"]),
            float(data.get("seconds", 0.0)),
            None if data.get("noise") is None else float(data["noise"]),
        )


def _block_us(sess: Any, names: list[str], feeds: dict[str, np.ndarray], seconds: float, min_runs: int) -> float:
    """Median of a short block of bare ``session.run`` calls, in microseconds (the p50 is what
    the predictor is checked against)."""
    samples = []
    start = time.perf_counter()
    while len(samples) < min_runs or (time.perf_counter() - start < seconds and len(samples) < 5000):
        t0 = time.perf_counter_ns()
        sess.run(names, feeds)
        samples.append((time.perf_counter_ns() - t0) / 1e3)
    samples.sort()
    return samples[len(samples) // 2]


def _time_all(
    jobs: dict[str, tuple[Any, dict[str, np.ndarray]]], *, budget_s: float, rounds: int = 7
) -> tuple[dict[str, float], dict[str, float]]:
    """Median over interleaved rounds of each job's block median, in microseconds, and each job's
    noise: the relative spread of its round medians (1.48 x MAD / median, ``stats.dispersion``)."""
    names = {k: [o.name for o in s.get_outputs()] for k, (s, _) in jobs.items()}
    for k, (sess, feeds) in jobs.items():
        for _ in range(3):
            sess.run(names[k], feeds)
    per_block = budget_s / (rounds * len(jobs))
    got: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(rounds):
        for k, (sess, feeds) in jobs.items():
            got[k].append(_block_us(sess, names[k], feeds, per_block, min_runs=3))
    medians = {k: statistics.median(v) for k, v in got.items()}
    return medians, {k: stats.dispersion(v).relative_spread for k, v in got.items()}


#: the micro-models' sizes: a 64x1024 @ 1024x1024 GEMM (short runs, ~1 ms: a time slice lost to other
#: work spoils few of them), chains of 201 Adds and 101 MatMuls, a 32->32 3x3 conv on 32x32, and a
#: 16->32 QLinearConv (reduction 16x3x3 = perf.INT8_CONV_REF_K)
_M, _K, _N = 64, 1024, 1024
_N_LONG, _N_MM = 201, 101
_C_IN, _C_OUT, _SIZE, _Q_IN = 32, 32, 32, 16


def calibrate(threads: int = 0, *, allow_spinning: bool = True, budget_s: float = 2.0) -> Calibration:
    """Measure this machine's performance model (gflops, conv_gflops, int8_gops, mem_bandwidth_gbs,
    bandwidth_curve, op_overhead_us, matmul_overhead_us, run_overhead_us) at ``threads``."""
    import onnxruntime as ort

    t_start = time.perf_counter()
    runtime = Runtime(
        intra_op_threads=threads, inter_op_threads=1, graph_optimization="all", allow_spinning=allow_spinning
    )
    timings, noise = _time_all(_jobs(runtime), budget_s=budget_s)
    facts = host_facts()
    return Calibration(
        _perf_model(timings, tuple(facts["isa"])),
        threads,
        allow_spinning,
        facts["arch"],
        facts["cpu"],
        tuple(facts["isa"]),
        ort.__version__,
        _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        round(time.perf_counter() - t_start, 2),
        round(max(noise.values()), 4),
    )


def _jobs(runtime: Runtime) -> dict[str, tuple[Any, dict[str, np.ndarray]]]:
    """Every micro-model's session and its inputs, by name."""
    rng = np.random.default_rng(0)

    def sess(model: bytes) -> Any:
        return open_session(model, runtime)

    tiny = {"x": rng.standard_normal((1, 16)).astype(np.float32)}
    jobs: dict[str, tuple[Any, dict[str, np.ndarray]]] = {
        "short": (sess(_chain(1)), tiny),
        "long": (sess(_chain(_N_LONG)), tiny),
        "mm_chain": (sess(_chain(_N_MM, "MatMul")), tiny),
        "gemm": (sess(_matmul(_M, _K, _N)), {"x": rng.standard_normal((_M, _K)).astype(np.float32)}),
        "int8": (sess(_matmul_int8(_M, _K, _N)), {"x": rng.integers(0, 256, (_M, _K), dtype=np.uint8)}),
        "conv": (
            sess(_conv(_C_IN, _C_OUT, _SIZE)),
            {"x": rng.standard_normal((1, _C_IN, _SIZE, _SIZE)).astype(np.float32)},
        ),
        "qconv": (
            sess(_qconv(_Q_IN, _C_OUT, _SIZE)),
            {"x": rng.integers(0, 256, (1, _Q_IN, _SIZE, _SIZE), dtype=np.uint8)},
        ),
    }
    for mb, kk, nn in BANDWIDTH_POINTS:
        jobs[f"bw{mb}"] = (sess(_matmul(1, kk, nn, seed=mb)), {"x": rng.standard_normal((1, kk)).astype(np.float32)})
    return jobs


def _perf_model(t: dict[str, float], isa: tuple[str, ...]) -> PerfModel:
    """The performance model from the micro-models' median times (us)."""
    op_overhead = max((t["long"] - t["short"]) / (_N_LONG - 1), 0.05)
    run_overhead = max(t["short"] - op_overhead, 0.0)
    # tiny 16x16 MatMuls: dispatch only (their 1 KiB weights are nothing at cache bandwidth)
    mm_overhead = max((t["mm_chain"] - run_overhead) / _N_MM, op_overhead)
    fixed = run_overhead + mm_overhead
    gemm_ops = 2.0 * _M * _K * _N
    gflops = gemm_ops / max(t["gemm"] - fixed, 1e-3) / 1e3
    int8_gops = gemm_ops / max(t["int8"] - fixed, 1e-3) / 1e3
    # the conv may run as ReorderInput + NchwcConv + ReorderOutput: two more small nodes
    conv_gflops = 2.0 * _C_OUT * _SIZE * _SIZE * _C_IN * 9 / max(t["conv"] - fixed - 2 * op_overhead, 1e-3) / 1e3
    # QLinearConv may run as Transpose + NHWC QLinearConv + Transpose
    int8_conv_gops = 2.0 * _C_OUT * _SIZE * _SIZE * _Q_IN * 9 / max(t["qconv"] - fixed - 2 * op_overhead, 1e-3) / 1e3
    curve = []
    for mb, kk, nn in BANDWIDTH_POINTS:
        moved = 4.0 * (kk * nn + kk + nn)
        curve.append((float(mb), round(moved / max(t[f"bw{mb}"] - fixed, 1e-3) / 1e3, 2)))
    bw = dict(curve)
    return PerfModel(
        gflops=round(gflops, 2),
        mem_bandwidth_gbs=bw[4],
        op_overhead_us=round(op_overhead, 3),
        run_overhead_us=round(run_overhead, 3),
        cache_mb=_llc_mb(),
        dram_bandwidth_gbs=min(bw[64], bw[4]),
        matmul_overhead_us=round(mm_overhead, 3),
        conv_gflops=round(conv_gflops, 2),
        int8_gops=round(int8_gops, 2),
        int8_conv_gops=round(int8_conv_gops, 2),
        bandwidth_curve=tuple(curve),
        isa=isa,
    )


def _llc_mb() -> float | None:
    """Size of the largest CPU cache Linux reports, in MiB."""
    best = 0.0
    for p in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = p.read_text().strip().upper()
            best = max(
                best,
                float(text[:-1]) / 1024
                if text.endswith("K")
                else float(text[:-1])
                if text.endswith("M")
                else float(text) / 2**20,
            )
        except (OSError, ValueError):
            continue
    return best or None


def snippet(cal: Calibration) -> str:
    """The ``[device]`` lines to paste into a target profile."""
    perf = cal.perf
    threads = cal.threads or "onnxruntime default"
    lines = [
        f"# measured by `edgeopt calibrate` on {cal.cpu} ({cal.arch}), onnxruntime {cal.onnxruntime}, "
        f"{threads} intra-op threads, {cal.when}"
    ]
    lines += [f"{k} = {getattr(perf, k)}" for k in ("gflops", "mem_bandwidth_gbs", "op_overhead_us", "run_overhead_us")]
    if perf.cache_mb:
        lines += [f"dram_bandwidth_gbs = {perf.dram_bandwidth_gbs}", f"cache_mb = {perf.cache_mb}"]
    lines += [
        f"{k} = {getattr(perf, k)}"
        for k in ("matmul_overhead_us", "conv_gflops", "int8_gops", "int8_conv_gops")
        if getattr(perf, k)
    ]
    if perf.bandwidth_curve:
        lines.append(
            f"bandwidth_curve = {json.dumps([list(p) for p in perf.bandwidth_curve])}  # [working set MiB, GB/s]"
        )
    lines += ["calibrated = true", f'perf_source = "edgeopt calibrate, {cal.when}"']
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- cache
def _cache_key(threads: int, allow_spinning: bool = True) -> str:
    import onnxruntime as ort

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


def cached_calibration(threads: int, allow_spinning: bool = True) -> Calibration | None:
    """This host's cached calibration at ``threads``, or None (absent, or unreadable)."""
    entry = _read_cache().get(_cache_key(threads, allow_spinning))
    try:
        return Calibration.from_dict(entry) if isinstance(entry, dict) else None
    except (KeyError, TypeError, ValueError):  # an entry from a hand-edited or older file: calibrate again
        return None


def save_calibration(cal: Calibration) -> Path | None:
    """Add ``cal`` to the cache file (atomically); None when it cannot be written."""
    data = _read_cache()
    data[_cache_key(cal.threads, cal.allow_spinning)] = cal.to_dict()
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, json.dumps(data, indent=1))
    except OSError as exc:  # a read-only home costs a re-calibration next time, nothing more
        log.warning("warning: cannot write the calibration cache %s: %s", path, exc)
        return None


def refusal(cal: Calibration) -> str | None:
    """Why ``cal`` must not replace the cached calibration (one line, with how to force it), or None:
    it may, being no noisier than the cached one (by ``NOISIER_BY``), or there being none to compare."""
    cached = cached_calibration(cal.threads, cal.allow_spinning)
    if cached is None or cached.noise is None or cal.noise is None or cal.noise <= NOISIER_BY * cached.noise:
        return None
    return (
        f"not cached: this run's noise {cal.noise:.3f} (largest relative spread of a micro-model over its rounds) "
        f"is over {NOISIER_BY:g}x the cached calibration's {cached.noise:.3f} ({cached.when}), which stays in use; "
        f"calibrate again on a quieter host, or pass --force to replace it"
    )


def host_calibration(threads: int, allow_spinning: bool = True) -> Calibration:
    """This host's calibration at ``threads``: from the cache, or measured now (5-15 s) and cached."""
    cal = cached_calibration(threads, allow_spinning)
    if cal is None:
        log.info(
            "calibrating this host (%s intra-op threads, 5-15 s, once; cached in %s)",
            threads or "default",
            _cache_file(),
        )
        cal = calibrate(threads, allow_spinning=allow_spinning)
        save_calibration(cal)
    return cal


__all__ = [
    "Calibration",
    "calibrate",
    "snippet",
    "cached_calibration",
    "save_calibration",
    "host_calibration",
    "refusal",
    "BANDWIDTH_POINTS",
    "NOISIER_BY",
]
