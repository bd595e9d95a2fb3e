"""Geometry optimisation with a model as an ASE calculator, against PySCF's own optimisation at its level.

    python benchmarks/ase_relax.py [--distortion 0.15] [--fmax 0.05]

Water, from the paper's structure with one hydrogen moved by --distortion Angstrom: relaxed with
``ase.optimize.BFGS`` on ``phisnet.ase.PhiSNetCalculator`` (the CCSD(T), HF and PBE water models, each on its own
route: end to end for the CCSD(T) model, variational for the others) to --fmax eV/Angstrom, and by geomeTRIC on
PySCF's analytic CCSD(T), RHF and PBE gradients (def2-SVP; CCSD(T) with all electrons correlated, as the
CCSD(T) labels) from the same start. Prints bond lengths, angle,
steps and wall time side by side, and the model's errors against PySCF's minimum.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from ase.optimize import BFGS

from phisnet.ase import PhiSNetCalculator
from phisnet.molecules import paper_molecule

MODELS = {"ccsd(t)": "pretrained/water-ccsdt.pt", "hf": "pretrained/water-hf.pt", "pbe": "pretrained/water.pt"}


def geometry(positions: np.ndarray) -> tuple[float, float, float]:
    """O-H1, O-H2 (Angstrom) and H-O-H (degrees) of water positions ordered O, H, H."""
    a, b = positions[1] - positions[0], positions[2] - positions[0]
    angle = np.degrees(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    return float(np.linalg.norm(a)), float(np.linalg.norm(b)), float(angle)


def pyscf_minimum(atoms, method: str) -> tuple[np.ndarray, int, float]:
    """PySCF/geomeTRIC minimum (positions in Angstrom), its gradient evaluations and seconds."""
    from pyscf import cc, dft, gto, scf
    from pyscf.geomopt.geometric_solver import optimize

    t0 = time.perf_counter()
    mol = gto.M(atom=list(zip(atoms.get_chemical_symbols(), atoms.positions.tolist(), strict=True)))
    mol.basis, mol.verbose = "def2-svp", 0
    mol.build()
    mf = dft.RKS(mol, xc="pbe") if method == "pbe" else scf.RHF(mol)
    mf.conv_tol = 1e-11
    if method in ("hf", "pbe"):
        scanner = mf.nuc_grad_method().as_scanner()
    else:
        from pyscf.grad import ccsd_t as ccsd_t_grad

        mf.kernel()
        mycc = cc.CCSD(mf)
        mycc.conv_tol = 1e-10
        mycc.kernel()
        scanner = ccsd_t_grad.Gradients(mycc).as_scanner()
    calls = []
    logging.getLogger("geometric").setLevel(logging.WARNING)  # geomeTRIC reports every step on stdout
    minimum = optimize(scanner, maxsteps=100, callback=lambda env: calls.append(1))
    return minimum.atom_coords(unit="Angstrom"), len(calls), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distortion", type=float, default=0.15, help="Angstrom one H is moved along x")
    parser.add_argument("--fmax", type=float, default=0.05, help="BFGS force criterion, eV/Angstrom")
    args = parser.parse_args()
    start = paper_molecule("water")
    start.positions[1] += (args.distortion, 0.05, 0.0)
    print(f"water, one H moved {args.distortion} A; def2-SVP; BFGS to fmax {args.fmax} eV/A; geomeTRIC defaults")
    print(f"{'optimiser':<40}{'O-H1 / A':>10}{'O-H2 / A':>10}{'H-O-H / deg':>13}{'steps':>7}{'time / s':>10}")
    print("-" * 90)
    for method, path in MODELS.items():
        reference, ref_steps, ref_seconds = pyscf_minimum(start, method)
        atoms = start.copy()
        atoms.calc = calc = PhiSNetCalculator(path)
        atoms.get_forces()  # the model's one-time set-up is not the optimisation's cost
        t0 = time.perf_counter()
        optimiser = BFGS(atoms, logfile=None)
        optimiser.run(fmax=args.fmax, steps=200)
        seconds = time.perf_counter() - t0
        model, ref = geometry(atoms.positions), geometry(reference)
        print(
            f"{'PySCF ' + method.upper() + ', geomeTRIC':<40}{ref[0]:>10.4f}{ref[1]:>10.4f}{ref[2]:>13.2f}"
            f"{ref_steps:>7}{ref_seconds:>10.2f}"
        )
        print(
            f"{path + ', ' + calc.route:<40}{model[0]:>10.4f}{model[1]:>10.4f}{model[2]:>13.2f}"
            f"{optimiser.nsteps:>7}{seconds:>10.2f}"
        )
        print(f"{'  error':<40}{model[0] - ref[0]:>+10.4f}{model[1] - ref[1]:>+10.4f}{model[2] - ref[2]:>+13.2f}")


if __name__ == "__main__":
    main()
