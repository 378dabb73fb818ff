"""report.md: the report as a list of blocks (headings, paragraphs, ``- `` bullets, tables, plots), joined
into CommonMark that ``report.html`` renders as it is, so the page carries every section the Markdown does."""

from __future__ import annotations

from typing import Any

from edgeopt.pipeline.finetune import below_trial, cut_note, epochs_text
from edgeopt.report._text import Table, change, trial_ref
from edgeopt.report.tables import (
    additivity_rows,
    alternative_rows,
    budget_rows,
    comparison_rows,
    finalist_rows,
    layer_choice_rows,
    pareto_rows,
    plan_rows,
    shipped_alternative,
    trial_caption,
    trial_rows,
)
from edgeopt.runtime.retake import REPRODUCE
from edgeopt.search.allocation.knobs import FEEDBACK_MIN


def headline(rep: dict[str, Any]) -> str:
    """One sentence: whether the artifact meets the budgets, and how it compares with the input model; a
    second when its plan is one of the alternatives (:func:`~edgeopt.report.tables.shipped_alternative`)."""
    best, base = rep["best"], rep["baseline"]
    checks = best["budget"].get("checks", [])
    if best["budget"]["passed"]:
        verdict = "meets every budget"
    elif checks and all(c.get("passed") is not False for c in checks):
        verdict = "could not be shown to meet every budget (a check was inconclusive)"
    else:
        verdict = "does NOT meet every budget"
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
    alt = shipped_alternative(rep)
    if alt is None:
        return ", ".join(parts) + "."
    return ", ".join(parts) + f". Its plan is the {alt['method']} alternative's: the search found none it preferred."


def join_blocks(blocks: list[str]) -> str:
    """The blocks as CommonMark: a blank line between blocks, consecutive bullets one list."""
    out: list[str] = []
    prev_bullet = False
    for block in blocks:
        if not block:
            continue
        bullet = block.startswith("- ")
        if out:
            out.append("\n" if bullet and prev_bullet else "\n\n")
        out.append(block)
        prev_bullet = bullet
    return "".join(out) + "\n"


def render_markdown(rep: dict[str, Any]) -> str:
    """report.md: headline, comparison, budgets, plan, search, trials, per-layer tables, plots."""
    return join_blocks(report_blocks(rep))


def report_blocks(rep: dict[str, Any]) -> list[str]:
    """The report as blocks, each one Markdown paragraph, heading, ``- `` bullet or plot, or a :class:`Table`."""
    blocks = [
        f"# edgeopt report — {rep['task']['name']} on {rep['target']['name']}",
        headline(rep),
        *_md_context(rep),
        "## Baseline vs edgeopt",
        Table(comparison_rows(rep)),
        *_md_finetune(rep["best"]),
        "## Budgets",
        Table(budget_rows(rep)),
        *_md_floor(rep),
        *_md_alternatives(rep),
        "## Chosen plan",
    ]
    if rep["best"].get("trial") is not None:
        blocks.append(f"Shipped: the plan of trial {trial_ref(rep['best']['trial'])}.")
    if rep.get("layers"):
        blocks.append(Table(plan_rows(rep)))
    else:
        blocks.append("The model has no layer edgeopt can decompose; it is shipped dense.")
    blocks += _md_search(rep)
    blocks += _md_tables(rep.get("tables"))
    if rep.get("plots"):
        blocks.append("## Plots")
    for name, rel in (rep.get("plots") or {}).items():
        blocks += [f"### {name}", f"![{name}]({rel})"]
    s = rep["search"]
    blocks.append(f"_edgeopt {rep['edgeopt_version']}; study `{s.get('study')}` in `{s.get('storage')}`._")
    return blocks


def _md_alternatives(rep: dict[str, Any]) -> list[str]:
    """edgeopt against what a user would try first, each distilled like the search's trials."""
    if not rep.get("alternatives"):
        return []
    return [
        "## Against the alternatives",
        "What a user would try first, built in this compile as trials of its study (distilled like every trial; "
        "an int8 row quantizes its fp32 row's trained model where that one was trained, dense + int8 the input "
        "model; latency from the trial's screen on the target; test scores from the files in `alternatives/`). "
        "The selection weighs them with the search's own plans.",
        Table(alternative_rows(rep)),
    ]


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


