#!/usr/bin/env bash
# The test suite, on a fresh machine: set up the environment (tools/bootstrap.sh), then pytest.
# Arguments go to pytest (e.g. `bash tools/test.sh -k parity`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=$(bash tools/bootstrap.sh | tail -n 1)
export PATH="$venv/bin:$PATH"
exec python -m pytest tests "$@"
