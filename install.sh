#!/usr/bin/env bash
# Installs everything phisnet needs into ./.venv (created if missing). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# torch first and pinned: this resolves to the local CPU wheel; anything unpinned would pull a CUDA build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
# 3Dmol.js for the app's 3D views, from npm (pinned in package.json / package-lock.json), served by the app
# itself from static/ so the views work with no internet. A copy, not a symlink: Streamlit refuses links.
if command -v npm >/dev/null; then
    npm ci --no-audit --no-fund --loglevel=error
    mkdir -p static
    cp node_modules/3dmol/build/3Dmol-min.js static/3Dmol-min.js
else
    echo "npm not found: the app's 3D views need it (apt-get install npm), everything else works" >&2
fi
echo "phisnet installed in $(pwd)/.venv"
