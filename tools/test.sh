#!/usr/bin/env bash
# The test suite, on a fresh machine: set up the environment (tools/bootstrap.sh), then pytest.
# Arguments go to pytest: `bash tools/test.sh` runs everything; `bash tools/test.sh -m "not slow"`
# is the quick tier (no training, export, benchmark or multi-process runs); `-k parity` picks
# by name; `-m cuda` the tests whose subject is a GPU (skipped, with the reason, on a host
# without one).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=$(bash tools/bootstrap.sh | tail -n 1)
export PATH="$venv/bin:$PATH"
# Tests run in parallel, one worker per core up to 4 ($HRNET_MM_TEST_WORKERS overrides; 0 runs
# them in this process), each worker's torch on its share of the cores (tests/conftest.py);
# tests that share a trained model run on one worker (xdist groups).
# --durations=15: the slowest tests, so the next person sees where the time goes.
# -p no:hypothesispytest: hypothesis's pytest plugin imports hypothesis for its end-of-run
# summary (1.7 s) in a process that runs no test; its one test here runs without the plugin.
workers=${HRNET_MM_TEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}
exec python -m pytest tests -n "$workers" --dist loadgroup --durations=15 \
    -p no:hypothesispytest "$@"
