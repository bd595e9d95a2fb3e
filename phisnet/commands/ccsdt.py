"""``phisnet ccsdt``: CCSD(T) energies and analytic forces on the rows of a dataset (resumable)."""

from __future__ import annotations

import argparse
import sys

from phisnet.errors import InputError


def add_parser(sub, fmt) -> None:
    lab = sub.add_parser(
        "ccsdt",
        help="add CCSD(T) energies and analytic forces to the rows of a dataset (resumable)",
        description="Run CCSD(T) (PySCF, all electrons correlated, analytic gradient) on the structures of DATA "
        "and store the energy and forces on each row, for fine-tuning with train.py --energy-weight. Rows "
        "already labelled are skipped, so the same command resumes after an interruption.",
        formatter_class=fmt,
    )
    lab.add_argument("data", help="ASE database from phisnet generate (usually --xc hf)")
    lab.add_argument("--n", type=int, help="label only the first N structures (by sample index); all when absent")
    lab.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from phisnet.labels import label_ccsd_t

    if args.n is not None and args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}.")
    count = label_ccsd_t(
        args.data, n=args.n, progress=not args.quiet, log=lambda message: print(message, file=sys.stderr)
    )
    print(f"{count} structures of {args.data} carry CCSD(T) energies and forces.")
    return 0
