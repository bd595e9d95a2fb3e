#!/usr/bin/env bash
# The general model's molecule set (issue 46): every molecule of the built-in set (`phisnet molecules`: 519, 28 of
# them held out), ten structures each: MMFF94 minima of its three conformers and the GFN2-xTB minimum of the first
# (what an uploaded SMILES or optimised file looks like), then six 500 K normal-mode samples around the conformers.
# PBE/def2-SVP labels, no forces; the current general model's density starts each SCF. Molecules fill round-robin,
# so the first 519 rows give every molecule one structure. One worker on one thread, so the other core stays free;
# the command resumes where it stopped: run this script again after any interruption until the file holds 5190 rows.
set -euo pipefail
cd "$(dirname "$0")/.."
PHISNET="${PHISNET:-.venv/bin/phisnet}"
"$PHISNET" generate --molecules builtin --n 10 --minima 4 --conformers 3 --no-forces --out data/set-v2.db \
    --guess-model pretrained/general.pt --workers 1 --threads 1 --quiet "$@"
