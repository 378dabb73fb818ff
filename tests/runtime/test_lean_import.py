"""The runtime half never imports torch or onnx: it must run on a Raspberry Pi with only onnxruntime, numpy
and psutil (docs/architecture.md, "The runtime half")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

SCRIPT = f"""
import sys
import edgeopt
from edgeopt.cli import main
assert main(["targets", "list"]) == 0
assert main(["targets", "show", "rpi4"]) == 0
assert main(["targets", "validate", "{FIXTURES.parent.parent / "edgeopt/runtime/profiles/rpi4.toml"}"]) == 0
model = r"{FIXTURES / "mlp_small.onnx"}"
assert main(["bench", model, "-t", "rpi4", "--min-iters", "5", "--min-time", "0", "--warmup", "1"]) == 0
# 5 runs cannot bound a p95 (59 are needed): inconclusive, exit 3; memory and size pass
assert main(
    ["gate", model, "-t", "rpi4", "--min-iters", "5", "--max-iters", "5", "--min-time", "0", "--warmup", "1"]
) == 3
edgeopt.Target.load("host"); edgeopt.bench; edgeopt.gate; edgeopt.BenchResult; edgeopt.GateResult
import edgeopt.runtime.calibrate, edgeopt.runtime.predict, edgeopt.runtime.onnx_proto, edgeopt.runtime._worker
import edgeopt.runtime.session, edgeopt.runtime.settings, edgeopt.runtime.perf, edgeopt.runtime.host
heavy = sorted(
    m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "tensorly", "optuna", "sklearn", "matplotlib")
)
print("HEAVY", heavy)
sys.exit(1 if heavy else 0)
"""


def test_runtime_half_imports_no_torch_or_onnx():
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "HEAVY []" in p.stdout
