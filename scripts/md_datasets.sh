#!/usr/bin/env bash
# The MD-sampled datasets of the paper's four molecules (issue 43): GFN2-xTB Langevin dynamics at 500 K,
# PBE/def2-SVP labels. One worker on one thread, so the other core stays free. Every command resumes where
# it stopped: run this script again after any interruption until each file holds its N rows.
# The guess models start each SCF from a predicted density (same answers, fewer iterations). Ethanol's first 714
# rows started from the general model's (9-10 iterations; the normal-mode ethanol model's 14, minao 11); the rest
# from the MD-trained ethanol model's (6.1 against minao's 10.0 on its MD test split, benchmarks/scf_guess.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PHISNET="${PHISNET:-.venv/bin/phisnet}"
common=(--sampler md --temperature 500 --seed 0 --workers 1 --threads 1 --quiet)
"$PHISNET" generate water --n 1000 --out data/water-md.db --guess-model pretrained/water.pt "${common[@]}"
"$PHISNET" generate ethanol --n 2500 --no-forces --out data/ethanol-md.db --guess-model pretrained/ethanol.pt "${common[@]}"
# Malondialdehyde's first 1198 rows started from the general model's density, the rest from the MD-trained
# malondialdehyde model's (0.68x minao's iterations on its MD test split).
"$PHISNET" generate malondialdehyde --n 2500 --no-forces --out data/malondialdehyde-md.db \
    --guess-model pretrained/malondialdehyde.pt "${common[@]}"
# Uracil's first 415 rows started from the general model's density, the rest from the MD-trained uracil model's
# (0.62x minao's iterations on its MD test split).
"$PHISNET" generate uracil --n 1500 --no-forces --out data/uracil-md.db --guess-model pretrained/uracil.pt "${common[@]}"
