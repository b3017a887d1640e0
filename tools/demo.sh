#!/usr/bin/env bash
# The main job on the embedded default, on a fresh machine: set up the environment
# (tools/bootstrap.sh), then generate the street scenes, `mim train`, `mim test`, and save
# predictions and curves under work_dirs/demo. Arguments go to tools/run_demo.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=$(bash tools/bootstrap.sh | tail -n 1)
export PATH="$venv/bin:$PATH"
exec python tools/run_demo.py "$@"
