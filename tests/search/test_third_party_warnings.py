"""Other packages' warnings are printed once each, with a count (issue 16): onnxruntime's quantizer logs
"Please consider to run pre-processing before quantization" on the root logger at every int8 quantization."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("optuna")
torch = pytest.importorskip("torch")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "cnn_small.onnx"
PREPROCESS = "Please consider to run pre-processing before quantization"


def _calibration() -> np.ndarray:
    import onnx

    shape = [d.dim_value or 1 for d in onnx.load(str(FIXTURE)).graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(0).random([16, *shape[1:]], dtype=np.float32)


def test_real_quantizations_warn_once_with_a_count(tmp_path, caplog):
    """Three real int8 quantizations (static for the convs, then dynamic for the Gemm: two warnings each): none
    is printed while they run; one summary line per distinct message is, with its count."""
    from edgeopt.compiler.quantize import quantize_onnx
    from edgeopt.pipeline.progress import ThirdPartyWarnings

    caplog.set_level(logging.INFO)
    with ThirdPartyWarnings("the test") as others:
        for i in range(3):
            quantize_onnx(FIXTURE, tmp_path / f"q{i}.onnx", calibration=_calibration())
        during = [r for r in caplog.records if r.levelno >= logging.WARNING]
    summary = [r for r in caplog.records if PREPROCESS in r.getMessage()]
    assert not during, [r.getMessage() for r in during]
    assert len(summary) == 1, [r.getMessage() for r in caplog.records]
    line = summary[0].getMessage()
    assert line.startswith("warning from onnxruntime.quantization: ") and line.endswith("(6 times during the test)")
    assert summary[0].name == "edgeopt.compile"
    assert others._showwarning is None and others not in logging.getLogger().handlers


def test_edgeopt_records_and_python_warnings(caplog):
    from edgeopt.pipeline.progress import ThirdPartyWarnings

    caplog.set_level(logging.INFO)
    with ThirdPartyWarnings("the search"):
        for n in (1, 2):
            logging.getLogger("edgeopt.bench").warning("edgeopt's own warning %d", n)  # passes as before
            logging.getLogger("somelib").warning("layer %d has odd shape", n)  # one kind, numbers aside
            logging.getLogger("somelib").info("info %d", n)  # below WARNING: as before
            warnings.warn_explicit("deprecated thing", DeprecationWarning, "/x/site-packages/lib/mod.py", 7)
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "own warning" in m] == ["edgeopt's own warning 1", "edgeopt's own warning 2"]
    assert [m for m in messages if m.startswith("info ")] == ["info 1", "info 2"]
    assert "warning from test_third_party_warnings: layer 1 has odd shape (2 times during the search)" in messages
    assert "warning from lib.mod: DeprecationWarning: deprecated thing (2 times during the search)" in messages
    assert not any(m.startswith("layer ") for m in messages)


def test_a_process_without_logging_setup_prints_one_line(tmp_path):
    """As the CLI runs: no handler on the root logger, where ``logging.warning`` would install one per process
    and print each warning; with the summary there is exactly one line about it on stderr."""
    code = f"""
import logging, sys
import numpy as np
from edgeopt.pipeline.progress import ThirdPartyWarnings
from edgeopt.compiler.quantize import quantize_onnx
h = logging.StreamHandler(sys.stderr)
logging.getLogger("edgeopt").handlers[:] = [h]
logging.getLogger("edgeopt").propagate = False
cal = np.random.default_rng(0).random([16, *{list(_calibration().shape[1:])}], dtype=np.float32)
with ThirdPartyWarnings():
    for i in range(4):
        quantize_onnx({str(FIXTURE)!r}, {str(tmp_path)!r} + f"/q{{i}}.onnx", calibration=cal)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if PREPROCESS in ln]
    assert len(lines) == 1 and lines[0].endswith("(8 times during the compile)"), r.stderr
    assert "WARNING:root" not in r.stderr


def test_nested_the_outer_one_counts_and_prints_once(caplog):
    """The CLI counts over the whole compile; the search's own counter then leaves it to the CLI's."""
    from edgeopt.pipeline.progress import RepeatedWarnings, ThirdPartyWarnings

    caplog.set_level(logging.INFO)
    lib, bench = logging.getLogger("somelib"), logging.getLogger("edgeopt.bench")
    outer_rep = RepeatedWarnings(during="the compile")
    with ThirdPartyWarnings("the compile"):
        inner_rep = RepeatedWarnings()
        with ThirdPartyWarnings("the search"):
            lib.warning("slow op")
            bench.warning("noisy measurement 0.3")
            bench.warning("noisy measurement 0.4")
        inner_rep.close()
        lib.warning("slow op")
        bench.warning("noisy measurement 0.5")
    outer_rep.close()
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "slow op" in m] == [
        "warning from test_third_party_warnings: slow op (2 times during the compile)"
    ]
    assert [m for m in messages if "noisy" in m] == [
        "noisy measurement 0.3",
        "repeated: noisy measurement 0.3 (and 2 more like it during the compile)",
    ]
    assert not any(f.__class__.__name__ == "RepeatedWarnings" for f in bench.filters)
