"""Scoring ONNX artifacts with onnxruntime: the shipped file is what gets measured, not the torch model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt._io import atomic_path


def onnx_predict(path: str | os.PathLike, X: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Class predictions of an ONNX classifier (its first input, first output) for ``X``."""
    from edgeopt.runtime.session import open_session

    sess = open_session(path)  # onnxruntime's defaults (the runtime's one place for session options)
    inp = sess.get_inputs()[0]
    preds = []
    for i in range(0, len(X), batch_size):
        out = sess.run(None, {inp.name: np.ascontiguousarray(X[i : i + batch_size], dtype=np.float32)})[0]
        preds.append(np.asarray(out).argmax(axis=1))
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def onnx_metrics(path: str | os.PathLike, X: np.ndarray, y: np.ndarray, metric: Any) -> dict[str, Any]:
    """F1, precision, recall and accuracy of the ONNX file on (X, y), with the task's averaging."""
    from edgeopt.compiler.metrics import compute_metrics

    return _metrics_dict(compute_metrics(y, onnx_predict(path, X), metric=metric))


def _metrics_dict(m: Any) -> dict[str, Any]:
    d = m.to_dict() if hasattr(m, "to_dict") else dict(m)
    keep = ("score", "f1", "precision", "recall", "accuracy")
    return {k: (float(d[k]) if d.get(k) is not None else None) for k in keep if k in d}


def stamp_metadata(path: str | os.PathLike, props: dict[str, Any]) -> None:
    """Add (or replace) ``metadata_props`` on an ONNX file, atomically. Values that are not strings are JSON."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if key in existing:
            existing[key].value = text
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, text
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def int8_predict(
    student: Any,
    example_input: Any,
    X_calib: np.ndarray,
    X: np.ndarray,
    plan: dict[str, Any] | None = None,
) -> np.ndarray:
    """The int8 model's own class predictions for ``X``: export ``student``, quantize with onnxruntime (every
    layer, or with ``plan`` only the layers it runs in int8), predict with onnxruntime."""
    import tempfile

    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import quantize_onnx, quantize_plan

    with tempfile.TemporaryDirectory(prefix="edgeopt-int8-") as tmp:
        fp32 = Path(tmp) / "m.onnx"
        export_onnx(student, example_input, fp32, verify=False)
        if plan is not None:
            q = quantize_plan(fp32, Path(tmp) / "m.int8.onnx", plan, calibration=X_calib[:64])
        else:
            q = quantize_onnx(fp32, Path(tmp) / "m.int8.onnx", calibration=X_calib[:64])
        return onnx_predict(q, X)
