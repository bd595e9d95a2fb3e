"""What the model must beat: PySCF PBE/def2-SVP cost per molecule and initial guess.

    python benchmarks/reference_cost.py [--molecules water ethanol ...] [--repeat 1]

For each molecule (the starting structure phisnet.io reads for its name) and each
standard PySCF initial guess, runs a full SCF with PySCF's default tolerance and
prints wall time, SCF iterations and the final energy, with ratios to minao
measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform

from pyscf import lib

from phisnet.basis import layout
from phisnet.io import read_molecules
from phisnet.molecules import PAPER_MOLECULES
from phisnet.reference import run_dft

GUESSES = ("minao", "atom", "huckel", "1e")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", nargs="+", default=list(PAPER_MOLECULES))
    parser.add_argument("--xc", default="pbe")
    parser.add_argument("--basis", default="def2-svp")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the fastest is reported")
    args = parser.parse_args()

    print(
        f"PySCF {args.xc.upper()}/{args.basis}, {lib.num_threads()} threads, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}"
    )
    run_dft(read_molecules("water")[0], xc=args.xc, basis=args.basis, forces=False)  # warm-up: library loading
    header = (
        f"{'molecule':<16}{'atoms':>6}{'nao':>5}  {'guess':<7}{'iter':>5}{'seconds':>9}{'x minao':>9}"
        f"{'iter x minao':>13}{'energy / Ha':>18}"
    )
    print(header)
    print("-" * len(header))
    for name in args.molecules:
        atoms = read_molecules(name)[0]
        nao = layout(atoms, args.basis).nao
        base = None
        for guess in GUESSES:
            runs = [
                run_dft(atoms, xc=args.xc, basis=args.basis, init_guess=guess, forces=False) for _ in range(args.repeat)
            ]
            ref = min(runs, key=lambda r: r.seconds)
            flag = "" if ref.converged else "  NOT CONVERGED"
            if base is None:
                base = ref
            print(
                f"{name:<16}{len(atoms):>6}{nao:>5}  {guess:<7}{ref.n_iterations:>5}{ref.seconds:>9.2f}"
                f"{ref.seconds / base.seconds:>9.2f}{ref.n_iterations / base.n_iterations:>13.2f}"
                f"{ref.energy:>18.8f}{flag}"
            )


if __name__ == "__main__":
    main()
