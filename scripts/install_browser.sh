#!/usr/bin/env bash
# Install headless Chromium (Debian's `chromium` package) for the real-browser check of the built book
# (tests/test_browser.py). Idempotent and quiet: does nothing when a Chromium is already on PATH or named
# by CAPT_CHROMIUM. Exits non-zero, with the reason, when it cannot install one (not Debian/Ubuntu, not root
# and no sudo, no network); the browser test then skips and says why.
set -euo pipefail
if [ -n "${CAPT_CHROMIUM:-}" ]; then
  [ -x "${CAPT_CHROMIUM}" ] && exit 0
  echo "install_browser: CAPT_CHROMIUM=${CAPT_CHROMIUM} is not an executable; unset it or point it at chromium" >&2
  exit 1
fi
for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null 2>&1; then exit 0; fi
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: no apt-get here; install Chromium yourself and set CAPT_CHROMIUM=/path/to/chromium" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "install_browser: installing Chromium needs root; run 'sudo apt-get install chromium' or set CAPT_CHROMIUM" >&2
  exit 1
fi
echo "== installing Chromium for the browser check (apt-get install chromium; once)"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { "${as_root[@]}" apt-get update -qq && \
       "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  rm -f "$log"
  echo "install_browser: apt-get could not install chromium (output above)" >&2
  exit 1
fi
rm -f "$log"
