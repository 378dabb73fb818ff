#!/usr/bin/env bash
# Set up a development environment in .venv: edgeopt (editable) with the compiler half and test tools.
# Idempotent: re-running installs nothing unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# Nothing to do when the install is newer than what it was made from (the editable install needs no rerun for code).
stamp=.venv/.edgeopt-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt constraints.txt ]; then
    exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# constraints.txt pins torch to the CPU wheel; without it pip may fetch a multi-GB CUDA build.
.venv/bin/python -m pip install -q -c constraints.txt -e ".[compile,test,postgres]"
touch "$stamp"
