"""What the report reads from the exported dense graph (``baseline.onnx``): each layer's output width and
the layers that consume its output, so that a pruned layer's saving can be credited to the layers it narrows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_LAYER_OPS = ("Gemm", "MatMul", "Conv", "ConvTranspose")


def _layer_of(node: Any, weights: dict[str, list[int]]) -> str | None:
    """The module a layer node came from: its weight's name (``fc2.weight``), else its node path (``/fc2/Gemm``)."""
    for name in node.input[1:2]:
        if name in weights and name.endswith(".weight"):
            return name[: -len(".weight")]
    parts = node.name.strip("/").split("/")
    return ".".join(parts[:-1]) if len(parts) > 1 else None


def read_graph(path: Path) -> dict[str, Any]:
    """``{"widths": {layer: outputs}, "consumers": {layer: [layers]}}`` of a dense ONNX file; empty when unreadable."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return {"widths": {}, "consumers": {}}
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    widths, consumers = {}, {}
    for node in model.graph.node:
        layer = _layer_of(node, weights) if node.op_type in _LAYER_OPS else None
        if layer is None:
            continue
        w = weights.get(f"{layer}.weight")
        if w:
            widths[layer] = int(w[1] if node.op_type == "ConvTranspose" else w[0])
        consumers[layer] = _next_layers(node, readers, weights)
    return {"widths": widths, "consumers": consumers}


def _next_layers(node: Any, readers: dict[str, list[Any]], weights: dict[str, list[int]]) -> list[str]:
    """The layers reached from ``node``'s outputs through nodes that are not layers (activations, norms, adds)."""
    found: list[str] = []
    seen: set[int] = set()
    todo = list(node.output)
    while todo:
        for reader in readers.get(todo.pop(), []):
            if id(reader) in seen:
                continue
            seen.add(id(reader))
            layer = _layer_of(reader, weights) if reader.op_type in _LAYER_OPS else None
            if layer is not None:
                found.append(layer)
            else:
                todo.extend(reader.output)
    return sorted(set(found), key=found.index)