def _md_finetune(best: dict[str, Any]) -> list[str]:
    """The selected trial's validation score beside the artifact's, and a discarded fine-tune said as such."""
    ft = best.get("finetune")
    if not ft:
        return []
    line = (
        f"Validation score: trial {trial_ref(ft.get('selected_trial'))} {ft['trial_val_score']:.4f}, "
        f"artifact {ft['artifact_val_score']:.4f} ({epochs_text(ft)})."
    )
    if ft.get("fell_back"):
        why = ft.get("note") or f"it scored more than {ft.get('tolerance_pt')} pt below the trial"
        line += f" The final fine-tune was discarded and the trial's own weights ship: {why.rstrip('.')}."
    elif below_trial(ft):
        line += f" The fine-tuned file ships below the trial beyond the tolerance: {ft['note'].rstrip('.')}."
    cut = cut_note(ft)
    if cut:
        line += f" {cut[0].upper()}{cut[1:]}."
    return [line]


def _md_floor(rep: dict[str, Any]) -> list[str]:
    q = rep.get("quality_floor")
    if not q:
        return []
    return [
        f"Quality floor of the artifact: the input model's score less {100 * q['max_drop']:.0f} pt on the same "
        "split (the profile gives no `min_f1`; `--max-quality-drop` changes it). Trials are not held to it: "
        "their few epochs of distillation leave most students below what the final fine-tune reaches."
    ]


def _md_tables(t: dict[str, Any] | None) -> list[str]:
    """The per-layer tables: what was chosen per layer, and whether the layers add up to the graph."""
    if not t:
        return []
    blocks = [
        "## Per-layer tables",
        f"{t['layers']} layers, {t['candidates']} candidates, built in {t['build_s']:.1f} s"
        f"{' (read from tables.json)' if t.get('cached') else ''}; sensitivity = KL to the input model's "
        f"outputs with only that layer replaced, on {t.get('calibration_samples') or '?'} training samples.",
    ]
    a = t.get("additivity") or {}
    checks = additivity_rows(t)
    if checks:
        blocks += [
            f"Do the layers add up? Whole graphs measured against the table (`rest + {a.get('scale', 1)} × "
            f"layers`, fitted on the dense and fastest graphs; the others are held out):",
            Table(checks),
            *_md_held_out(t),
        ]
    blocks += _md_screens(t.get("screens") or {})
    if t.get("rows"):
        blocks += [
            "Per layer: a layer's own latency after the change, and what it saves; a pruned layer also saves in "
            "the layers that read its output (the table credits that saving to the pruned layer).",
            Table(layer_choice_rows(t["rows"])),
            *_md_overlaps(t["rows"]),
        ]
    for g in t.get("left_alone") or []:
        blocks.append(
            f"- Left dense, not decomposable: {g['count']} layer(s) (e.g. {', '.join(g['layers'])}): {g['reason']}."
        )
    blocks += [f"- {n}" for n in t.get("notes") or []]
    return blocks


def _md_held_out(t: dict[str, Any]) -> list[str]:
    """Whether the table's error on the held-out graph mattered to what shipped, in one sentence."""
    a = t.get("additivity") or {}
    g = (a.get("graphs") or {}).get(a.get("held_out") or "")
    if not g or g.get("error_pct") is None:
        return []
    n = (t.get("screens") or {}).get("count") or 0
    how = (
        f"only steers the search: every allocation was measured as one graph before training "
        f"({n} screen{'s' if n != 1 else ''})"
        if n
        else "steered which plans were tried"
    )
    return [
        f"The held-out error ({g['error_pct']:+.1f}%) {how}; the shipped plan was measured whole, and its "
        "budget verdict rests on model.onnx's own measurement, not on the table."
    ]


