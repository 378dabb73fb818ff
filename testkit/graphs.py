"""Reference ONNX models built without torch or the onnx package, for tests, benchmarks and fixtures.

Needs only numpy and edgeopt's runtime half, so the runtime tests run on a runtime-only install; kept
out of the wheel (users get no test builders). Weights are seeded normals scaled by 1/sqrt(fan-in).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeopt.runtime.onnx_proto import INT64, GraphBuilder


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 2 else shape[0]
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def mlp(
    dims: Sequence[int] = (64, 1024, 1024, 10), *, rank: int | None = None, seed: int = 0, batch: int | str = "batch"
) -> GraphBuilder:
    """An MLP (MatMul + Add + Relu per layer). With ``rank``, each hidden layer W (in x out) is a
    low-rank product U (in x r) V (r x out), the last layer stays dense, as a compiled student does."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("mlp" if rank is None else f"mlp_lowrank{rank}")
    h = g.input("x", [batch, dims[0]])
    n_layers = len(dims) - 1
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == n_layers - 1
        if rank is not None and not last and rank < min(a, b):
            h = g.op("MatMul", h, g.const(_w(rng, a, rank)))
            h = g.op("MatMul", h, g.const(_w(rng, rank, b)))
        else:
            h = g.op("MatMul", h, g.const(_w(rng, a, b)))
        h = g.op("Add", h, g.const(np.zeros(b, np.float32)), out="y" if last else None)
        if not last:
            h = g.op("Relu", h)
    g.output("y", [batch, dims[-1]])
    return g


def cnn(*, channels: Sequence[int] = (1, 8, 16), size: int = 28, classes: int = 10, seed: int = 0) -> GraphBuilder:
    """A small CNN: (Conv 3x3 + Relu + MaxPool 2x2) per stage, global average pool, linear head."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("cnn")
    h = g.input("image", ["batch", channels[0], size, size])
    for cin, cout in zip(channels[:-1], channels[1:]):
        h = g.op(
            "Conv",
            h,
            g.const(_w(rng, cout, cin, 3, 3)),
            g.const(np.zeros(cout, np.float32)),
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        )
        h = g.op("Relu", h)
        h = g.op("MaxPool", h, kernel_shape=[2, 2], strides=[2, 2])
    h = g.op("GlobalAveragePool", h)
    h = g.op("Flatten", h, axis=1)
    g.op("Gemm", h, g.const(_w(rng, channels[-1], classes)), g.const(np.zeros(classes, np.float32)), out="logits")
    g.output("logits", ["batch", classes])
    return g


def many_small(n_blocks: int = 40, width: int = 64, *, seed: int = 0) -> GraphBuilder:
    """Many tiny nodes, dispatch-bound: blocks of MatMul(width x width) + Add + Tanh + Mul."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("many_small")
    h = g.input("x", ["batch", width])
    scale = g.const(np.full(width, 0.5, np.float32))
    for i in range(n_blocks):
        h = g.op("MatMul", h, g.const(_w(rng, width, width)))
        h = g.op("Add", h, g.const(np.full(width, 0.01, np.float32)))
        h = g.op("Tanh", h)
        h = g.op("Mul", h, scale, out="y" if i == n_blocks - 1 else None)
    g.output("y", ["batch", width])
    return g


def multi_input(*, seed: int = 0) -> GraphBuilder:
    """Two inputs, float and int64, and a symbolic non-batch dimension (``seq``)."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("multi_input")
    x = g.input("features", ["batch", "seq", 16])
    ids = g.input("ids", ["batch", 4], INT64)
    pooled = g.op("ReduceMean", x, axes=[1], keepdims=0)
    emb = g.op("Gather", g.const(_w(rng, 10, 16)), ids, axis=0)
    emb = g.op("ReduceMean", emb, axes=[1], keepdims=0)
    g.op("Add", pooled, emb, out="y")
    g.output("y", ["batch", 16])
    return g


def save(builder: GraphBuilder, path: str | Path) -> Path:
    return builder.save(path)
