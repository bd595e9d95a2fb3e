"""What the network adds to its one-electron baseline: a model with ``integral_baseline`` against that baseline alone.

    python benchmarks/baseline.py --model pretrained/general.pt --data data/set.db [--splits test test_ood] [--n N]

The baseline alone is the model with its network's H heads set to zero: the fitted S, T, V_nuc combination plus
the per-element on-site references, which is where training started (``phisnet.baseline``). Both are evaluated
with the paper's metrics (``phisnet.metrics.evaluate``) on the splits recorded in the checkpoint, and the table
gives the model's H MAE as a fraction of the baseline's. S is the model's own prediction in both rows.
"""

from __future__ import annotations

import argparse
import copy

from phisnet.dataset import HamiltonianDataset
from phisnet.metrics import evaluate, format_table, model_split
from phisnet.predictor import Predictor, load


def baseline_alone(predictor: Predictor) -> Predictor:
    """The same checkpoint with the network's H switched off: baseline plus on-site references."""
    model = copy.deepcopy(predictor.model)
    model.zero_hamiltonian_heads()
    return Predictor(model, predictor.metadata, predictor.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained/general.pt")
    parser.add_argument("--data", default="data/set.db")
    parser.add_argument("--splits", nargs="+", default=["test", "test_ood"])
    parser.add_argument("--n", type=int, default=0, help="first N structures per split (0: all)")
    args = parser.parse_args()
    predictor = load(args.model)
    if not predictor.model.config.integral_baseline:
        parser.error(f"{args.model} has no one-electron baseline (trained without --integral-baseline).")
    dataset = HamiltonianDataset(args.data)
    alone = baseline_alone(predictor)
    for split in args.splits:
        indices = model_split(predictor, dataset, split, args.model)
        if args.n:
            indices = indices[: args.n]
        rows = [
            (f"{split}: model", evaluate(predictor, dataset, indices)),
            (f"{split}: baseline", evaluate(alone, dataset, indices)),
        ]
        print(format_table(rows))
        print(f"{split}: model H MAE / baseline H MAE = {rows[0][1].h_mae_uha / rows[1][1].h_mae_uha:.3f}\n")


if __name__ == "__main__":
    main()
