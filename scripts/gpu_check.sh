#!/usr/bin/env bash
# The paper setting's GPU check (ViT-B/32 at 224 px): training steps, PGD-100 and the strong evaluator in
# fp32 and bf16, one table. Without CUDA it says so and runs a tiny CPU stand-in. Budget: 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
