"""The compile report: ``report.json`` (schema ``edgeopt.report/1``), ``report.md``,
a self-contained ``report.html`` and ``plots/*.png`` — all rebuilt from the study and
``compile.json`` by ``edgeopt report DIR``.

Tables are built once as rows and rendered to Markdown, HTML and the terminal, so the three
never disagree; ``report.md`` and ``report.html`` are two renderings of one list of blocks
(:func:`report_blocks`: headings, paragraphs, bullet lines, :class:`Table` s, plots), so the page
carries every section the Markdown does. Plots use Optuna's matplotlib visualizations where one exists (optimization
history, Pareto front of a two-objective study) and plain matplotlib otherwise.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from edgeopt._io import atomic_path, atomic_write_text
from edgeopt._version import __version__
from edgeopt.errors import InputError
from edgeopt.search.allocation.knobs import FEEDBACK_MIN
from edgeopt.search.record import QUALITY, TrialRecord, quality_floor_label, records
from edgeopt.search.storage import load_study

SCHEMA = "edgeopt.report/1"


# ----------------------------------------------------------------------------- entries
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
    return {k: d.get(k) for k in ("name", "budget", "measured", "upper_bound", "lower_bound", "passed")}


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
    }


def _dtype(entry: dict[str, Any]) -> str:
    """An entry's dtype (``precision`` in reports written before 0.x renamed it)."""
    return entry.get("dtype") or entry.get("precision") or "fp32"


