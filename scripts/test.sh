#!/usr/bin/env bash
# The whole test suite, from a fresh clone:
#   1. the full suite in .venv (compiler half installed);
#   2. the runtime half alone: a plain (non-editable) install with only onnxruntime, numpy and
#      psutil, in a venv that cannot see torch, running the tests that need no compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== lint (ruff, configured in pyproject.toml) =="
.venv/bin/ruff check .
echo "== full suite (compiler + runtime) =="
.venv/bin/python -m pytest "$@"

echo "== runtime-only install (no torch, non-editable) =="
rm -rf .venv-runtime
python3 -m venv .venv-runtime
.venv-runtime/bin/python -m pip install -q --upgrade pip >/dev/null
.venv-runtime/bin/python -m pip install -q . pytest pytest-timeout
if .venv-runtime/bin/python -c "import torch" 2>/dev/null; then
    echo "runtime-only venv can import torch: the check below would prove nothing" >&2
    exit 1
fi
# Run from outside the source tree so the installed package (not ./edgeopt) is imported.
( cd tests && ../.venv-runtime/bin/python -m pytest -c ../pyproject.toml --rootdir=.. -m "not compile" runtime )
