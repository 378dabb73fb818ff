#!/usr/bin/env bash
# The tests, from a fresh clone, in two tiers:
#   bash scripts/test.sh          quick tier: lint, the tests not marked slow or services (see pyproject.toml),
#                                 the runtime half's tests in a venv without torch (there only, unless they need
#                                 the compiler); installs nothing system-wide
#   bash scripts/test.sh --full   the full suite (what CI runs): also the slow tests and those that start a real
#                                 sshd / PostgreSQL, installing openssh-server and postgresql with apt-get when
#                                 missing (EDGEOPT_NO_APT=1: never; those tests then skip, saying why); the
#                                 runtime half's tests, as in the quick tier, in the venv without torch
# Other arguments go to pytest (both tiers), e.g. bash scripts/test.sh -x -k gate.
set -euo pipefail
cd "$(dirname "$0")/.."
full=0
args=()
for a in "$@"; do
    if [ "$a" = "--full" ]; then full=1; else args+=("$a"); fi
done
QUICK_MARKERS="not slow and not services and (compile or not runtime)"
FULL_NOTE="full suite: bash scripts/test.sh --full, ~16 min with its set-up on a 2-core host (more under load); what CI runs"
start=$SECONDS

apt_install() {  # apt_install PACKAGE TESTS NEED [MORE PACKAGES]: say so first; never with EDGEOPT_NO_APT=1
    local pkg=$1 tests=$2 need=$3
    if [ "${EDGEOPT_NO_APT:-0}" = "1" ]; then
        echo "not installing $pkg (EDGEOPT_NO_APT=1): $tests will be skipped" >&2
        return 0
    fi
    echo "installing $pkg with apt-get ($tests need $need; skip with EDGEOPT_NO_APT=1)" >&2
    shift 3
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    { $sudo apt-get install -y -q "$pkg" "$@" >/dev/null 2>&1 \
      || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$pkg" "$@" >/dev/null; }; } \
      || echo "warning: could not install $pkg; $tests will be skipped" >&2
}

bash scripts/setup.sh
if [ "$full" = 1 ]; then
    if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null; then
        apt_install openssh-server tests/remote "a real sshd" openssh-client
    fi
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
        apt_install postgresql tests/storage "a real PostgreSQL server"
    fi
fi

echo "== lint (ruff, configured in pyproject.toml) =="
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ "$full" = 1 ]; then
    echo "== full suite (compiler + runtime) =="
    # the slowest tests listed at the end: CI's 20-minute limit is watched from them. The runtime half's
    # tests run below, in the venv without torch (all 173 of them ran here too, the same ones, ~80 s)
    .venv/bin/python -m pytest --durations=20 -m "compile or not runtime" ${args[@]+"${args[@]}"}
else
    echo "== quick tier: -m \"$QUICK_MARKERS\" =="
    .venv/bin/python -m pytest -m "$QUICK_MARKERS" ${args[@]+"${args[@]}"}
fi

echo "== runtime-only install (no torch, non-editable) =="
if [ "$full" = 1 ] || [ ! -x .venv-runtime/bin/python ]; then
    rm -rf .venv-runtime
    python3 -m venv .venv-runtime
    .venv-runtime/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv-runtime/bin/python -m pip install -q . pytest pytest-timeout
else  # quick tier: the venv from an earlier run, with this checkout's edgeopt put in it again
    .venv-runtime/bin/python -m pip install -q --no-deps --force-reinstall . >/dev/null
fi
if .venv-runtime/bin/python -c "import torch" 2>/dev/null; then
    echo "runtime-only venv can import torch: the check below would prove nothing" >&2
    exit 1
fi
# Run from outside the source tree so the installed package (not ./edgeopt) is imported; the tests'
# support package (testkit, not in the wheel) comes from a copy that holds nothing else.
support=$(mktemp -d)
trap 'rm -rf "$support"' EXIT
cp -r testkit "$support/"
( cd tests && PYTHONPATH="$support" ../.venv-runtime/bin/python -m pytest -c ../pyproject.toml --rootdir=.. \
    -m "not compile$([ "$full" = 1 ] || echo ' and not slow')" ${args[@]+"${args[@]}"} runtime )

echo "== done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s =="
if [ "$full" = 0 ]; then
    echo "$FULL_NOTE"
fi
