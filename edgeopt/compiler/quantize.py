"""int8 quantization with onnxruntime's own tooling (what most ONNX optimization flows do by default).

- MatMul/Gemm: dynamic quantization (int8 weights, activations quantized at run time).
- Conv: static QDQ quantization calibrated on training samples.
The quantized file is what gets scored and benchmarked: F1 is measured on it with onnxruntime.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

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
