#!/usr/bin/env bash
# Set everything up, run every notebook on the mini world (papermill), and build the HTML book.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONHASHSEED=0
.venv/bin/capt book --profile "${PROFILE:-mini}" "$@"
