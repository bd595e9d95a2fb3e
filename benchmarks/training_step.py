"""Training-step time on a molecule set: one network call per composition against one call for the batch.

    python benchmarks/training_step.py [--data data/set.db] [--model pretrained/general.pt] [--steps 10]

A mini-batch of a molecule set mixes compositions. The network can take them one composition
at a time (a forward and backward per composition, gradients adding up: how training ran
before) or all at once as one graph over every structure (how ``phisnet.training`` runs now).
Both are timed here, alternating, on the same mini-batches of the model's training split, with the same
weights, side by side in one run; the gradients of the two are compared as a check that they
compute the same thing. Default model: the shipped general model's configuration and weights.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from phisnet.dataset import HamiltonianDataset
from phisnet.metrics import model_split
from phisnet.predictor import load
from phisnet.train_config import TrainConfig
from phisnet.train_step import batch_backward
from phisnet.training_data import composition_groups, mini_batches


def step(model, dataset, chunk, per_composition: bool) -> tuple[float, list[torch.Tensor]]:
    """Seconds of forward + backward of one mini-batch, and its gradients."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    batch_backward(model, model, dataset, chunk, torch.float32, TrainConfig(), None, "reference", not per_composition)
    return time.perf_counter() - start, [p.grad.clone() for p in model.parameters()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/set.db")
    parser.add_argument("--model", default="pretrained/general.pt")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="mini-batches timed per mode")
    args = parser.parse_args()
    predictor = load(args.model)
    model = predictor.model.train()
    dataset = HamiltonianDataset(args.data)
    train = model_split(predictor, dataset, "train", args.model)
    chunks = mini_batches(dataset, train, args.batch_size, np.random.default_rng(0))[: args.steps]
    step(model, dataset, chunks[0], per_composition=False)  # warm-up
    compositions = np.mean([len(composition_groups(dataset, chunk)) for chunk in chunks])
    times = {True: [], False: []}
    worst = 0.0
    for k, chunk in enumerate(chunks):  # the two modes alternate, so a busy machine slows both alike
        order = (True, False) if k % 2 else (False, True)
        grads = {}
        for per_composition in order:
            seconds, grads[per_composition] = step(model, dataset, chunk, per_composition)
            times[per_composition].append(seconds)
        for a, b in zip(grads[False], grads[True], strict=True):
            worst = max(worst, float((a - b).abs().max() / b.abs().max().clamp(min=1e-30)))
    each, one = float(np.median(times[True])), float(np.median(times[False]))
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), {args.model} on {args.data}")
    print(
        f"{len(chunks)} mini-batches of {args.batch_size} structures, {compositions:.1f} compositions each on average"
    )
    header = f"{'mode':<32}{'median s / step':>17}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    print(f"{'one call per composition':<32}{each:>17.3f}{1.0:>7.2f}x")
    print(f"{'one call for the mini-batch':<32}{one:>17.3f}{each / one:>7.2f}x")
    print(f"largest relative gradient difference between the modes: {worst:.1e}")


if __name__ == "__main__":
    main()
