"""report.json (schema ``edgeopt.report/1``): its data, from ``compile.json`` and the study's trial records.

:func:`write_report` writes it with its renderings (``report.md``, ``report.html``, ``plots/``);
:func:`rebuild` is ``edgeopt report DIR``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgeopt._io import atomic_write_text
from edgeopt._version import __version__
from edgeopt.errors import InputError
from edgeopt.pipeline.record import QUALITY, TrialRecord, quality_floor_label, records
from edgeopt.pipeline.study import load_study
from edgeopt.report._graph import read_graph

SCHEMA = "edgeopt.report/1"


def _lat(d: dict[str, Any] | None) -> dict[str, float] | None:
    if not d:
        return None
    return {k: float(d[k]) for k in ("p50", "p90", "p95", "p99", "mean") if k in d and d[k] is not None}


def quality_check(
    metrics: dict[str, Any], budget: Any, metric: str, implicit: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The quality floor as a budget check: the task's metric (``score``) on test (else val) against
    the profile's ``min_f1``, named after the metric (``quality floor (accuracy, test)``). The implicit
    floor (``implicit``: ``max_drop`` and the input model's ``scores`` per split) is the input model's
    score on the same split less ``max_drop``: test and validation scores differ by more than a few pt
    on small splits."""
    floor = getattr(budget, QUALITY.budget_field, None)
    split = "test" if metrics.get("test") else "val"
    scored = metrics.get(split)
    value = scored.get("score") if scored else None
    name = quality_floor_label(metric, split)
    if floor is None and implicit and implicit.get("scores", {}).get(split) is not None:
        floor = round(float(implicit["scores"][split]) - float(implicit["max_drop"]), 4)
        name = f"{name[:-1]}: input model less {100 * float(implicit['max_drop']):.0f} pt)"
    if floor is None:
        return None
    return {
        "name": name,
        "budget": floor,
        "measured": value,
        "upper_bound": None,
        "lower_bound": None,
        "passed": value is not None and value >= floor,
    }


def artifact_entry(
    measured: Any,
    cost: Any,
    path: Path,
    out: Path,
    *,
    plan: dict | None = None,
    dtype: str = "fp32",
    trial: int | None = None,
    timings: dict | None = None,
    target: Any = None,
    metric: str = "score",
    implicit_floor: dict | None = None,
) -> dict[str, Any]:
    """One side of the baseline-vs-best comparison (``measured``: gate, bench, metrics), as it goes
    into report.json."""
    g = measured.gate
    b = measured.bench if measured.bench is not None else getattr(g, "bench", None)
    metrics = measured.metrics
    checks = [_check_dict(c) for c in getattr(g, "checks", [])]
    quality = quality_check(metrics, getattr(target, "budget", None), metric, implicit_floor)
    if quality is not None:
        checks.append(quality)
    verdict = getattr(g, "verdict", "unknown")
    entry: dict[str, Any] = {
        "onnx": os.path.relpath(path, out),
        "params": int(cost.params),
        "macs": int(getattr(cost, "macs", 0) or 0),
        "size_bytes": int(path.stat().st_size) if path.exists() else int(getattr(b, "model_size_bytes", 0)),
        "metrics": metrics,
        "latency_ms": _lat(getattr(b, "latency_ms", None)),
        "latency_source": getattr(b, "latency_source", "measured"),
        "host_latency_ms": _lat(getattr(b, "host_latency_ms", None)),
        "peak_memory_mb": float(getattr(b, "peak_memory_mb", float("nan"))),
        "iterations": int(getattr(b, "iterations", 0) or 0),
        "budget": {
            "passed": verdict == "pass" and all(c["passed"] for c in checks),
            "verdict": verdict,
            "checks": checks,
        },
    }
    if plan is not None:
        entry.update({"plan": plan, "dtype": dtype, "trial": trial, "time_s": timings or {}})
    return entry


def _check_dict(c: Any) -> dict[str, Any]:
    d = c.to_dict() if hasattr(c, "to_dict") else dict(vars(c)) if hasattr(c, "__dict__") else dict(c)
    out = {k: d.get(k) for k in ("name", "budget", "measured", "upper_bound", "lower_bound", "passed")}
    passed = out["passed"]
    out["status"] = d.get("status") or ("pass" if passed else "fail" if passed is False else "inconclusive")
    if d.get("statement"):
        out["statement"] = d["statement"]
    return out


