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
    raise AssertionError(f"unhandled command {args.command}")


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
