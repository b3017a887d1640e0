#!/usr/bin/env bash
# The test suite, on a fresh machine: set up the environment (tools/bootstrap.sh), then pytest.
# Arguments go to pytest: `bash tools/test.sh` runs everything; `bash tools/test.sh -m "not slow"`
# is the quick tier (no training, export or benchmark runs); `-k parity` picks by name.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=$(bash tools/bootstrap.sh | tail -n 1)
export PATH="$venv/bin:$PATH"
exec python -m pytest tests "$@"
