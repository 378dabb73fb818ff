"""The report's plots, drawn into ``plots/*.png``: Optuna's matplotlib visualizations where one exists
(optimization history, the Pareto front of a two-objective study), plain matplotlib otherwise."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from edgeopt._io import atomic_path
from edgeopt.pipeline.record import QUALITY, TrialRecord, quality_floor_label


def draw_plots(out: Path, study: Any, rep: dict[str, Any]) -> dict[str, str]:
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
    if rep.get("alternatives"):
        save(_frontier(plt, rep), "frontier.png")
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
    _marks(ax, rep, pct, metric)
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


def _frontier(plt: Any, rep: dict[str, Any]) -> Any:
    """edgeopt against the alternatives: every trained trial and every alternative, target latency against
    validation score, with the budget line and the shipped artifact."""
    budget = rep["target"].get("budget", {})
    pct = _pct_key(budget.get("latency_percentile") or 95)
    metric = rep["task"]["metric"]
    alts = {a["trial"] for a in rep["alternatives"]}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    own = [t for t in rep["trials"] if t["status"] == "trained" and t["number"] not in alts and t["latency_ms"]]
    if own:
        ax.scatter([t["latency_ms"] for t in own], [t["val"]["score"] for t in own], c="tab:blue", s=14, label="trials")
    trained = [a for a in rep["alternatives"] if a["val"] is not None and a["latency_ms"]]
    for a in trained:
        short = a["method"].replace("uniform prune ", "").replace(" + int8", "+i8").replace("dense+i8", "dense int8")
        ax.scatter([a["latency_ms"]], [a["val"]], marker="D" if "int8" in a["method"] else "s", c="tab:purple", s=30)
        ax.annotate(short, (a["latency_ms"], a["val"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if trained:
        ax.scatter([], [], marker="s", c="tab:purple", label="alternatives: uniform prune keeping k/n (◆ +int8)")
    _marks(ax, rep, pct, metric)
    _zoom(ax, [t["latency_ms"] for t in own] + [a["latency_ms"] for a in trained], budget.get("latency_ms"))
    ax.set_xscale("log")
    ax.set_xlabel(f"p{pct} latency on {rep['target']['name']} (ms)")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"edgeopt against the alternatives ({len(trained)} trained)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def _zoom(ax: Any, xs: list[float], budget_ms: float | None) -> None:
    """The points fill the plot: a budget far to their right is named at the edge instead of widening it."""
    if not xs:
        return
    lo, hi = min(xs), max(xs)
    if budget_ms and budget_ms > 3 * hi:
        ax.set_xlim(lo / 1.3, hi * 1.5)
        ax.annotate(f"budget {budget_ms:g} ms →", (1, 0.02), xycoords="axes fraction", ha="right", fontsize=7, c="red")
    ys = [p.get_offsets()[:, 1] for p in ax.collections if len(p.get_offsets())]
    if ys:
        import numpy as np

        y = np.concatenate(ys)
        ax.set_ylim(float(y.min()) - 0.02, min(1.0, float(y.max())) + 0.02)


def _marks(ax: Any, rep: dict[str, Any], pct: str, metric: str) -> None:
    """The baseline and the artifact as stars, the latency budget and the quality floor as lines."""
    budget = rep["target"].get("budget", {})
    for side, color, label in (("baseline", "black", "baseline (dense)"), ("best", "tab:green", "shipped artifact")):
        entry = rep[side]
        x, y = [(entry["latency_ms"] or {}).get(f"p{pct}")], [entry["metrics"]["val"]["score"]]
        ax.scatter(x, y, marker="*", s=200, c=color, label=label, zorder=4)
    if budget.get("latency_ms"):
        ax.axvline(budget["latency_ms"], c="red", ls="--", lw=1, label=f"latency budget ({budget['latency_ms']} ms)")
    if budget.get(QUALITY.budget_field):
        floor = budget[QUALITY.budget_field]
        ax.axhline(floor, c="red", ls=":", lw=1, label=f"{quality_floor_label(metric)} ≥ {floor}")


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
    from edgeopt.compiler.formats import rank_text

    ranks = [rank_text(x["format"], x.get("ranks") or None, width=x.get("width")) for x in layers]
    names = [f"{x['name']} ({x['format']}{'' if r == '–' else ', ' + r})" for x, r in zip(layers, ranks)]
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
