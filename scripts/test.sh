#!/usr/bin/env bash
# Set everything up, then run the whole test suite (library tests and the notebooks under nbval).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONHASHSEED=0 MPLBACKEND=Agg
.venv/bin/python -m pytest -q "$@"
