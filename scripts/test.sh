#!/usr/bin/env bash
# Set everything up, then run the whole test suite (library tests and the notebooks under nbval).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install_browser.sh || echo "test.sh: no Chromium, so tests/test_browser.py will skip" >&2
export PYTHONHASHSEED=0
# The notebooks are checked as committed (executed with profiles/ci.yaml): start from an empty store
# so every cell really recomputes what it shows.
rm -rf outputs/ci
# Two pytest-xdist workers, one thread each; a file's tests, and all the notebooks, stay together on one
# worker, longest first (conftest.py).
.venv/bin/python -m pytest -q -p no:cacheprovider -n 2 tests notebooks --nbval \
    --nbval-sanitize-with notebooks/nbval_sanitize.cfg --durations=25 "$@"
