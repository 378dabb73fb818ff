"""The measurement child process: ``python -m edgeopt.runtime._worker`` reads a JSON job on stdin
and writes one JSON result on stdout.

A fresh process per measurement keeps one model's allocator state, thread pools and caches from
leaking into the next, and makes the memory figure the model's own. The timed loop is a bare
``session.run`` between two ``perf_counter_ns`` calls, nothing else.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from typing import Any

_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class _Fail(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the peak measured later is this model's."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_bytes(reset_ok: bool) -> int:
    if reset_ok:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _options(ort: Any, job: dict[str, Any]) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(job.get("intra_op_threads", 0))
    so.inter_op_num_threads = int(job.get("inter_op_threads", 1))
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _GRAPH_OPT[job.get("graph_optimization", "all")])
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL if int(job.get("inter_op_threads", 1)) <= 1 \
        else ort.ExecutionMode.ORT_PARALLEL
    spin = "1" if job.get("allow_spinning", True) else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    so.log_severity_level = 3
    return so


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:400]
    return type(exc).__name__


def _profile(ort: Any, job: dict[str, Any], providers: list[str], feeds: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-node shapes and sizes of the optimized graph that actually runs, from onnxruntime's profiler.

    Weight prepacking is disabled for this session only: prepacked weights drop out of the
    profiler's input shapes and parameter sizes, and the roofline needs them.
    """
    so = _options(ort, job)
    so.enable_profiling = True
    tmp = tempfile.mkdtemp(prefix="edgeopt-prof-")
    so.profile_file_prefix = os.path.join(tmp, "p")
    so.add_session_config_entry("session.disable_prepacking", "1")
    sess = ort.InferenceSession(job["model"], so, providers=providers)
    runs = 2
    for _ in range(runs):
        sess.run(None, feeds)
    path = sess.end_profiling()
    try:
        with open(path) as fh:
            events = json.load(fh)
    finally:
        try:
            os.remove(path)
            os.rmdir(tmp)
        except OSError:
            pass
    nodes = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    per_run = len(nodes) // runs if nodes else 0
    out = []
    for e in nodes[len(nodes) - per_run:]:  # the last run: warm caches, as in the timed loop
        a = e.get("args", {})
        out.append({
            "name": e["name"][: -len("_kernel_time")],
            "op": a.get("op_name", ""),
            "inputs": [list(d.values())[0] for d in a.get("input_type_shape", []) if d],
            "input_types": [list(d.keys())[0] for d in a.get("input_type_shape", []) if d],
            "outputs": [list(d.values())[0] for d in a.get("output_type_shape", []) if d],
            "activation_bytes": int(a.get("activation_size", 0) or 0),
            "parameter_bytes": int(a.get("parameter_size", 0) or 0),
            "output_bytes": int(a.get("output_size", 0) or 0),
            "dur_us": float(e.get("dur", 0)),
        })
    return out


def run(job: dict[str, Any]) -> dict[str, Any]:
    t_start = time.perf_counter()
    import numpy as np  # noqa: F401  (imported before the memory baseline, as an app would)
    import onnxruntime as ort

    from edgeopt.errors import InputError
    from edgeopt.runtime.inputs import make_feeds

    warnings: list[str] = []
    available = ort.get_available_providers()
    providers = [p for p in job.get("providers", ["CPUExecutionProvider"]) if p in available]
    missing = [p for p in job.get("providers", []) if p not in available]
    if missing:
        warnings.append(f"execution provider(s) {', '.join(missing)} not available in this onnxruntime "
                        f"build ({', '.join(available)}); falling back to "
                        f"{', '.join(providers) if providers else 'CPUExecutionProvider'}")
    if not providers:
        providers = ["CPUExecutionProvider"]
    import_s = time.perf_counter() - t_start

    rss_before = _rss_bytes()
    reset_ok = _reset_peak()
    t0 = time.perf_counter_ns()
    try:
        sess = ort.InferenceSession(job["model"], _options(ort, job), providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad models
        raise _Fail("model", f"onnxruntime cannot load the model: {_first_line(exc)}") from None
    session_create_ms = (time.perf_counter_ns() - t0) / 1e6
    try:
        feeds = make_feeds(sess.get_inputs(), batch=int(job.get("batch", 1)), shapes=job.get("shapes") or {},
                           seed=int(job.get("seed", 0)))
    except InputError as exc:
        raise _Fail("input", str(exc)) from None
    out_names = [o.name for o in sess.get_outputs()]
    run = sess.run
    t0 = time.perf_counter_ns()
    try:
        run(out_names, feeds)
    except Exception as exc:
        raise _Fail("model", f"onnxruntime cannot run the model on generated inputs: {_first_line(exc)}") from None
    first_ms = (time.perf_counter_ns() - t0) / 1e6

    for _ in range(int(job.get("warmup", 10))):
        run(out_names, feeds)
    min_iters, max_iters = int(job.get("min_iters", 100)), int(job.get("max_iters", 10000))
    min_time_ns = float(job.get("min_time_s", 1.0)) * 1e9
    samples = []
    append, clock = samples.append, time.perf_counter_ns
    loop_start = clock()
    while len(samples) < max_iters:
        t0 = clock()
        run(out_names, feeds)
        t1 = clock()
        append(t1 - t0)
        if len(samples) >= min_iters and t1 - loop_start >= min_time_ns:
            break
    loop_s = (clock() - loop_start) / 1e9
    peak = _peak_bytes(reset_ok)
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    result: dict[str, Any] = {
        "samples_ns": samples,
        "session_create_ms": session_create_ms,
        "first_inference_ms": first_ms,
        "loop_s": loop_s,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "process_peak_rss_bytes": max(process_peak, peak),
        "peak_exact": reset_ok,
        "providers": sess.get_providers(),
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()},
        "onnxruntime": ort.__version__,
        "import_s": import_s,
        "warnings": warnings,
    }
    del sess
    if job.get("profile"):
        try:
            result["nodes"] = _profile(ort, job, providers, feeds)
        except Exception as exc:  # a profiler failure costs the prediction, not the measurement
            result["warnings"].append(f"profiling failed, no per-node data: {_first_line(exc)}")
            result["nodes"] = None
    return result


def main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        out = run(job)
    except _Fail as exc:
        out = {"error": {"kind": exc.kind, "message": str(exc)}}
    except Exception as exc:  # pragma: no cover - reported by the parent as a model error
        out = {"error": {"kind": "internal", "message": f"{type(exc).__name__}: {_first_line(exc)}"}}
    sys.stdout.write(json.dumps(out))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
