"""Regenerate the small committed ONNX fixtures in tests/fixtures (deterministic, torch- and onnx-free).

    python -m scripts.make_fixtures   # from the repository root (testkit is importable there)

They let the runtime-only test job and examples/ci run without building models.
"""

from __future__ import annotations

from pathlib import Path

from testkit import graphs

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

FIXTURES = {
    "mlp_small.onnx": lambda: graphs.mlp((64, 128, 10)),  # ~37 KB, symbolic batch
    "mlp_lowrank16.onnx": lambda: graphs.mlp((64, 1024, 1024, 10), rank=16),  # digits-mlp student, ~0.26 MB
    "cnn_small.onnx": lambda: graphs.cnn(),
    "multi_input.onnx": lambda: graphs.multi_input(),  # float + int64 inputs, symbolic "seq"
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, build in FIXTURES.items():
        path = build().save(OUT / name)
        print(f"{path.relative_to(OUT.parent.parent)}  {path.stat().st_size:,} bytes")
    (OUT / "not_onnx.onnx").write_text("this is not an ONNX model\n")
    data = (OUT / "mlp_small.onnx").read_bytes()
    (OUT / "truncated.onnx").write_bytes(data[: len(data) // 2])
    print("tests/fixtures/not_onnx.onnx, tests/fixtures/truncated.onnx  (bad inputs)")


if __name__ == "__main__":
    main()
