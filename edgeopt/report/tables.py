"""The report's tables as rows (a header row, then body rows of strings), built once from report.json's data
and rendered by ``report.md``, ``report.html`` and the terminal alike, so the three never disagree."""

from __future__ import annotations

from typing import Any

from edgeopt.report._text import change, dtype_of, fmt, mib, plan_short, round4, trial_ref

TRIALS_SHOWN = 15  # the trial table's length; every trial is in report.json


def _params_label(rep: dict[str, Any]) -> str:
    """Counts read from the exported files (``nodes`` comes with them) say so; older compile.json counted modules."""
    return "parameters (in model.onnx)" if "nodes" in rep["best"] else "params"


def comparison_rows(rep: dict[str, Any]) -> list[list[str]]:
    """Baseline against the artifact: parameters, size, nodes, latency, memory and the task's metrics."""
    base, best = rep["baseline"], rep["best"]
    src = best.get("latency_source", "measured")
    rows = [["", "baseline (dense fp32)", "edgeopt", "change"]]
    params = change(base["params"], best["params"], "fewer", "more", "same", band=0)
    rows.append([_params_label(rep), f"{base['params']:,}", f"{best['params']:,}", params])
    size = change(base["size_bytes"], best["size_bytes"], "smaller", "larger", "same size", band=0)
    rows.append(["size", mib(base["size_bytes"]), mib(best["size_bytes"]), size])
    if best.get("nodes") is not None and base.get("nodes") is not None:
        rows.append(["ONNX nodes", f"{base['nodes']:,}", f"{best['nodes']:,}", ""])
    for p in ("p50", "p95"):
        a = (base.get("latency_ms") or {}).get(p)
        b = (best.get("latency_ms") or {}).get(p)
        rows.append([f"latency {p} ({src})", fmt(a, ".4f") + " ms", fmt(b, ".4f") + " ms", change(a, b, *_FASTER)])
    mem = [fmt(e.get("peak_memory_mb"), ".1f") + " MB" for e in (base, best)]
    rows.append(["peak memory", *mem, ""])
    for split in ("test", "val"):
        mb, mx = (base["metrics"] or {}).get(split), (best["metrics"] or {}).get(split)
        if not mb or not mx:
            continue
        for k in ("f1", "precision", "recall", "accuracy"):
            d = (mx[k] - mb[k]) * 100 if mx.get(k) is not None and mb.get(k) is not None else None
            rows.append(
                [f"{split} {k}", fmt(mb.get(k), ".4f"), fmt(mx.get(k), ".4f"), "" if d is None else f"{d:+.2f} pt"]
            )
    return rows


_FASTER = ("faster", "slower", "same speed")
# Why an alternative that does not meet the budget shows no scores, by its trial's status.
_NOT_MET = {"screened-out": "no (screened out)", "queued": "not run (the search's time ended first)"}


def shipped_alternative(rep: dict[str, Any]) -> dict[str, Any] | None:
    """The alternative whose plan shipped (its row of ``rep["alternatives"]``): the selected trial is that
    alternative's, or a trial of the search that came to the same plan and precision. None when the search's
    own plan or the input model shipped. A user reads from it that one line of uniform pruning (or of int8)
    would have done what edgeopt did, but for the final fine-tune."""
    best, alts = rep.get("best") or {}, rep.get("alternatives") or []
    trial = best.get("trial")
    if trial is None or not alts:
        return None
    same = {  # trial number -> (plan, dtype) of the trials the report lists
        t["number"]: (t.get("plan"), t.get("dtype")) for t in rep.get("trials") or [] if t.get("number") is not None
    }
    shipped = same.get(trial)
    for a in alts:
        if a.get("trial") == trial or (shipped is not None and shipped[0] and same.get(a.get("trial")) == shipped):
            return a
    return None


