"""``phisnet subspace``: choose on validation data the overlap eigenvalue below which orbitals are left out."""

from __future__ import annotations

import argparse

import numpy as np

from phisnet.errors import InputError


def add_parser(sub, fmt) -> None:
    sp = sub.add_parser(
        "subspace",
        help="choose on validation data the overlap eigenvalue below which a model's orbitals are left out",
        description="A predicted H's error along the overlap's near-null combinations of basis functions is "
        "amplified about 1/eigenvalue in the orbitals. For each candidate threshold, solve the predicted H with the "
        "exact S in the span of S's eigenvectors above it, and print how far the density's occupied space is from "
        "the reference's (mean over the structures). --write stores the best threshold in the checkpoint; "
        "predictions, evaluate, the SCF guess and the app then use it.",
        formatter_class=fmt,
    )
    sp.add_argument("--model", required=True, help="checkpoint (.pt)")
    sp.add_argument("--data", required=True, help="the dataset the model was trained on (its splits apply)")
    sp.add_argument(
        "--split", choices=["val", "train", "test", "test_ood"], default="val", help="which structures to compare on"
    )
    sp.add_argument(
        "--candidates", type=float, nargs="+", help="thresholds to try, ascending (default 0 0.001 ... 0.1)"
    )
    sp.add_argument("--max-structures", type=int, default=60, help="at most this many structures (evenly spread)")
    sp.add_argument(
        "--write", action="store_true", help="store the chosen threshold in the checkpoint (only with --split val)"
    )
    sp.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from phisnet.dataset import HamiltonianDataset
    from phisnet.metrics import model_split
    from phisnet.predictor import load
    from phisnet.subspace import SUBSPACE_CANDIDATES, choose_subspace, store_subspace

    if args.write and args.split != "val":
        raise InputError(
            f"--write stores a choice the model is then reported with; make it on --split val, not {args.split}."
        )
    if args.max_structures < 1:
        raise InputError(f"--max-structures must be at least 1, got {args.max_structures}.")
    predictor = load(args.model)
    dataset = HamiltonianDataset(args.data)
    indices = model_split(predictor, dataset, args.split, args.model)
    if len(indices) > args.max_structures:
        indices = [indices[k] for k in np.linspace(0, len(indices) - 1, args.max_structures).round().astype(int)]
    choice = choose_subspace(
        predictor, dataset, indices, args.candidates or SUBSPACE_CANDIDATES, progress=not args.quiet
    )
    choice.split = args.split
    print(f"model {args.model} on {args.data} ({args.split}, {choice.n_structures} structures):")
    print(choice.format_table())
    print(f"current setting: {predictor.subspace:g}")
    if args.write:
        store_subspace(args.model, choice)
        print(f"wrote subspace {choice.threshold:g} into {args.model}")
    return 0
