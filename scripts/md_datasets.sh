#!/usr/bin/env bash
# The MD-sampled datasets of the paper's four molecules (issue 43): GFN2-xTB Langevin dynamics at 500 K,
# PBE/def2-SVP labels. One worker on one thread, so the other core stays free. Every command resumes where
# it stopped: run this script again after any interruption until each file holds its N rows.
# The guess models start each SCF from a predicted density (same answers, fewer iterations); on ethanol's
# MD geometries the general model's guess beats the ethanol model's (9-10 against 14 iterations; minao 11).
set -euo pipefail
cd "$(dirname "$0")/.."
PHISNET="${PHISNET:-.venv/bin/phisnet}"
common=(--sampler md --temperature 500 --seed 0 --workers 1 --threads 1 --quiet)
"$PHISNET" generate water --n 1000 --out data/water-md.db --guess-model pretrained/water.pt "${common[@]}"
"$PHISNET" generate ethanol --n 2500 --no-forces --out data/ethanol-md.db --guess-model pretrained/general.pt "${common[@]}"
"$PHISNET" generate malondialdehyde --n 2500 --no-forces --out data/malondialdehyde-md.db \
    --guess-model pretrained/general.pt "${common[@]}"
"$PHISNET" generate uracil --n 1500 --no-forces --out data/uracil-md.db --guess-model pretrained/general.pt "${common[@]}"