def _md_overlaps(rows: list[dict[str, Any]]) -> list[str]:
    """A layer narrowed by a pruned one and changed itself saves twice in the table: say so, once per layer."""
    changed = {r["layer"]: r["chosen"] for r in rows if r["chosen"] != "dense"}
    out = []
    for r in rows:
        for m in r.get("narrows") or []:
            if m in changed:
                out.append(
                    f"- {m}: both savings are counted, {r['chosen']} of {r['layer']} narrowing its input and its own "
                    f"{changed[m]}; they overlap, so the table's sum undercuts the graph (the fit corrects the scale)."
                )
    return out


def _md_screens(sc: dict[str, Any]) -> list[str]:
    if not sc.get("count"):
        return []
    what = (
        f"{1e3 * sc['offset_ms']:+.1f} µs off the table (the median, shrunk by two standard errors; at most "
        f"half the room over the floor counts); trials after the first {FEEDBACK_MIN} were allocated under "
        f"the budget less selection's {100 * REPRODUCE:g} % headroom and less that"
        if sc["count"] >= FEEDBACK_MIN
        else f"too few to correct the table (it takes {FEEDBACK_MIN})"
    )
    n = sc["count"]
    return [f"The screens against the table: {n} allocation{'s' if n != 1 else ''} measured whole, {what}."]


def _workers_note(s: dict[str, Any]) -> str:
    """``, 3 workers`` (the processes that ran the study's trials) when some of them ran side by side;
    ``, resumed: 2 runs one after the other`` when each started after the last had stopped."""
    n = len(s.get("workers") or {})
    if n > 1 and s.get("concurrent_workers", n) == 1:
        return f", resumed: {n} runs one after the other"
    return f", {n} workers" if n > 1 else ""


def _md_search(rep: dict[str, Any]) -> list[str]:
    """The search section: counts and time per stage, notes, finalists, Pareto front, the trials."""
    s = rep["search"]
    blocks = [
        "## Search",
        f"{s['trials']} trials ({s['sampler']}, objective `{s['objective']}`"
        f"{_workers_note(s)}): {s['feasible']} feasible, "
        f"{s['screened_out']} screened out before training, {s['pruned']} pruned, {s['failed']} failed"
        + (f", {s['queued']} queued and not run (the search's time ended first)" if s.get("queued") else "")
        + "; "
        f"{s['wall_s']:.1f} s in trials. Time per stage: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(s.get("time_s", {}).items()))
        + ".",
    ]
    blocks += [f"- {note}" for note in s.get("notes") or []]
    if s.get("finalists"):
        blocks += [
            "Finalists (validation F1 tied with the best: within the tolerance, or one standard error of the "
            "paired difference on the validation samples), measured again for longer; of those within the latency "
            "budget, the fastest (within 3%) with the fewest nodes ships:",
            Table(finalist_rows(s["finalists"])),
            *second_looks(s["finalists"]),
        ]
    if s.get("pareto_front") is not None:
        blocks += ["Pareto front (validation F1 vs target latency, feasible trials):", Table(pareto_rows(rep))]
    blocks += ["Trials (`#` is Optuna's trial number):", Table(trial_rows(rep)), trial_caption(rep)]
    return blocks


def second_looks(finalists: list[dict[str, Any]]) -> list[str]:
    """A sentence per finalist that shipped after a second measurement beside a lower tier's pick
    (pipeline/second_look.py): the window its tier was timed in, then the one it shared with the pick."""
    out = []
    for f in finalists:
        first, pick = f.get("first_look"), next((g for g in finalists if g["trial"] == f.get("beside")), None)
        if first is None or pick is None or "second_look" not in pick:
            continue
        out.append(
            f"Trial #{f['trial']} missed the budget in its tier's window (p95 {first['latency_ms']:.4f} ms, bound "
            f"{first.get('latency_bound_ms', first['latency_ms']):.4f}) and cleared it measured again beside "
            f"trial #{pick['trial']}, the lower tier's pick (p95 {f['latency_ms']:.4f} vs "
            f"{pick['second_look']['latency_ms']:.4f} ms): the tiers' windows, not the plans, had set them apart."
        )
    return out
