#!/usr/bin/env bash
# The test splits of the shipped per-molecule models, made again from their checkpoints (phisnet generate
# --split-of): what `phisnet evaluate --model pretrained/M.pt --data data/M-test.db` needs to check a card's test
# figures after data/ is lost, in minutes instead of the days the whole datasets took (docs/data.md). One worker
# on one thread, resumable; a file made for an earlier version of a model is refused, not mixed.
set -euo pipefail
cd "$(dirname "$0")/.."
PHISNET="${PHISNET:-.venv/bin/phisnet}"
molecules=("$@")
[ ${#molecules[@]} -gt 0 ] || molecules=(water ethanol malondialdehyde uracil)
for m in "${molecules[@]}"; do
    "$PHISNET" generate --split-of "pretrained/$m.pt" --split test --out "data/$m-test.db" \
        --guess-model "pretrained/$m.pt" --workers 1 --threads 1 --quiet
done