def trial_entry(rec: TrialRecord) -> dict[str, Any]:
    """One trial as it goes into report.json."""
    return {
        "number": rec.number,
        "state": rec.state,
        "status": rec.status.value,
        "plan": rec.plan,
        "dtype": rec.dtype.value,
        "params": rec.params,
        "size_bytes": rec.size_bytes,
        "latency_ms": rec.latency_ms,
        "latency_source": rec.screen.latency_source if rec.screen else None,
        "val": rec.val,
        "constraints": rec.constraints.to_dict() if rec.constraints else None,
        "feasible": rec.feasible,
        "time_s": rec.timings,
        "duration_s": rec.duration_s,
        "error": rec.error,
        "repeat_of": rec.repeat_of,
        "weights_of": rec.weights_of,
    }


def layer_breakdown(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Per layer: format, ranks, params, MACs share, and an *estimated* latency share on the target.

    The estimate applies the target's performance model (``PerfModel``: dispatch cost per node,
    compute rate, bandwidth) to each layer's MACs, weight bytes and node count (from the format's
    handler: the exported layout). The benchmark measures and predicts the whole graph only; this
    share is not a per-layer measurement.
    """
    layers = state.get("layers") or []
    if not layers:
        return []
    from edgeopt.compiler.formats import layer_onnx_node_count
    from edgeopt.runtime.perf import PerfModel

    try:
        model = PerfModel.of(state["target"].get("device", {}))
        bandwidth = model.bandwidth_for(4 * sum(layer["params"] for layer in layers))
    except (KeyError, TypeError, ValueError):  # no performance model (an uncalibrated host profile)
        model = None
    total_macs = sum(layer["macs"] for layer in layers) or 1
    times = []
    for layer in layers:
        if model is None:
            times.append(None)
            continue
        op = "Conv" if layer.get("kind", "linear").startswith("conv") else "MatMul"
        ranks = layer.get("ranks")
        bonds = tuple(ranks) if isinstance(ranks, (list, tuple)) and len(ranks) > 1 else None
        nodes = layer_onnx_node_count(layer["format"], layer.get("kind", "linear"), bonds)
        times.append(
            nodes * model.overhead_for(op)
            + max(2 * layer["macs"] / (model.rate_for(op) * 1e3), 4 * layer["params"] / (bandwidth * 1e3))
        )
    total_t = sum(t for t in times if t) or None
    return [
        dict(
            layer,
            macs_share=layer["macs"] / total_macs,
            latency_share=(t / total_t) if (t is not None and total_t) else None,
        )
        for layer, t in zip(layers, times)
    ]


def build(study: Any, state: dict[str, Any], graph: dict[str, Any] | None = None) -> dict[str, Any]:
    """report.json's content from the study and ``compile.json``'s state; ``graph``: :func:`read_graph` of
    the dense model (widths and consumers), so that ranks and prune savings read as the model has them."""
    graph = graph or {"widths": {}, "consumers": {}}
    trials = [trial_entry(r) for r in records(study)]
    layers = [dict(layer, width=graph["widths"].get(layer["name"])) for layer in layer_breakdown(state)]
    return {
        "schema": SCHEMA,
        "edgeopt_version": __version__,
        "target": state["target"],
        "task": state["task"],
        "baseline": state["baseline"],
        # the fine-tune record (compile.json keeps it beside ``best``): the trial's and the artifact's val scores
        "best": dict(state["best"], finetune=state.get("finetune")) if state["best"] else state["best"],
        "search": _search_summary(study, state, trials),
        "space": state.get("space"),
        "trials": trials,
        "layers": layers,
        "quality_floor": state.get("quality_floor"),
        "alternatives": state.get("alternatives") or [],  # edgeopt.search.alternatives.rows
        "tables": credit_prunes(state.get("tables"), (state["best"] or {}).get("plan") or {}, graph),
        "wall_s": round(state.get("wall_s", 0.0), 2),
    }


def credit_prunes(tables: dict[str, Any] | None, plan: dict[str, Any], graph: dict[str, Any]) -> dict[str, Any] | None:
    """The tables' rows with each graph-level rung (prune) split where its saving lands: ``own_ms`` (the layer
    after pruning: kept share × its dense latency) and ``saves_elsewhere_ms`` in ``narrows`` (the layers that
    read its output). The table prices the rung as their difference, which is negative when they save more."""
    if not tables or not tables.get("rows"):
        return tables
    from edgeopt.compiler.formats import registered_handlers

    handlers = {h.name: h for h in registered_handlers()}  # a format no longer registered is left as priced
    names = {r["layer"] for r in tables["rows"]}
    rows = []
    for r in tables["rows"]:
        entry, width = plan.get(r["layer"]) or {}, graph["widths"].get(r["layer"])
        handler = handlers.get(entry.get("format"))
        if handler is not None and handler.graph_level and width and handler.rank_of(entry):
            own = float(handler.rank_of(entry)) / width * r["dense_ms"]
            r = dict(
                r,
                own_ms=round(own, 5),
                saves_elsewhere_ms=round(own - r["chosen_ms"], 5),
                narrows=[m for m in graph["consumers"].get(r["layer"], []) if m in names],
            )
        rows.append(r)
    return dict(tables, rows=rows)


def _search_summary(study: Any, state: dict[str, Any], trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, timings, notes and finalists of the search."""
    import optuna

    states = [t["state"] for t in trials]
    counts = {
        "trials": len(trials),
        "feasible": sum(t["feasible"] for t in trials),
        "pruned": states.count("pruned"),
        "failed": states.count("fail"),
        "screened_out": sum(t["status"] == "screened-out" for t in trials),
        "running": states.count("running"),
        "queued": states.count("waiting"),
        "wall_s": round(sum(t["duration_s"] or 0 for t in trials), 2),
        "last_run_wall_s": round(state.get("search_wall_s", 0.0), 2),
        "sampler": study.user_attrs.get("sampler", type(study.sampler).__name__),
        "objective": state.get("objective", "f1"),
        "study": state.get("study"),
        "storage": state.get("storage"),
        "optuna_version": optuna.__version__,
        "notes": state.get("search_reasons", []),
    }
    time_totals: dict[str, float] = {}
    for t in trials:
        for k, v in (t["time_s"] or {}).items():
            time_totals[k] = round(time_totals.get(k, 0.0) + float(v), 3)
    counts["time_s"] = time_totals
    counts["finalists"] = state.get("finalists", [])
    counts["repeats"] = sum(1 for t in trials if t["repeat_of"] is not None)
    # Every worker's trials are the study's (``host:pid`` of whoever ran each; older trials have none).
    by_worker: dict[str, int] = {}
    spans: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        name = t.user_attrs.get("worker")
        if name:
            by_worker[name] = by_worker.get(name, 0) + 1
            if t.datetime_start is not None:
                span = spans.setdefault(name, [t.datetime_start, t.datetime_complete or t.datetime_start])
                span[0], span[1] = min(span[0], t.datetime_start), max(span[1], t.datetime_complete or span[1])
    counts["workers"] = dict(sorted(by_worker.items()))
    counts["concurrent_workers"] = concurrent(list(spans.values()))
    if len(study.directions) == 2:  # F1 vs target latency: the feasible non-dominated trials
        try:
            counts["pareto_front"] = sorted(t.number for t in study.best_trials)
        except Exception:  # Optuna raises when no trial is feasible; then there is no front
            counts["pareto_front"] = []
    return counts


