"""The measurement child process: ``python -m edgeopt.runtime._worker`` reads a JSON job on stdin
and writes one JSON result on stdout.

A fresh process per measurement keeps one model's allocator state, thread pools and caches from
leaking into the next, and makes the memory figure the model's own. The timed loop is a bare
``session.run`` between two ``perf_counter_ns`` calls, nothing else.

The job is flat JSON: the model path, the ``[runtime]`` keys (``session.Runtime``), the
``settings.BenchSettings`` keys, ``shapes`` and ``profile``; absent keys take those classes' defaults.

An A/B job (``ab``: ``{"other": OLD's path, "first": 0 or 1, "sub_blocks": k}``, made by
``compare``) loads both models (``model`` is NEW) into this one process and times them alternately,
k sub-blocks each of ``min_time_s / k`` (and ``min_iters / k`` runs), in the order A B B A A B B A ...
(A = NEW when ``first`` is 0, else OLD), one untimed run after each switch. Its result has
``ab``: one block per model (the samples of its sub-blocks pooled), and ``sequence``: (side, start
ns, end ns) of each sub-block. A process's own noise (its allocator, its core, a neighbour's load
while it ran) then falls on both models alike. No memory or profile: those need a process per model.

A job of many models (``many``: ``{"others": [paths], "rounds": R}``, made by :func:`~edgeopt.runtime.bench.bench_many`)
loads ``model`` and ``others`` into this one process and times each for one block of the job's settings
per round, R rounds, the order reversed every other round (A B C, C B A, A B C ...). Its result has
``many``: per model, ``rounds``, the samples (ns) of each of its blocks, and ``sequence``: (model, start ns,
end ns) of each block. A window of other work on a
shared host then falls on one round of every model, not on every round of a few of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from typing import Any

from edgeopt.runtime.session import Runtime, available_providers, session_options
from edgeopt.runtime.settings import BenchSettings


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:400]
    return type(exc).__name__


def _profile(
    ort: Any, model: str, runtime: Runtime, providers: list[str], feeds: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per-node shapes and sizes of the optimized graph that actually runs, from onnxruntime's profiler.

    Weight prepacking is disabled for this session only: prepacked weights drop out of the
    profiler's input shapes and parameter sizes, and the roofline needs them.
    """
    tmp = tempfile.mkdtemp(prefix="edgeopt-prof-")
    so = session_options(runtime, profile_prefix=os.path.join(tmp, "p"), prepacking=False)
    sess = ort.InferenceSession(model, so, providers=providers)
    runs = 2
    for _ in range(runs):
        sess.run(None, feeds)
    path = sess.end_profiling()
    try:
        with open(path) as fh:
            events = json.load(fh)
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
            os.rmdir(tmp)
    nodes = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    per_run = len(nodes) // runs if nodes else 0
    out = []
    for e in nodes[len(nodes) - per_run :]:  # the last run: warm caches, as in the timed loop
        a = e.get("args", {})
        out.append(
            {
                "name": e["name"][: -len("_kernel_time")],
                "op": a.get("op_name", ""),
                "inputs": [list(d.values())[0] for d in a.get("input_type_shape", []) if d],
                "input_types": [list(d.keys())[0] for d in a.get("input_type_shape", []) if d],
                "outputs": [list(d.values())[0] for d in a.get("output_type_shape", []) if d],
                "activation_bytes": int(a.get("activation_size", 0) or 0),
                "parameter_bytes": int(a.get("parameter_size", 0) or 0),
                "output_bytes": int(a.get("output_size", 0) or 0),
                "dur_us": float(e.get("dur", 0)),
            }
        )
    return out


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Measure the job's model: session creation, first inference, the timed loop, peak memory;
    then, with ``profile``, the per-node profile of the optimized graph."""
    t_start = time.perf_counter()
    import numpy as np  # noqa: F401  (imported before the memory baseline, as an app would)
    import onnxruntime as ort

    runtime, settings = Runtime.from_mapping(job), BenchSettings.from_mapping(job)
    providers, warning = available_providers(runtime.providers)
    import_s = time.perf_counter() - t_start

    rss_before = _rss_bytes()
    reset_ok = _reset_peak()
    sess, session_create_ms = _create_session(ort, job["model"], runtime, providers)
    feeds = _feeds(sess, settings, job.get("shapes") or {})
    out_names = [o.name for o in sess.get_outputs()]
    first_ms = _first_run_ms(sess, out_names, feeds)
    samples, loop_s = _timed_loop(sess, out_names, feeds, settings)
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
        "warnings": [warning] if warning else [],
    }
    del sess
    if job.get("profile"):
        _add_profile(result, ort, job["model"], runtime, providers, feeds)
    return result


def run_ab(job: dict[str, Any]) -> dict[str, Any]:
    """The A/B job (module docstring): both models in this process, timed in alternating sub-blocks."""
    import numpy as np  # noqa: F401
    import onnxruntime as ort

    runtime, settings = Runtime.from_mapping(job), BenchSettings.from_mapping(job)
    providers, warning = available_providers(runtime.providers)
    ab, sides = job["ab"], []
    for model in (job["model"], ab["other"]):
        sess, _ = _create_session(ort, model, runtime, providers)
        feeds = _feeds(sess, settings, job.get("shapes") or {})
        names = [o.name for o in sess.get_outputs()]
        _first_run_ms(sess, names, feeds)
        sides.append((sess, names, feeds))
    k = max(1, int(ab.get("sub_blocks", 1)))
    sub = settings.updated(
        min_time_s=float(settings.min_time_s) / k,
        min_iters=-(-settings.min_iters // k),
        max_iters=max(1, -(-settings.max_iters // k)),
        warmup=1,
    )
    for sess, names, feeds in sides:  # both warm before either is timed
        for _ in range(settings.warmup):
            sess.run(names, feeds)
    samples: list[list[int]] = [[], []]
    sequence = []
    for j in range(2 * k):
        side = int(ab.get("first", 0)) ^ (j % 4 in (1, 2))  # A B B A A B B A ...
        t0 = time.perf_counter_ns()
        got, _ = _timed_loop(*sides[side], sub)
        samples[side] += got
        sequence.append([side, t0, time.perf_counter_ns()])
    warnings = [warning] if warning else []
    return {
        "ab": [{"samples_ns": s, "warnings": warnings} for s in samples],
        "sequence": sequence,
        "providers": sides[0][0].get_providers(),
        "onnxruntime": ort.__version__,
        "warnings": warnings,
    }


def run_many(job: dict[str, Any]) -> dict[str, Any]:
    """The job of many models (module docstring): every model in this process, one block each per round."""
    import numpy as np  # noqa: F401
    import onnxruntime as ort

    runtime, settings = Runtime.from_mapping(job), BenchSettings.from_mapping(job)
    providers, warning = available_providers(runtime.providers)
    many = job["many"]
    models = [job["model"], *many["others"]]
    sides = []
    for model in models:
        sess, _ = _create_session(ort, model, runtime, providers)
        feeds = _feeds(sess, settings, job.get("shapes") or {})
        names = [o.name for o in sess.get_outputs()]
        _first_run_ms(sess, names, feeds)
        sides.append((sess, names, feeds))
    block = settings.updated(warmup=1)
    for sess, names, feeds in sides:  # every model warm before any is timed
        for _ in range(settings.warmup):
            sess.run(names, feeds)
    rounds: list[list[list[int]]] = [[] for _ in models]
    sequence = []
    for r in range(max(1, int(many.get("rounds", 1)))):
        order = range(len(models)) if r % 2 == 0 else range(len(models) - 1, -1, -1)
        for i in order:
            t0 = time.perf_counter_ns()
            got, _ = _timed_loop(*sides[i], block)
            rounds[i].append(got)
            sequence.append([i, t0, time.perf_counter_ns()])
    warnings = [warning] if warning else []
    return {
        "many": [{"rounds": rs} for rs in rounds],
        "sequence": sequence,
        "providers": sides[0][0].get_providers(),
        "onnxruntime": ort.__version__,
        "warnings": warnings,
    }


def _create_session(ort: Any, model: str, runtime: Runtime, providers: list[str]) -> tuple[Any, float]:
    """The session and how long creating it took (ms)."""
    t0 = time.perf_counter_ns()
    try:
        sess = ort.InferenceSession(model, session_options(runtime), providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad models
        raise _Fail("model", f"onnxruntime cannot load the model: {_first_line(exc)}") from None
    return sess, (time.perf_counter_ns() - t0) / 1e6


def _feeds(sess: Any, settings: BenchSettings, shapes: dict[str, Any]) -> dict[str, Any]:
    from edgeopt.errors import InputError
    from edgeopt.runtime.inputs import make_feeds

    try:
        return make_feeds(sess.get_inputs(), batch=settings.batch or 1, shapes=shapes, seed=settings.seed)
    except InputError as exc:
        raise _Fail("input", str(exc)) from None


def _first_run_ms(sess: Any, out_names: list[str], feeds: dict[str, Any]) -> float:
    t0 = time.perf_counter_ns()
    try:
        sess.run(out_names, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise _Fail("model", f"onnxruntime cannot run the model on generated inputs: {_first_line(exc)}") from None
    return (time.perf_counter_ns() - t0) / 1e6


def _timed_loop(sess: Any, out_names: list[str], feeds: dict[str, Any], s: BenchSettings) -> tuple[list[int], float]:
    """Warm-up, then bare timed runs until both minimums are met (at most max_iters): samples (ns), seconds."""
    run = sess.run
    for _ in range(s.warmup):
        run(out_names, feeds)
    min_time_ns = float(s.min_time_s) * 1e9
    samples: list[int] = []
    append, clock = samples.append, time.perf_counter_ns
    loop_start = clock()
    while len(samples) < s.max_iters:
        t0 = clock()
        run(out_names, feeds)
        t1 = clock()
        append(t1 - t0)
        if len(samples) >= s.min_iters and t1 - loop_start >= min_time_ns:
            break
    return samples, (clock() - loop_start) / 1e9


def _add_profile(
    result: dict[str, Any], ort: Any, model: str, runtime: Runtime, providers: list[str], feeds: dict[str, Any]
) -> None:
    try:
        result["nodes"] = _profile(ort, model, runtime, providers, feeds)
    except Exception as exc:  # a profiler failure costs the prediction, not the measurement
        result["warnings"].append(f"profiling failed, no per-node data: {_first_line(exc)}")
        result["nodes"] = None


def main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        out = run_ab(job) if job.get("ab") else run_many(job) if job.get("many") else run(job)
    except _Fail as exc:
        out = {"error": {"kind": exc.kind, "message": str(exc)}}
    except Exception as exc:  # pragma: no cover - reported by the parent as a model error
        out = {"error": {"kind": "internal", "message": f"{type(exc).__name__}: {_first_line(exc)}"}}
    sys.stdout.write(json.dumps(out))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
