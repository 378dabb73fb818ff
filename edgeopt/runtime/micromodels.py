"""The reference micro-models ``edgeopt calibrate`` times, built in memory (no file, no onnx package)."""

from __future__ import annotations

import numpy as np

from edgeopt.runtime.onnx_proto import INT32, UINT8, GraphBuilder


def chain(n: int, op: str = "Add") -> bytes:
    g = GraphBuilder("dispatch")
    x = g.input("x", [1, 16])
    rng = np.random.default_rng(3)
    c = g.const(np.full((1, 16), 1e-3, np.float32))
    for i in range(n):
        w = c if op == "Add" else g.const((rng.standard_normal((16, 16)) / 4).astype(np.float32))
        x = g.op(op, x, w, out="y" if i == n - 1 else None)
    g.output("y", [1, 16])
    return g.to_bytes()


def matmul(m: int, k: int, n: int, seed: int = 0) -> bytes:
    g = GraphBuilder("matmul")
    x = g.input("x", [m, k])
    w = g.const(np.random.default_rng(seed).standard_normal((k, n)).astype(np.float32))
    g.op("MatMul", x, w, out="y")
    g.output("y", [m, n])
    return g.to_bytes()


def matmul_int8(m: int, k: int, n: int) -> bytes:
    g = GraphBuilder("matmul_int8")
    x = g.input("x", [m, k], UINT8)
    w = g.const(np.random.default_rng(4).integers(-127, 128, (k, n), dtype=np.int8))
    g.op("MatMulInteger", x, w, out="y")
    g.output("y", [m, n], INT32)
    return g.to_bytes()


def conv(c_in: int, c_out: int, size: int) -> bytes:
    g = GraphBuilder("conv")
    x = g.input("x", [1, c_in, size, size])
    rng = np.random.default_rng(5)
    w = g.const((rng.standard_normal((c_out, c_in, 3, 3)) / 10).astype(np.float32))
    g.op("Conv", x, w, g.const(np.zeros(c_out, np.float32)), out="y", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g.output("y", [1, c_out, size, size])
    return g.to_bytes()


def qconv(c_in: int, c_out: int, size: int) -> bytes:
    """QLinearConv, what a static QDQ int8 conv becomes after onnxruntime's graph optimizations."""
    g = GraphBuilder("qconv")
    x = g.input("x", [1, c_in, size, size], UINT8)
    rng = np.random.default_rng(6)
    f, u8, i8 = np.float32, np.uint8, np.int8
    w = g.const(rng.integers(-127, 128, (c_out, c_in, 3, 3), dtype=i8))
    g.op(
        "QLinearConv",
        x,
        g.const(np.array(0.02, f)),
        g.const(np.array(128, u8)),
        w,
        g.const(np.array(0.01, f)),
        g.const(np.array(0, i8)),
        g.const(np.array(0.05, f)),
        g.const(np.array(128, u8)),
        g.const(np.zeros(c_out, np.int32)),
        out="y",
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
    )
    g.output("y", [1, c_out, size, size], UINT8)
    return g.to_bytes()


__all__ = ["chain", "matmul", "matmul_int8", "conv", "qconv"]
