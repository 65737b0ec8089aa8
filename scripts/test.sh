#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
# Test modules run in parallel worker processes (pytest-xdist), a module's
# tests on one worker so that its fixtures are built once. Most tests are
# Python-bound (tracing, building models): two workers on two cores take the
# suite from about 17 to 11.5 minutes. KERAS_INVERT_TEST_WORKERS=0 runs it
# in this process (for pdb); a later -n on the command line also wins.
workers=${KERAS_INVERT_TEST_WORKERS:-2}
exec .venv/bin/python -m pytest -n "$workers" --dist=loadscope "$@"