# ----------------------------------------------------------------------------- tables
def _fmt(v: Any, spec: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if spec:
        return format(v, spec)
    return str(v)


def _mb(nbytes: Any) -> str:
    return "–" if nbytes is None else f"{nbytes / 2**20:.3f} MiB"


# A ratio within this of 1 (either way) reads "same ...": what the printed digits and measurement noise blur.
SAME_BAND = 0.02


def change(before: Any, after: Any, lower: str, higher: str, same: str, band: float = SAME_BAND) -> str:
    """How ``after`` compares with ``before`` for a quantity where lower is better: ``"2.4× faster"``,
    ``"1.25× slower"`` (never ``"0.8× faster"``), or ``same`` when equal or within ``band``; "" when unknown.
    Counts (parameters, bytes) are exact: they pass ``band=0``."""
    if not before or not after:
        return ""
    r = before / after
    if r == 1 or max(r, 1 / r) < 1 + band:
        return same
    x = r if r > 1 else 1 / r
    return f"{x:.2f}× {lower if r > 1 else higher}" if x < 2 else f"{x:.1f}× {lower if r > 1 else higher}"


def comparison_rows(rep: dict[str, Any]) -> list[list[str]]:
    base, best = rep["baseline"], rep["best"]
    src = best.get("latency_source", "measured")
    rows = [["", "baseline (dense fp32)", "edgeopt", "change"]]
    rows.append(
        [
            "params",
            f"{base['params']:,}",
            f"{best['params']:,}",
            change(base["params"], best["params"], "fewer", "more", "same", band=0),
        ]
    )
    rows.append(
        [
            "size",
            _mb(base["size_bytes"]),
            _mb(best["size_bytes"]),
            change(base["size_bytes"], best["size_bytes"], "smaller", "larger", "same size", band=0),
        ]
    )
    for p in ("p50", "p95"):
        a = (base.get("latency_ms") or {}).get(p)
        b = (best.get("latency_ms") or {}).get(p)
        rows.append(
            [
                f"latency {p} ({src})",
                _fmt(a, ".4f") + " ms",
                _fmt(b, ".4f") + " ms",
                change(a, b, "faster", "slower", "same speed"),
            ]
        )
    rows.append(
        [
            "peak memory",
            _fmt(base.get("peak_memory_mb"), ".1f") + " MB",
            _fmt(best.get("peak_memory_mb"), ".1f") + " MB",
            "",
        ]
    )
    for split in ("test", "val"):
        mb, mx = (base["metrics"] or {}).get(split), (best["metrics"] or {}).get(split)
        if not mb or not mx:
            continue
        for k in ("f1", "precision", "recall", "accuracy"):
            d = (mx[k] - mb[k]) * 100 if mx.get(k) is not None and mb.get(k) is not None else None
            rows.append(
                [f"{split} {k}", _fmt(mb.get(k), ".4f"), _fmt(mx.get(k), ".4f"), "" if d is None else f"{d:+.2f} pt"]
            )
    return rows


def budget_rows(rep: dict[str, Any]) -> list[list[str]]:
    rows = [["budget", "limit", "baseline", "edgeopt", "upper bound", "verdict"]]
    base_checks = {c["name"]: c for c in rep["baseline"]["budget"]["checks"]}
    for c in rep["best"]["budget"]["checks"]:
        b = base_checks.get(c["name"], {})
        rows.append(
            [
                c["name"],
                _fmt(c["budget"]),
                _fmt(_round(b.get("measured"))),
                _fmt(_round(c["measured"])),
                _fmt(_round(c.get("upper_bound"))),
                "PASS" if c["passed"] else "FAIL",
            ]
        )
    return rows


def _round(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else v


def plan_rows(rep: dict[str, Any]) -> list[list[str]]:
    rows = [["layer", "format", "rank(s)", "params (dense → edgeopt)", "MACs share", "est. latency share on target"]]
    for layer in rep.get("layers", []):
        rows.append(
            [
                layer["name"],
                layer["format"],
                _fmt(layer.get("ranks")),
                f"{layer['dense_params']:,} → {layer['params']:,}",
                f"{layer['macs_share'] * 100:.1f}%",
                "–" if layer["latency_share"] is None else f"{layer['latency_share'] * 100:.1f}%",
            ]
        )
    return rows


def trial_rows(rep: dict[str, Any], limit: int = 15) -> list[list[str]]:
    rows = [["#", "status", "plan", "params", "latency ms", "val F1", "time s"]]
    trials = sorted(rep["trials"], key=lambda t: (not t["feasible"], -(t["val"].get("score") or 0), t["number"]))
    for t in trials[:limit]:
        rows.append(
            [
                str(t["number"]),
                t["status"] + (" ✓" if t["feasible"] else ""),
                _plan_short(t["plan"], _dtype(t)),
                _fmt(t["params"], ","),
                _fmt(t["latency_ms"], ".4f"),
                _fmt(t["val"].get("f1"), ".4f"),
                _fmt(t["duration_s"], ".1f"),
            ]
        )
    return rows


def _plan_short(plan: dict | None, dtype: str = "fp32") -> str:
    """``fc1:lr8 fc2:tt4 int8``: each layer's label from its format's handler."""
    from edgeopt.compiler.formats import short_label

    suffix = " int8" if dtype == "int8" else ""
    if not plan:
        return short_label(None) + suffix
    return " ".join(f"{name}:{short_label(spec)}" for name, spec in plan.items()) + suffix


def render_markdown_table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


class Table(str):
    """A Markdown table (the string) that keeps its rows, so ``report.html`` renders the same table."""

    rows: list[list[str]]

    def __new__(cls, rows: list[list[str]]) -> Table:
        table = super().__new__(cls, render_markdown_table(rows))
        table.rows = rows
        return table


def render_text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _html_table(rows: list[list[str]]) -> str:
    head, *body = rows
    h = "".join(f"<th>{_inline(c)}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_IMAGE = re.compile(r"^!\[(.*)\]\((.*)\)$")


def _inline(text: str) -> str:
    """The Markdown the report's lines use, as HTML: `code` and **bold**; everything else escaped."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick is text
        parts[-2:] = ["`".join(parts[-2:])]
    return "".join(
        f"<code>{html.escape(p)}</code>" if i % 2 else _BOLD.sub(r"<b>\1</b>", html.escape(p))
        for i, p in enumerate(parts)
    )


# ----------------------------------------------------------------------------- layers
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


# ----------------------------------------------------------------------------- plots
def _plots(out: Path, study: Any, rep: dict[str, Any]) -> dict[str, str]:
    """Draw every plot into ``out/plots``; returns {name: relative path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    made: dict[str, str] = {}

    def save(fig: Any, name: str) -> None:
        with atomic_path(plots_dir / name) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        made[name.rsplit(".", 1)[0]] = f"plots/{name}"

    save(_latency_vs_score(plt, rep), "pareto.png")
    for name, fig in _optuna_plots(study, rep):
        save(fig, name)
    plt.style.use("default")  # Optuna's plots switch to their own style; keep ours consistent
    if rep.get("layers"):
        save(_plan_plot(plt, rep["layers"]), "plan.png")
    return made


def _latency_vs_score(plt: Any, rep: dict[str, Any]) -> Any:
    """Target latency vs validation score: every trial, feasible or not, budget lines, baseline and artifact."""
    budget = rep["target"].get("budget", {})
    src = rep["best"].get("latency_source", "measured")
    pct = _pct_key(budget.get("latency_percentile") or 95)
    metric = rep["task"]["metric"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    trials = [t for t in rep["trials"] if t["latency_ms"] is not None]
    trained = [t for t in trials if t["status"] == "trained"]
    feas = [t for t in trained if t["feasible"]]
    infeas = [t for t in trained if not t["feasible"]]
    screened = [t for t in trials if t["status"] == "screened-out"]
    if feas:
        ax.scatter(
            [t["latency_ms"] for t in feas], [t["val"]["score"] for t in feas], c="tab:blue", label="feasible", zorder=3
        )
        front = _front([(t["latency_ms"], t["val"]["score"]) for t in feas])
        ax.plot(*zip(*front), c="tab:blue", alpha=0.5, drawstyle="steps-post", label="Pareto front")
    if infeas:
        ax.scatter(
            [t["latency_ms"] for t in infeas],
            [t["val"]["score"] for t in infeas],
            c="tab:orange",
            marker="x",
            label="trained, infeasible",
            zorder=3,
        )
    if screened:
        ymin = min([t["val"].get("score") or 1 for t in trained] + [rep["baseline"]["metrics"]["val"]["score"]]) - 0.02
        ax.scatter(
            [t["latency_ms"] for t in screened],
            [ymin] * len(screened),
            c="lightgray",
            marker="|",
            s=120,
            label="screened out (over budget, untrained)",
        )
    for side, color, label in (("baseline", "black", "baseline (dense)"), ("best", "tab:green", "shipped artifact")):
        entry = rep[side]
        ax.scatter(
            [(entry["latency_ms"] or {}).get(f"p{pct}")],
            [entry["metrics"]["val"]["score"]],
            marker="*",
            s=200,
            c=color,
            label=label,
            zorder=4,
        )
    if budget.get("latency_ms"):
        ax.axvline(budget["latency_ms"], c="red", ls="--", lw=1, label=f"latency budget ({budget['latency_ms']} ms)")
    if budget.get(QUALITY.budget_field):
        floor = budget[QUALITY.budget_field]
        ax.axhline(floor, c="red", ls=":", lw=1, label=f"{quality_floor_label(metric)} ≥ {floor}")
    ax.set_xscale("log")
    ax.set_xlabel(f"p{pct} latency on {rep['target']['name']} (ms, {src})")
    ax.set_ylabel(f"validation {metric}")
    n_size = sum(1 for t in rep["trials"] if t["status"] == "screened-out" and t["latency_ms"] is None)
    ax.set_title(
        f"Target latency vs {metric}, every trial"
        + (f" ({n_size} more over the size budget, never built)" if n_size else ""),
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def _optuna_plots(study: Any, rep: dict[str, Any]) -> list[tuple[str, Any]]:
    """Optuna's optimization history (and Pareto front of a two-objective study)."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as ovm

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return []
    metric = rep["task"]["metric"]
    src = rep["best"].get("latency_source", "measured")
    figs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = ovm.plot_optimization_history(
            study,
            target=lambda t: TrialRecord.from_trial(t).val.get("score", t.values[0]),
            target_name=f"validation {metric}",
        )
        figs.append(("history.png", ax.figure))
        if len(study.directions) == 2:
            ax = ovm.plot_pareto_front(study, target_names=[f"val {metric}", f"latency ms ({src})"])
            figs.append(("pareto_front.png", ax.figure))
    return figs


def _plan_plot(plt: Any, layers: list[dict[str, Any]]) -> Any:
    """The chosen plan per layer: params dense vs edgeopt, and its estimated latency share."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 0.5 + 0.45 * len(layers) + 1.5))
    names = [f"{x['name']} ({x['format']}{' ' + str(x['ranks']) if x.get('ranks') else ''})" for x in layers]
    y = range(len(layers))
    a1.barh([i + 0.2 for i in y], [x["dense_params"] for x in layers], height=0.4, label="dense", color="lightgray")
    a1.barh([i - 0.2 for i in y], [x["params"] for x in layers], height=0.4, label="edgeopt", color="tab:green")
    a1.set_yticks(list(y), names, fontsize=8)
    a1.set_xscale("log")
    a1.set_xlabel("parameters")
    a1.legend(fontsize=8)
    a1.invert_yaxis()
    a2.barh(list(y), [(x["latency_share"] or 0) * 100 for x in layers], color="tab:blue")
    a2.set_yticks(list(y), [""] * len(layers))
    a2.set_xlabel("estimated latency share on target (%, from its performance model)")
    a2.invert_yaxis()
    fig.suptitle("Chosen plan per layer")
    return fig


def _pct_key(p: float) -> str:
    """95.0 -> '95' (the key in latency dicts); other percentiles fall back to p95."""
    p = float(p)
    return str(int(p)) if p.is_integer() and int(p) in (50, 90, 95, 99) else "95"


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated points for (latency ↓, score ↑), sorted by latency."""
    best = -math.inf
    front = []
    for lat, score in sorted(points):
        if score > best:
            front.append((lat, score))
            best = score
    return front


# ----------------------------------------------------------------------------- the report
def build(study: Any, state: dict[str, Any]) -> dict[str, Any]:
    """report.json's content from the study and ``compile.json``'s state."""
    trials = [trial_entry(r) for r in records(study)]
    rep = {
        "schema": SCHEMA,
        "edgeopt_version": __version__,
        "target": state["target"],
        "task": state["task"],
        "baseline": state["baseline"],
        "best": state["best"],
        "search": _search_summary(study, state, trials),
        "space": state.get("space"),
        "trials": trials,
        "layers": layer_breakdown(state),
        "quality_floor": state.get("quality_floor"),
        "tables": state.get("tables"),
        "wall_s": round(state.get("wall_s", 0.0), 2),
    }
    return rep


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
    for t in study.get_trials(deepcopy=False):
        name = t.user_attrs.get("worker")
        if name:
            by_worker[name] = by_worker.get(name, 0) + 1
    counts["workers"] = dict(sorted(by_worker.items()))
    if len(study.directions) == 2:  # F1 vs target latency: the feasible non-dominated trials
        try:
            counts["pareto_front"] = sorted(t.number for t in study.best_trials)
        except Exception:  # Optuna raises when no trial is feasible; then there is no front
            counts["pareto_front"] = []
    return counts


def _workers_note(s: dict[str, Any]) -> str:
    """``, 3 workers`` when more than one process ran the study's trials."""
    n = len(s.get("workers") or {})
    return f", {n} workers" if n > 1 else ""


def write_report(out: Path, *, study: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Write report.json, report.md, report.html and plots/ into ``out``; return the report dict."""
    rep = build(study, state)
    rep["plots"] = _plots(out, study, rep)
    atomic_write_text(out / "report.json", json.dumps(rep, indent=2, default=str))
    atomic_write_text(out / "report.md", render_markdown(rep))
    atomic_write_text(out / "report.html", render_html(rep, out))
    return rep


def headline(rep: dict[str, Any]) -> str:
    best, base = rep["best"], rep["baseline"]
    verdict = "meets every budget" if best["budget"]["passed"] else "does NOT meet every budget"
    split = "test" if (best["metrics"] or {}).get("test") else "val"
    f1b = (base["metrics"][split] or {}).get("f1")
    f1x = (best["metrics"][split] or {}).get("f1")
    lat = (best.get("latency_ms") or {}).get("p50")
    latb = (base.get("latency_ms") or {}).get("p50")
    parts = [f"The artifact {verdict} of `{rep['target']['name']}`"]
    if best["params"]:
        parts.append(
            change(base["params"], best["params"], "fewer parameters", "more parameters", "as many parameters", band=0)
        )
    if lat and latb:
        parts.append(f"{change(latb, lat, 'lower', 'higher', 'the same')} p50 latency ({best.get('latency_source')})")
    if f1b is not None and f1x is not None:
        parts.append(f"{split} F1 {f1x:.4f} vs {f1b:.4f} ({(f1x - f1b) * 100:+.2f} pt)")
    return ", ".join(parts) + "."


def render_markdown(rep: dict[str, Any]) -> str:
    """report.md: headline, comparison, budgets, plan, search, trials, per-layer tables, plots."""
    return "\n".join(report_blocks(rep))


def report_blocks(rep: dict[str, Any]) -> list[str]:
    """The report as blocks, each one Markdown line (a heading, a paragraph, a ``- `` bullet, a plot, "" between)
    or a :class:`Table`: ``report.md`` joins them, ``report.html`` renders each as HTML."""
    lines = [
        f"# edgeopt report — {rep['task']['name']} on {rep['target']['name']}",
        "",
        headline(rep),
        "",
        *_md_context(rep),
        "",
        "## Baseline vs edgeopt",
        "",
        Table(comparison_rows(rep)),
        "",
        "## Budgets",
        "",
        Table(budget_rows(rep)),
        "",
        *_md_floor(rep),
        "## Chosen plan",
        "",
    ]
    if rep.get("layers"):
        lines += [Table(plan_rows(rep)), ""]
    else:
        lines += ["The model has no layer edgeopt can decompose; it is shipped dense.", ""]
    lines += _md_search(rep)
    lines += ["", Table(trial_rows(rep)), ""]
    lines += _md_tables(rep.get("tables"))
    for name, rel in (rep.get("plots") or {}).items():
        lines += [f"![{name}]({rel})", ""]
    s = rep["search"]
    lines += [f"_edgeopt {rep['edgeopt_version']}; study `{s.get('study')}` in `{s.get('storage')}`._", ""]
    return lines


def _md_context(rep: dict[str, Any]) -> list[str]:
    """The task and the target, and where the latency comes from."""
    task = rep["task"]
    source = rep["best"].get("latency_source", "measured")
    return [
        f"Task: {task.get('description') or task['name']} — metric `{task['metric']}`, "
        f"{task['samples']['train']}/{task['samples']['val']}/{task['samples']['test']} "
        "train/val/test samples. The test split is scored only on the two shipped files.",
        f"Target: {rep['target'].get('description', rep['target']['name'])}. Latency is **{source}** "
        + (
            "(this host's measurement transferred to the target by its calibration)."
            if source == "predicted"
            else "(measured on the target)."
        ),
    ]


def _md_floor(rep: dict[str, Any]) -> list[str]:
    q = rep.get("quality_floor")
    if not q:
        return []
    return [
        f"Quality floor of the artifact: the input model's score less {100 * q['max_drop']:.0f} pt on the same "
        "split (the profile gives no `min_f1`; `--max-quality-drop` changes it). Trials are not held to it: "
        "their few epochs of distillation leave most students below what the final fine-tune reaches.",
        "",
    ]


def _md_tables(t: dict[str, Any] | None) -> list[str]:
    """The per-layer tables: what was chosen per layer, and whether the layers add up to the graph."""
    if not t:
        return []
    lines = [
        "## Per-layer tables",
        "",
        f"{t['layers']} layers, {t['candidates']} candidates, built in {t['build_s']:.1f} s"
        f"{' (read from tables.json)' if t.get('cached') else ''}; sensitivity = KL to the input model's "
        f"outputs with only that layer replaced, on {t.get('calibration_samples') or '?'} training samples.",
        "",
    ]
    a = t.get("additivity") or {}
    checks = [
        [
            name,
            _fmt(g["measured_ms"], ".4f"),
            _fmt(g["isolated_sum_ms"], ".4f"),
            _fmt(g["table_ms"], ".4f"),
            f"{g['error_pct']:+.1f}%",
        ]
        for name, g in (a.get("graphs") or {}).items()
    ]
    if t.get("shipped"):
        s = t["shipped"]
        checks.append(
            [
                "shipped plan",
                _fmt(s["measured_ms"], ".4f"),
                "",
                _fmt(s["table_ms"], ".4f"),
                f"{s['error_pct']:+.1f}%" if s.get("error_pct") is not None else "-",
            ]
        )
    if checks:
        lines += [
            f"Do the layers add up? Whole graphs measured against the table (`rest + {a.get('scale', 1)} × "
            f"layers`, fitted on the dense and fastest graphs; the others are held out):",
            "",
            Table([["graph", "measured ms", "isolated layers + rest ms", "table ms", "table error"], *checks]),
            "",
        ]
    sc = t.get("screens") or {}
    if sc.get("count"):
        what = (
            f"{1e3 * sc['offset_ms']:+.1f} µs off the table (the median, shrunk by two standard errors; at most "
            f"half the headroom over the floor counts); trials after the first {FEEDBACK_MIN} were allocated under "
            "the budget less that"
            if sc["count"] >= FEEDBACK_MIN
            else f"too few to correct the table (it takes {FEEDBACK_MIN})"
        )
        lines += [f"The screens against the table: {sc['count']} allocations measured whole, {what}.", ""]
    rows = [["layer", "candidates", "dense ms", "chosen", "chosen ms", "sensitivity", "why"]] + [
        [
            r["layer"],
            str(r["candidates"]),
            _fmt(r["dense_ms"], ".4f"),
            r["chosen"],
            _fmt(r["chosen_ms"], ".4f"),
            _fmt(r["sensitivity"], ".3g"),
            r.get("why", ""),
        ]
        for r in t.get("rows") or []
    ]
    if len(rows) > 1:
        lines += [Table(rows), ""]
    for g in t.get("left_alone") or []:
        lines.append(
            f"- Left dense, not decomposable: {g['count']} layer(s) (e.g. {', '.join(g['layers'])}): {g['reason']}."
        )
    lines += [f"- {n}" for n in t.get("notes") or []]
    return lines


def _md_search(rep: dict[str, Any]) -> list[str]:
    """The search section: counts and time per stage, notes, finalists, Pareto front."""
    s = rep["search"]
    lines = [
        "## Search",
        "",
        f"{s['trials']} trials ({s['sampler']}, objective `{s['objective']}`"
        f"{_workers_note(s)}): {s['feasible']} feasible, "
        f"{s['screened_out']} screened out before training, {s['pruned']} pruned, {s['failed']} failed; "
        f"{s['wall_s']:.1f} s in trials. Time per stage: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(s.get("time_s", {}).items()))
        + ".",
        "",
    ]
    lines += [f"- {note}" for note in s.get("notes") or []]
    if s.get("finalists"):
        rows = [
            [
                "trial",
                "plan",
                "val F1",
                "re-measured p50 ms",
                "re-measured budgeted pct ms",
                "within budget",
                "nodes",
                "shipped",
            ]
        ]
        for f in s["finalists"]:
            rows.append(
                [
                    str(f["trial"]),
                    _plan_short(f["plan"], _dtype(f)),
                    _fmt(f["val_score"], ".4f"),
                    _fmt(f["latency_p50_ms"], ".4f"),
                    _fmt(f["latency_ms"], ".4f"),
                    "yes" if f.get("within_budget", True) else "no",
                    str(f["nodes"]),
                    "✓" if f["shipped"] else "",
                ]
            )
        lines += [
            "",
            "Finalists (validation F1 within the tolerance of the best), measured again for longer; of "
            "those within the latency budget, the fastest (within 3%) with the fewest nodes ships:",
            "",
            Table(rows),
        ]
    if s.get("pareto_front") is not None:
        front = [t for t in rep["trials"] if t["number"] in set(s["pareto_front"])]
        rows = [["#", "plan", "params", "latency ms", "val F1"]] + [
            [
                str(t["number"]),
                _plan_short(t["plan"], _dtype(t)),
                _fmt(t["params"], ","),
                _fmt(t["latency_ms"], ".4f"),
                _fmt(t["val"].get("f1"), ".4f"),
            ]
            for t in sorted(front, key=lambda t: t["latency_ms"] or 0)
        ]
        lines += ["", "Pareto front (validation F1 vs target latency, feasible trials):", "", Table(rows)]
    return lines


_CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}.pass{color:#1a7f37}.fail{color:#c62828}
code{background:#f5f5f5;padding:1px 4px}"""


def render_html(rep: dict[str, Any], out: Path) -> str:
    """A self-contained page of the same blocks as ``report.md``: tables inline, plots embedded as base64 PNG."""
    title = f"edgeopt — {html.escape(rep['task']['name'])} on {html.escape(rep['target']['name'])}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{title}</title>",
        f"<style>{_CSS}</style></head><body>",
    ]
    parts += html_blocks(report_blocks(rep), out, headline=headline(rep), passed=rep["best"]["budget"]["passed"])
    parts.append("</body></html>")
    return "\n".join(parts)


def html_blocks(blocks: list[str], out: Path, *, headline: str = "", passed: bool = True) -> list[str]:
    """Each block of :func:`report_blocks` as HTML; consecutive ``- `` lines make one list."""
    parts: list[str] = []
    items: list[str] = []
    for block in blocks:
        if not block.startswith("- ") and items:
            parts.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
            items = []
        image = _IMAGE.match(block)
        if isinstance(block, Table):
            parts.append(_html_table(block.rows))
        elif block.startswith("- "):
            items.append(_inline(block[2:]))
        elif block.startswith("#"):
            level = len(block) - len(block.lstrip("#"))
            parts.append(f"<h{level}>{_inline(block[level:].strip())}</h{level}>")
        elif image:
            parts.append(_html_image(image.group(1), out / image.group(2)))
        elif block == headline and block:
            parts.append(f"<p class='{'pass' if passed else 'fail'}'><b>{_inline(block)}</b></p>")
        elif block.startswith("_") and block.endswith("_") and len(block) > 1:
            parts.append(f"<p><small><i>{_inline(block[1:-1])}</i></small></p>")
        elif block:
            parts.append(f"<p>{_inline(block)}</p>")
    if items:
        parts.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    return parts


def _html_image(name: str, path: Path) -> str:
    if not path.exists():
        return f"<p>{html.escape(name)}: {html.escape(str(path))} is missing</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<h3>{html.escape(name)}</h3><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"


def rebuild(out: str | os.PathLike) -> dict[str, Any]:
    """``edgeopt report DIR``: rebuild every report file from ``compile.json`` and the study."""
    out = Path(out)
    state_path = out / "compile.json"
    if not state_path.exists():
        raise InputError(
            f"{out} is not an edgeopt output dir: {state_path.name} is missing (run `edgeopt compile` first)."
        )
    try:
        state = json.loads(state_path.read_text())
    except ValueError as exc:
        raise InputError(f"{state_path}: not valid JSON ({exc}).") from None
    study = load_study(state["storage"], state["study"], out)
    return write_report(out, study=study, state=state)
