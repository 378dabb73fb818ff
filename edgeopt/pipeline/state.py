"""``compile.json``: the state of a finished compile, which ``edgeopt report`` rebuilds the report from."""

from __future__ import annotations

from typing import Any

from edgeopt import report as report_mod
from edgeopt.pipeline.config import CompileConfig
from edgeopt.pipeline.prepare import SearchInputs
from edgeopt.pipeline.select import Choice
from edgeopt.pipeline.ship import Shipped, baseline_cost, layer_table, with_nodes
from edgeopt.pipeline.storage import storage_url


def compile_state(
    inputs: SearchInputs,
    config: CompileConfig,
    study: Any,
    choice: Choice,
    shipped: Shipped,
    *,
    search_wall: float,
    finalists_s: float,
    wall_s: float,
) -> dict[str, Any]:
    """``compile.json``: what the report is rebuilt from."""
    target, out = inputs.target, config.out
    floor = inputs.implicit_floor
    return {
        "schema": "edgeopt.compile-state/1",
        "storage": storage_url(config.storage, out) if config.storage else "study.db",
        "study": study.study_name,
        "target": target.to_dict(),
        "task": inputs.task.describe(),
        "space": inputs.space.to_dict(),
        "objective": config.objective,
        "baseline": with_nodes(
            report_mod.artifact_entry,
            inputs.baseline,
            baseline_cost(inputs.base_cost, inputs.baseline_path),
            inputs.baseline_path,
            out,
            target=target,
            metric=inputs.task.metric_name,
            implicit_floor=floor,
        ),
        "best": with_nodes(
            report_mod.artifact_entry,
            shipped.measured,
            shipped.cost,
            shipped.path,
            out,
            plan=shipped.plan,
            dtype=shipped.dtype.value,
            trial=shipped.trial,
            timings=shipped.timings,
            target=target,
            metric=inputs.task.metric_name,
            implicit_floor=floor,
        ),
        "layers": layer_table(inputs.layers, shipped.plan, inputs.base_cost, shipped.cost),
        "finetune": shipped.finetune,  # the selected trial's and the artifact's val scores
        "int8_check": shipped.int8_check,  # per-layer int8: argmax agreement and max diff against torch
        "search_wall_s": search_wall,
        "finalists": choice.finalists,
        "selection": choice.decision,  # what shipped and why (edgeopt.pipeline.select.Choice.decision)
        "finalists_s": round(finalists_s, 3),
        "wall_s": wall_s,
        "search_reasons": choice.notes,
        "quality_floor": floor,
        "strategy": inputs.strategy.name,
        **(inputs.strategy.report(study, shipped) or {}),  # the strategy's sections, by key
    }
