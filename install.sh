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
echo "phisnet installed in $(pwd)/.venv"
