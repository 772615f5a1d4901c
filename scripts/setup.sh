#!/usr/bin/env bash
# Create .venv and install capt with the pinned CI versions. Idempotent: re-runs only when
# pyproject.toml or the constraints change (a stamp file records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "capt needs Python >= 3.10 (found $("$PY" --version)); set PYTHON=/path/to/python3.10+" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.capt-installed
want=$(cat pyproject.toml constraints/ci.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing capt and its pinned dependencies into .venv (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints/ci.txt -e ".[book,test,sweep]"
  echo "$want" > "$stamp"
fi
