"""The search's goals (model size, speed against dense and int8, search efficiency) against the results
of ``edgeopt_vs_baselines_on_architectures`` and ``search_beats_random`` in the results folder (else the
committed ones):
met, or missed by how much. Measures nothing itself (no lock needed):

    python -m benchmarks search_goals_met
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from benchmarks.suite import RESULTS, Outcome, load

ARCH, SEARCH = "edgeopt_vs_baselines_on_architectures", "search_beats_random"  # whose results are read

LEAN = ("resnet8", "mobilenet")  # ResNet-8-class and MobileNet-class: the lean ones
RESNET_VIT = ("resnet8", "vit")
SAME_LATENCY = 1.03  # "at no more latency": within 3% of edgeopt's measured p50 (the finalists' tie rule)


def _rows(ex: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for r in ex["rows"]:
        key = r["method"].split(" r=")[0]
        out[key] = r
    return out


def _label(r: dict[str, Any]) -> str:
    return r["method"].split(" (")[0]


def model_goals(ex: dict[str, Any]) -> list[tuple[str, str, str]]:
    name = ex["example"]
    base = name.split(" ")[0]  # "vit (pre-redesign ...)" is a vit
    rows = _rows(ex)
    e, d, q = rows.get("edgeopt", {}), rows["dense fp32"], rows.get("ORT int8 (dense)", {})
    goals = []
    if "error" in e or "test_f1" not in e:
        err = str(e.get("error", "?")).replace("|", "/")[:260]
        refused = "Refused" in err
        return [
            (
                f"{name}: edgeopt ships a plan at ½ dense p95",
                err,
                "refused as below the floor (no plan to compare)" if refused else "**missed**: failed",
            )
        ]
    unif = [r for k, r in rows.items() if k.startswith("uniform") and "test_f1" in r]
    # "at no more latency": the uniform plans within 3% of edgeopt's p50 (a slower one is not a rival)
    rivals = [r for r in unif if r["p50_ms"] <= SAME_LATENCY * e["p50_ms"]]
    slower = [r for r in unif if r not in rivals]
    if unif:
        slow = "; ".join(
            f"{_label(r)} is {r['p50_ms'] / e['p50_ms']:.2f}× edgeopt's p50 (F1 {r['test_f1']:.4f})" for r in slower
        )
        if rivals:
            best = max(rivals, key=lambda r: r["test_f1"])
            gap = (e["test_f1"] - best["test_f1"]) * 100
            note = (
                f"edgeopt {e['test_f1']:.4f} at p50 {e['p50_ms'] * 1e3:.0f} µs vs {_label(best)} {best['test_f1']:.4f} "
                f"at {best['p50_ms'] * 1e3:.0f} µs ({gap:+.2f} pt)" + (f"; {slow}" if slow else "")
            )
        else:
            gap = None
            note = f"no uniform plan gets down to edgeopt's p50 {e['p50_ms'] * 1e3:.0f} µs: {slow}"
        goals.append(
            (
                f"{name}: test F1 ≥ best uniform plan's at no more latency",
                note,
                "met" if gap is None or gap >= 0 else f"**missed** by {-gap:.2f} pt",
            )
        )
        if base in LEAN:
            if gap is None:
                sp = min(r["p50_ms"] for r in slower) / e["p50_ms"]
                verdict = (
                    "met (faster than every uniform plan)" if sp >= 1.3 else f"**missed**: {sp:.2f}× faster, not 1.3×"
                )
                goals.append(
                    (
                        (
                            f"{name}: ≥ 0.5 pt better than the best uniform plan at equal latency "
                            "(or ≥ 1.3× faster at equal F1)"
                        ),
                        f"edgeopt {sp:.2f}× faster than the fastest uniform plan",
                        verdict,
                    )
                )
            else:
                goals.append(
                    (
                        (
                            f"{name}: ≥ 0.5 pt better than the best uniform plan at equal latency "
                            "(or ≥ 1.3× faster at equal F1)"
                        ),
                        f"{gap:+.2f} pt",
                        "met" if gap >= 0.5 else f"**missed** by {0.5 - gap:.2f} pt",
                    )
                )
    if base in RESNET_VIT and ex.get("budget_fraction", 0.5) == 0.5:
        passed = e.get("detail", {}).get("passed")
        goals.append(
            (
                f"{name}: budget (p95 ≤ ½ dense p95) met",
                f"p95 {e['p95_ms'] * 1e3:.0f} µs vs budget "
                f"{ex['budget_overrides']['latency_ms'] * 1e3:.0f} µs (edgeopt's own release measurement: "
                f"{'met' if passed else 'not met'})",
                "met"
                if e["p95_ms"] <= ex["budget_overrides"]["latency_ms"]
                else f"**missed** by {(e['p95_ms'] / ex['budget_overrides']['latency_ms'] - 1) * 100:.0f}%",
            )
        )
        sp = d["p50_ms"] / e["p50_ms"]
        goals.append(
            (
                f"{name}: ≥ 2× lower p50 than dense",
                f"{d['p50_ms'] * 1e3:.0f} → {e['p50_ms'] * 1e3:.0f} µs ({sp:.2f}×)",
                "met" if sp >= 2 else f"**missed** ({sp:.2f}× of 2×)",
            )
        )
        if "p50_ms" in q:
            sq = q["p50_ms"] / e["p50_ms"]
            goals.append(
                (
                    f"{name}: ≥ 1.5× lower p50 than ORT static int8",
                    f"{q['p50_ms'] * 1e3:.0f} → {e['p50_ms'] * 1e3:.0f} µs ({sq:.2f}×)",
                    "met" if sq >= 1.5 else f"**missed** ({sq:.2f}× of 1.5×)",
                )
            )
        loss = (d["test_f1"] - e["test_f1"]) * 100
        goals.append(
            (
                f"{name}: ≤ 1 pt test F1 lost",
                f"{d['test_f1']:.4f} → {e['test_f1']:.4f} ({loss:+.2f} pt lost)",
                "met" if loss <= 1 else f"**missed** by {loss - 1:.2f} pt",
            )
        )
    return goals


def markdown(arch: dict[str, Any] | None, eff: dict[str, Any] | None) -> str:
    lines = ["| goal | measured | verdict |", "|---|---|---|"]
    if arch:
        for ex in arch.get("architectures", []):
            lines += [f"| {g} | {m} | {v} |" for g, m, v in model_goals(ex)]
        for ref in arch.get("refusals") or ([arch["refusal"]] if arch.get("refusal") else []):
            lines.append(
                "| a budget below the floor refused in ≤ 60 s with the floor stated "
                f"| {ref['note']} | {ref['verdict']} |"
            )
    if eff:
        for m in eff.get("models", []):
            mr = m.get("median_ratio")
            lines.append(
                f"| search efficiency, {m['model']}: median time to best feasible ≤ ½ RandomSampler's, same warm start "
                f"({'shared' if eff.get('shared_warm_start') else 'TPE only'}) | median ratio "
                f"{'—' if mr is None else f'{mr:.2f}'} over {len(m['seeds'])} seeds |"
                f" {'—' if mr is None else ('met' if mr <= 0.5 else f'**missed** ({mr:.2f} of 0.50)')} |"
            )
    return "\n".join(lines)


def run(args: SimpleNamespace) -> Outcome:
    """The goals table from the two results in ``args.out`` (measures nothing)."""
    arch = load(args.out, ARCH) or load(RESULTS, ARCH)
    search = load(args.out, SEARCH) or load(RESULTS, SEARCH)
    missing = [
        n for n, r in (("edgeopt_vs_baselines_on_architectures", arch), ("search_beats_random", search)) if not r
    ]
    md = markdown(arch, search)
    return Outcome(
        {"goals_markdown": md, "inputs_missing": missing}, md + "\n", [f"no result yet: {m}" for m in missing]
    )
