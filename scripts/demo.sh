#!/usr/bin/env bash
# The main job on the bundled example, from a fresh clone: set up, then `edgeopt demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/edgeopt demo "$@"