def alternative_rows(rep: dict[str, Any]) -> list[list[str]]:
    """edgeopt's artifact, the dense input model and each alternative: latency on the target, val and test
    score, whether it meets every budget (the artifact's and the input model's from their final
    measurement, the alternatives' from their trial's screen). The artifact's row names the alternative
    it is, when one shipped (:func:`shipped_alternative`)."""
    pct = str(int(float(rep["target"].get("budget", {}).get("latency_percentile") or 95)))
    rows = [["method", "p50 (ms)", f"p{pct} (ms)", "val score", "test score", "meets the budget"]]
    alt = shipped_alternative(rep)
    edgeopt = f"edgeopt (shipped: the {alt['method']} alternative, fine-tuned)" if alt else "edgeopt (shipped)"
    for side, name in (("best", edgeopt), ("baseline", "dense input model (fp32)")):
        e = rep[side]
        lat, metrics = e.get("latency_ms") or {}, e.get("metrics") or {}
        rows.append(
            [
                name,
                fmt(lat.get("p50"), ".4f"),
                fmt(lat.get(f"p{pct}", lat.get("p95")), ".4f"),
                fmt((metrics.get("val") or {}).get("score"), ".4f"),
                fmt((metrics.get("test") or {}).get("score"), ".4f"),
                "yes" if e["budget"]["passed"] else "no",
            ]
        )
    for a in rep.get("alternatives") or []:
        met = "yes" if a["meets_budget"] else _NOT_MET.get(a["status"], "no")
        rows.append(
            [
                f"{a['method']} (trial {a['trial']})",
                fmt(a["latency_p50_ms"], ".4f"),
                fmt(a["latency_ms"], ".4f"),
                fmt(a["val"], ".4f"),
                fmt(a["test"], ".4f"),
                met,
            ]
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
                fmt(c["budget"]),
                fmt(round4(b.get("measured"))),
                fmt(round4(c["measured"])),
                fmt(round4(c.get("upper_bound"))),
                (c.get("status") or ("pass" if c["passed"] else "fail")).upper(),
            ]
        )
    return rows


def plan_rows(rep: dict[str, Any]) -> list[list[str]]:
    """The shipped plan per layer, ranks in the words of the layer's format (``256 of 1,024 outputs``)."""
    from edgeopt.compiler.formats import rank_text

    rows = [["layer", "format", "rank", "params (dense → edgeopt)", "MACs share", "est. latency share on target"]]
    for layer in rep.get("layers", []):
        ranks = layer.get("ranks")
        rows.append(
            [
                layer["name"],
                layer["format"],
                rank_text(layer["format"], ranks if isinstance(ranks, list) else None, width=layer.get("width")),
                f"{layer['dense_params']:,} → {layer['params']:,}",
                f"{layer['macs_share'] * 100:.1f}%",
                "–" if layer["latency_share"] is None else f"{layer['latency_share'] * 100:.1f}%",
            ]
        )
    return rows


def _trial_order(t: dict[str, Any]) -> tuple:
    return (not t["feasible"], -(t["val"].get("score") or 0), t["number"])


def trial_rows(rep: dict[str, Any], limit: int = TRIALS_SHOWN) -> list[list[str]]:
    """The first ``limit`` trials: the feasible ones first, each group by validation score, best first."""
    rows = [["#", "status", "plan", "params", "latency ms", "val F1", "time s"]]
    for t in sorted(rep["trials"], key=_trial_order)[:limit]:
        rows.append(
            [
                trial_ref(t["number"]),
                t["status"] + (" ✓" if t["feasible"] else ""),
                plan_short(t["plan"], dtype_of(t)),
                fmt(t["params"], ","),
                fmt(t["latency_ms"], ".4f"),
                fmt(t["val"].get("f1"), ".4f"),
                fmt(t["duration_s"], ".1f"),
            ]
        )
    return rows


def trial_caption(rep: dict[str, Any], limit: int = TRIALS_SHOWN) -> str:
    """The rule that cut the trial table, or "" when every trial is in it."""
    n = len(rep["trials"])
    if n <= limit:
        return ""
    return (
        f"{limit} of {n} trials shown: the feasible ones first, each group by validation score, best first; "
        f"all {n} in report.json."
    )


def tier_cell(f: dict[str, Any]) -> str:
    """``2 (±1.04 pt of #21)``: the tier of F1 a finalist was measured in and the band that tied it to the
    tier's best (selection's ties, pipeline/ties.py); ``–`` in reports written before ties were recorded."""
    if f.get("tier") is None:
        return "–"
    best = f.get("tier_best")
    of = "" if best is None or best == f["trial"] or best < 0 else f" of #{best}"
    return f"{f['tier']} (±{f['tie_band_pt']:.2f} pt{of})"


