"""int8 quantization with onnxruntime's own tooling (what most ONNX optimization flows do by default).

- MatMul/Gemm: dynamic quantization (int8 weights, activations quantized at run time).
- Conv: static QDQ quantization calibrated on training samples.
The quantized file is what gets scored and benchmarked: F1 is measured on it with onnxruntime.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt._io import atomic_path

log = logging.getLogger(__name__)


class _Reader:
    """Feeds calibration samples one batch at a time (onnxruntime's CalibrationDataReader protocol)."""

    def __init__(self, input_name: str, samples: np.ndarray, batch: int = 1) -> None:
        self._it = iter(
            [
                {input_name: np.ascontiguousarray(samples[i : i + batch], dtype=np.float32)}
                for i in range(0, len(samples), batch)
            ]
        )

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        pass


def _op_types(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, *, calibration: np.ndarray | None = None) -> Path:
    """Quantize ``src`` to int8 into ``dst`` (atomically) and return ``dst``."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    src, dst = Path(src), Path(dst)
    ops = _op_types(src)
    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="edgeopt-q-") as tmp:
        cur = src
        if "Conv" in ops and calibration is not None and len(calibration):
            nxt = Path(tmp) / "static.onnx"
            quantize_static(
                str(cur),
                str(nxt),
                _Reader(input_name, calibration[:128]),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
            cur = nxt
        if ops & {"MatMul", "Gemm"}:
            nxt = Path(tmp) / "dynamic.onnx"
            quantize_dynamic(str(cur), str(nxt), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
            cur = nxt
        model = onnx.load(str(cur))
        onnx.checker.check_model(model)
        with atomic_path(dst) as tmp_dst:
            onnx.save(model, str(tmp_dst))
    return dst


@contextlib.contextmanager
def _quiet_root() -> Iterator[None]:
    """onnxruntime's quantizer advises pre-processing on the root logger at every call: once per layer here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


#: the ops a layer's int8 rung quantizes (Conv static QDQ, MatMul/Gemm dynamic: :func:`quantize_layers`)
LAYER_OPS = ("Conv", "MatMul", "Gemm")


def layer_scopes(name: str) -> tuple[str, ...]:
    """The node-name prefixes of layer ``name`` in a TorchScript export: ``/features/features.1/features.1.0/``
    for a nested module, ``/fc1/`` for a top-level one (and ``/features/1/0/``, how some exports write it)."""
    parts = name.split(".")
    nested = "/" + "/".join(".".join(parts[: i + 1]) for i in range(len(parts))) + "/"
    return nested, "/" + "/".join(parts) + "/"


def scope_modules(node_name: str) -> set[str]:
    """The modules a TorchScript-exported node may sit in, by qualified name. Each scope of the node's
    name is a module's name relative to its nearest ancestor that is not a container: the children
    of a Sequential inside a block are scoped ``/stack2/shortcut/shortcut.0/`` (``stack2.shortcut.0``),
    of a Sequential inside a Sequential ``/features/features.1/`` (``features.1``). Which ancestors are
    containers the graph does not say, so every reading is kept; each starts at a child of the root."""
    scopes = [s for s in node_name.split("/")[1:-1] if s]
    names: list[set[str]] = []
    for i, scope in enumerate(scopes):
        names.append({scope} | {f"{a}.{scope}" for earlier in names[:i] for a in earlier})
    root = scopes[0] if scopes else ""
    return {n for group in names for n in group if n == root or n.startswith(root + ".")}


def in_layer(node_name: str, layer: str) -> bool:
    """Whether a TorchScript-exported node belongs to module ``layer`` (:func:`layer_scopes`, :func:`scope_modules`)."""
    return node_name.startswith(layer_scopes(layer)) or layer in scope_modules(node_name)


def layer_nodes(model: Any, layers: list[str]) -> dict[str, list[str]]:
    """The names of the Conv/MatMul/Gemm nodes of each layer in an exported graph: the TorchScript
    exporter scopes them ``/conv1/Conv``, ``/fc1/first/MatMul``; a graph without scopes (dynamo) is
    matched by the layer's initializer names (``fc1.weight``, ``fc1.second.weight``)."""
    nodes = [n for n in model.graph.node if n.op_type in LAYER_OPS]
    traced = {n.name: _traced_scopes(n) for n in nodes}
    out: dict[str, list[str]] = {}
    for name in layers:
        hit = [n.name for n in nodes if in_layer(n.name, name)]
        if not hit:
            hit = [n.name for n in nodes if any(i.startswith(name + ".") for i in n.input)]
        if not hit:
            hit = [n.name for n in nodes if name in traced[n.name][0]]
        parent, _, leaf = name.rpartition(".")
        if not hit and leaf in PACKED:
            hit = [n.name for n in nodes if parent in traced[n.name][0] and "in_proj" in traced[n.name][1]]
        out[name] = hit
    return out


#: nn.MultiheadAttention's q/k/v projections: one packed in-projection node in a graph exported undecomposed
PACKED = ("q_proj", "k_proj", "v_proj")


def _traced_scopes(node: Any) -> tuple[list[str], str]:
    """The qualified module names a dynamo-exported node was traced in (its ``pkg.torch.onnx.name_scopes``
    metadata, outermost first) and its FX node's text; empty for a TorchScript export."""
    import ast

    meta = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
    except (ValueError, SyntaxError):
        scopes = []
    return [str(s) for s in scopes], meta.get("pkg.torch.onnx.fx_node", "")


def quantize_layers(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    layers: list[str],
    *,
    calibration: np.ndarray,
    per_channel: bool = True,
) -> Path:
    """int8 of ``layers`` only, the rest left fp32, as :func:`quantize_onnx` quantizes a whole graph: their
    Conv nodes static QDQ (QuantizeLinear/DequantizeLinear at their inputs and outputs, calibrated on
    ``calibration``: training samples, MinMax; per-channel weights), their MatMul/Gemm nodes dynamic (int8
    weights, the activation quantized by the node itself). Static QDQ of a Linear layer ran slower than
    dynamic here (vit, every layer int8: p50 281 µs static, 234 dynamic, 352 fp32; `python -m benchmarks
    int8_linear_dynamic`, decision 0113).
    Written to ``dst`` atomically; raises ``ModelError`` when a layer has no node in the graph."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    from edgeopt.errors import ModelError

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=False)
    found = layer_nodes(model, layers)
    missing = [n for n, hit in found.items() if not hit]
    if missing:
        raise ModelError(f"int8: layer(s) {', '.join(missing)} have no Conv/MatMul/Gemm node in {src.name}")
    op = {n.name: n.op_type for n in model.graph.node}
    nodes = [n for hit in found.values() for n in hit]
    convs, matmuls = [n for n in nodes if op[n] == "Conv"], [n for n in nodes if op[n] != "Conv"]
    with tempfile.TemporaryDirectory(prefix="edgeopt-q-") as tmp, _quiet_root():
        cur = src
        if convs:
            cur, nxt = Path(tmp) / "qdq.onnx", cur
            quantize_static(
                str(nxt),
                str(cur),
                _Reader(model.graph.input[0].name, calibration[:128], batch=min(32, max(1, len(calibration)))),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                nodes_to_quantize=convs,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
            )
        if matmuls:
            cur, nxt = Path(tmp) / "dynamic.onnx", cur
            quantize_dynamic(
                str(nxt),
                str(cur),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
                # the quantizer rewrites every Gemm as MatMul + Add first, the MatMul named "<Gemm>_MatMul"
                # (onnxruntime 1.32; tests/search/test_int8_layers.py pins it: a Gemm layer left fp32 fails it)
                nodes_to_quantize=[*matmuls, *(f"{n}_MatMul" for n in matmuls if op[n] == "Gemm")],
            )
        q = onnx.load(str(cur))
        onnx.checker.check_model(q)
        with atomic_path(dst) as tmp_dst:
            onnx.save(q, str(tmp_dst))
    return dst


def static_layer(module: Any) -> bool:
    """Whether a layer's int8 is static QDQ (it has a convolution: :func:`quantize_layers`), whose interior
    Q/DQ pairs a run of int8 layers fuses away; a Linear layer's dynamic int8 quantizes its own input."""
    from torch import nn

    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    return any(isinstance(m, convs) for m in module.modules())


def qdq_per_layer(path: str | os.PathLike, layers: list[str]) -> dict[str, int]:
    """The int8 entries at each of ``layers`` (a QuantizeLinear fed by one of its nodes or feeding one through
    its DequantizeLinear: static QDQ; a DynamicQuantizeLinear feeding one: dynamic), and ``"(other)"`` for
    the rest: where the int8 boundaries of a graph are."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    producer = {o: n.name for n in nodes for o in n.output}
    users: dict[str, list[str]] = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n.name)
    deq = {n.input[0]: n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    counts = dict.fromkeys([*layers, "(other)"], 0)
    for n in nodes:
        if n.op_type == "QuantizeLinear":
            near = [producer.get(n.input[0], ""), *users.get(deq.get(n.output[0], ""), [])]
        elif n.op_type == "DynamicQuantizeLinear":
            near = users.get(n.output[0], [])
        else:
            continue
        owner = next((ly for ly in layers if any(in_layer(u, ly) for u in near if u)), "(other)")
        counts[owner] += 1
    return counts


#: argmax agreement with torch on a validation batch below which an int8 artifact is reported as off
INT8_AGREEMENT = 0.9


def quantize_plan(src: str | os.PathLike, dst: str | os.PathLike, plan: Any, *, calibration: np.ndarray) -> Path:
    """``src`` with the layers ``plan`` runs in int8 quantized (:func:`quantize_layers`); ``src`` itself
    when the plan has none."""
    from edgeopt.compiler.formats import int8_layers

    layers = int8_layers(plan)
    return quantize_layers(src, dst, layers, calibration=calibration) if layers else Path(src)


def verify_int8(model: Any, path: str | os.PathLike, X: np.ndarray) -> dict[str, float]:
    """An int8 file against its fp32 torch ``model`` on ``X``: int8 moves the logits by design, so the
    check is the share of samples whose argmax agrees, with the largest absolute logit difference reported."""
    import onnxruntime as ort
    import torch

    x = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    with torch.no_grad():
        ref = model.eval()(torch.as_tensor(x)).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    agree = float(np.mean(ref.reshape(len(x), -1).argmax(-1) == got.reshape(len(x), -1).argmax(-1)))
    out = {"argmax_agreement": round(agree, 4), "max_abs_diff": float(np.abs(ref - got).max()), "samples": len(x)}
    if agree < INT8_AGREEMENT:
        log.warning(
            "int8 artifact %s: argmax agrees with torch on %.0f%% of %d samples (max |diff| %.3g)",
            Path(path).name,
            100 * agree,
            len(x),
            out["max_abs_diff"],
        )
    return out


__all__ = [
    "INT8_AGREEMENT",
    "LAYER_OPS",
    "layer_nodes",
    "layer_scopes",
    "qdq_per_layer",
    "quantize_layers",
    "quantize_onnx",
    "quantize_plan",
    "static_layer",
    "verify_int8",
]
