#!/usr/bin/env bash
# The whole test suite, from a fresh clone:
#   1. the full suite in .venv (compiler half installed);
#   2. the runtime half alone: a plain (non-editable) install with only onnxruntime, numpy and
#      psutil, in a venv that cannot see torch, running the tests that need no compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# tests/remote start a real OpenSSH server on 127.0.0.1: install it when missing (idempotent).
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    { $sudo apt-get install -y -q openssh-server openssh-client >/dev/null 2>&1 \
      || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q openssh-server openssh-client >/dev/null; }; } \
      || echo "warning: could not install openssh-server; tests/remote will be skipped" >&2
fi
# tests/storage start a real PostgreSQL server on 127.0.0.1: install it when initdb is missing.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    { $sudo apt-get install -y -q postgresql >/dev/null 2>&1 \
      || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q postgresql >/dev/null; }; } \
      || echo "warning: could not install postgresql; tests/storage will be skipped" >&2
fi
echo "== lint (ruff, configured in pyproject.toml) =="
.venv/bin/ruff check .
.venv/bin/ruff format --check .
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