def concurrent(spans: list) -> int:
    """The most workers whose (first start, last end) spans overlap: a resumed study's runs follow one another."""
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def write_report(out: Path, *, study: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Write report.json, report.md, report.html and plots/ into ``out``; return the report dict."""
    from edgeopt.report.html import render_html
    from edgeopt.report.markdown import render_markdown
    from edgeopt.report.plots import draw_plots

    rep = build(study, state, read_graph(out / (state["baseline"] or {}).get("onnx", "baseline.onnx")))
    rep["plots"] = draw_plots(out, study, rep)
    texts = {  # every rendering before any file: a renderer that fails leaves the previous report whole
        "report.json": json.dumps(rep, indent=2, default=str),
        "report.md": render_markdown(rep),
        "report.html": render_html(rep, out),
    }
    for name, text in texts.items():
        atomic_write_text(out / name, text)
    return rep


def _refused(path: Path) -> str | None:
    """Why a refused compile refused (its report.json), or None."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return str(doc.get("refused")) if isinstance(doc, dict) and doc.get("schema") == "edgeopt.report/refused" else None


def rebuild(out: str | os.PathLike) -> dict[str, Any]:
    """``edgeopt report DIR``: rebuild every report file from ``compile.json`` and the study."""
    out = Path(out)
    if not out.is_dir():
        raise InputError(f"{out}: no such directory (expected an `edgeopt compile --out` directory).")
    state_path = out / "compile.json"
    if not state_path.exists():
        refused = _refused(out / "report.json")
        if refused:  # a refused compile: its report.json/md are all there is, and stay as they are
            raise InputError(f"{out}: the compile refused its budget, nothing to rebuild ({refused}).")
        raise InputError(
            f"{out} is not an edgeopt output dir: {state_path.name} is missing (run `edgeopt compile` first)."
        )
    try:
        state = json.loads(state_path.read_text())
    except ValueError as exc:
        raise InputError(f"{state_path}: not valid JSON ({exc}).") from None
    study = load_study(state["storage"], state["study"], out)
    return write_report(out, study=study, state=state)
