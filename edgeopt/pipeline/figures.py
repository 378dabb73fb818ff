"""The figures of a shipped file, counted from the file and from the model that was built.

Totals (parameters, bytes, nodes) come from the ONNX file with :func:`edgeopt.runtime.bench.model_info`,
the count ``edgeopt bench`` prints: every initializer's elements, after export folded BatchNorm into
the convolutions and after pruning narrowed the consumers of a pruned layer. Per layer, the figures
come from the built student's modules, not from ``plan_cost``'s paper estimate, which prices each
layer against the teacher's shapes (a low-rank layer after a pruned one is priced at its old width).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from edgeopt.compiler.formats import DEFAULT_FORMAT, LayerCost


@dataclass(frozen=True)
class ArtifactCost:
    """An ONNX file's figures: ``params``, ``size_bytes`` and ``nodes`` read from the file; ``macs`` and
    ``layers`` (per decomposable layer of the input model) from the built model."""

    params: int
    size_bytes: int
    nodes: int
    macs: int
    layers: dict[str, LayerCost] = field(default_factory=dict)
    exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "size_bytes": self.size_bytes,
            "nodes": self.nodes,
            "macs": self.macs,
            "layers": {k: v.to_dict() for k, v in self.layers.items()},
        }


def file_cost(path: str | os.PathLike, macs: int, layers: dict[str, LayerCost] | None = None) -> ArtifactCost:
    """The figures of the ONNX file at ``path`` (bench's count), with the model's MACs and layers."""
    from edgeopt.runtime.bench import model_info

    info = model_info(path)
    return ArtifactCost(int(info["params"]), int(info["size_bytes"]), int(info["nodes"]), int(macs), layers or {})


def built_layers(student: Any, teacher_layers: dict[str, Any], example_input: Any = None) -> dict[str, LayerCost]:
    """Per decomposable layer of the teacher, what the built ``student`` holds under that name: its
    parameters counted from the module, its format, ranks and MACs from the layer's report (a layer the
    plan left dense: from the student's own shapes, narrower when a pruned layer feeds it)."""
    from edgeopt.compiler.decompose import decomposable_layers, layer_reports

    reports = {}
    for r in layer_reports(student):
        reports.update(dict.fromkeys((r.name, *r.aliases), r))
    specs = decomposable_layers(student, example_input)
    modules = dict(student.named_modules(remove_duplicate=False))
    out = {}
    for name, spec in teacher_layers.items():
        module = modules.get(name)
        if module is None:
            continue
        report, now = reports.get(name), specs.get(name)
        params = sum(p.numel() for p in module.parameters())
        if report is not None:
            out[name] = LayerCost(report.format, params, int(report.macs or 0), report.ranks)
        else:
            macs = now.macs if now is not None else getattr(spec, "macs", 0)
            out[name] = LayerCost(DEFAULT_FORMAT, params, int(macs or 0))
    return out


def built_macs(paper: Any, teacher_layers: dict[str, Any], built: dict[str, LayerCost]) -> int:
    """The plan's MACs with each decomposable layer's paper figure replaced by the built one's."""
    macs = int(paper.macs)
    for name, layer in built.items():
        priced = paper.layers.get(name)
        macs += layer.macs - int(priced.macs if priced is not None else getattr(teacher_layers[name], "macs", 0))
    return macs


__all__ = ["ArtifactCost", "built_layers", "built_macs", "file_cost"]