def finalist_rows(finalists: list[dict[str, Any]]) -> list[list[str]]:
    head = ["trial", "plan", "val F1", "tier (tied within)", "re-measured p50 ms", "re-measured budgeted pct ms"]
    head += ["its upper bound ms", "within budget", "nodes"]
    rows = [[*head, "shipped"]]
    for f in finalists:
        rows.append(
            [
                trial_ref(f["trial"]),
                plan_short(f["plan"], dtype_of(f)),
                fmt(f["val_score"], ".4f"),
                tier_cell(f),
                fmt(f["latency_p50_ms"], ".4f"),
                fmt(f["latency_ms"], ".4f"),
                fmt(f.get("latency_bound_ms"), ".4f"),
                "yes" if f.get("within_budget", True) else "no",
                str(f["nodes"]),
                "✓" if f["shipped"] else "",
            ]
        )
    return rows


def pareto_rows(rep: dict[str, Any]) -> list[list[str]]:
    front = [t for t in rep["trials"] if t["number"] in set(rep["search"]["pareto_front"])]
    rows = [["#", "plan", "params", "latency ms", "val F1"]]
    for t in sorted(front, key=lambda t: t["latency_ms"] or 0):
        rows.append(
            [
                trial_ref(t["number"]),
                plan_short(t["plan"], dtype_of(t)),
                fmt(t["params"], ","),
                fmt(t["latency_ms"], ".4f"),
                fmt(t["val"].get("f1"), ".4f"),
            ]
        )
    return rows


def graph_ms(v: Any) -> str:
    """A whole-graph sum of the table: a latency, or what a sum below zero is (prune rungs credit their
    consumers' saving to themselves, so their sum can undercut the graph)."""
    if v is not None and v < 0:
        return "below zero: the prune credits exceed the rest of the graph; fit not trusted"
    return fmt(v, ".4f")


def additivity_rows(t: dict[str, Any]) -> list[list[str]]:
    """Whole graphs measured against the table (and the shipped plan), one row each; [] when none."""
    rows = [
        [name, fmt(g["measured_ms"], ".4f"), graph_ms(g.get("isolated_sum_ms")), graph_ms(g.get("table_ms")), _pct(g)]
        for name, g in ((t.get("additivity") or {}).get("graphs") or {}).items()
    ]
    if t.get("shipped"):
        s = t["shipped"]
        rows.append(["shipped plan", fmt(s["measured_ms"], ".4f"), "", graph_ms(s["table_ms"]), _pct(s)])
    if not rows:
        return []
    return [["graph", "measured ms", "isolated layers + rest ms", "table ms", "table error"], *rows]


def _pct(g: dict[str, Any]) -> str:
    return f"{g['error_pct']:+.1f}%" if g.get("error_pct") is not None else "–"


def layer_choice_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """What the table chose per layer, a saving shown where it lands: a pruned layer's own latency after
    pruning, and the saving in the layers it narrows (the table credits both to the pruned layer)."""
    out = [["layer", "candidates", "dense ms", "chosen", "own ms", "saves", "sensitivity", "why"]]
    for r in rows:
        own = r.get("own_ms", r["chosen_ms"])
        out.append(
            [
                r["layer"],
                str(r["candidates"]),
                fmt(r["dense_ms"], ".4f"),
                r["chosen"],
                graph_ms(own),
                _saves(r, own),
                fmt(r["sensitivity"], ".3g"),
                "" if str(r.get("why", "")).startswith("saves") else r.get("why", ""),
            ]
        )
    return out


def _saves(r: dict[str, Any], own: float) -> str:
    """``0.0243 ms here, 0.5341 ms in fc2 (its input narrowed)``; "–" for a layer left dense."""
    if r["chosen"] == "dense":
        return "–"
    here = r["dense_ms"] - own
    parts = [f"{here:.4f} ms here" if here >= 0 else f"costs {-here:.4f} ms more here"] if abs(here) >= 5e-5 else []
    elsewhere = r.get("saves_elsewhere_ms")
    if elsewhere:
        narrows = r.get("narrows") or []
        what = "its input narrowed" if len(narrows) == 1 else "inputs narrowed"
        parts.append(f"{elsewhere:.4f} ms in {', '.join(narrows) or 'the layers it narrows'} ({what})")
    return ", ".join(parts) or "0 ms"
