"""The ``phisnet`` command line: ``phisnet generate ...``."""

from __future__ import annotations

import argparse
import sys

from phisnet.errors import InputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phisnet", description="PhiSNet: equivariant prediction of Kohn-Sham Hamiltonians with PySCF references."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    gen = sub.add_parser(
        "generate",
        help="make a dataset of thermally sampled structures with PySCF Hamiltonians (resumable)",
        description="Optimise MOLECULE, sample N structures from its normal modes at a temperature, "
        "and store the PySCF Hamiltonian, overlap, energy and forces of each in an ASE database. "
        "Run the same command again after an interruption to resume.",
        formatter_class=fmt,
    )
    gen.add_argument("molecule", help="water, ethanol, malondialdehyde, uracil, an ASE G2 name, a SMILES or a file")
    gen.add_argument("--n", type=int, required=True, help="number of structures in the finished database")
    gen.add_argument("--out", required=True, help="output ASE database (.db)")
    gen.add_argument("--temperature", type=float, default=500.0, help="sampling temperature in K")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed")
    gen.add_argument("--workers", type=int, default=1, help="parallel PySCF processes")
    gen.add_argument("--xc", default="pbe", help="PySCF functional, or hf for Hartree-Fock")
    gen.add_argument("--basis", default="def2-svp", help="basis set")
    gen.add_argument("--charge", type=int, default=0, help="total charge")
    gen.add_argument("--spin", type=int, default=0, help="number of unpaired electrons")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser(
        "evaluate",
        help="the paper's metrics (H, eps, psi, S) of a model on a dataset",
        description="Evaluate a model on the test split recorded in its checkpoint (when DATA is the dataset it "
        "was trained on) or on every structure of DATA.",
        formatter_class=fmt,
    )
    ev.add_argument("--model", required=True, help="checkpoint (.pt)")
    ev.add_argument("--data", required=True, help="ASE database from phisnet generate")
    ev.add_argument(
        "--split",
        choices=["test", "val", "train", "all"],
        default="test",
        help="which structures; the split comes from the checkpoint",
    )
    ev.add_argument("--json", help="also write the metrics to this JSON file")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.command == "generate":
        from phisnet.data import generate

        out = generate(
            args.molecule,
            args.n,
            args.out,
            temperature=args.temperature,
            seed=args.seed,
            workers=args.workers,
            xc=args.xc,
            basis=args.basis,
            charge=args.charge,
            spin=args.spin,
            progress=not args.quiet,
            log=lambda message: print(message, file=sys.stderr),
        )
        print(f"Wrote {out}; list it with: ase db {out}")
        return 0
    if args.command == "evaluate":
        return evaluate_command(args)
    raise AssertionError(f"unhandled command {args.command}")


def evaluate_command(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from phisnet.data import HamiltonianDataset, split_indices
    from phisnet.metrics import evaluate, format_table
    from phisnet.model import load

    predictor = load(args.model)
    dataset = HamiltonianDataset(args.data)
    splits = predictor.metadata.get("splits")
    trained = predictor.metadata.get("data", {})
    trained_on = trained.get("n_structures")
    same_data = trained_on == len(dataset) and trained.get("settings") == dataset.metadata.get("settings")
    if args.split == "all":
        indices, label = None, "all"
    elif splits and same_data:
        indices = split_indices(len(dataset), splits["seed"], splits["train"], splits["val"])[args.split]
        label = args.split
    else:
        raise InputError(
            f"{args.data} is not the dataset the model was trained on ({trained_on} structures, "
            f"{trained.get('title')}); its splits do not apply, use --split all."
        )
    metrics = evaluate(predictor, dataset, indices, progress=not args.quiet)
    name = f"{Path(args.data).stem} ({label})"
    print(f"model {args.model}, {predictor.metadata.get('xc', '?')}/{predictor.metadata.get('basis', '?')}")
    print(format_table([(name, metrics)]))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"model": str(args.model), "data": str(args.data), "split": label, **metrics.to_json()}, indent=2
            )
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InputError as exc:
        print(f"phisnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("phisnet: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
