"""End-to-end forces against finite differences of the same end-to-end energy.

    python benchmarks/end_to_end_forces.py [--models pretrained/water.pt pretrained/water-hf.pt] [--n 3]

For each model (loaded in float64), on the first --n test-split geometries of its own
dataset, the forces -dE/dR of E = 1/2 Tr[P (h + F)] + E_nuc (``phisnet.end_to_end.end_to_end``:
autograd through the network, PySCF derivative integrals for S, h and E_nuc) against central
differences of E (step 1e-4 Angstrom, S, h and E_nuc recomputed at each displaced geometry).
Prints the largest deviation in Hartree/Bohr (target: below 1e-5) and the time per force
evaluation.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scf_guess import held_out_structures  # noqa: E402 - the benchmark scripts share the held-out selection

from phisnet.end_to_end import predict_energy_and_forces  # noqa: E402
from phisnet.predictor import load  # noqa: E402
from phisnet.reference import BOHR  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=sorted(glob.glob("pretrained/*.pt")))
    parser.add_argument("--n", type=int, default=3, help="held-out geometries per model")
    parser.add_argument("--step", type=float, default=1e-4, help="finite-difference step, Angstrom")
    args = parser.parse_args()
    print(
        f"{'model':<28}{'geometries':>11}{'max |F - F_fd| [Ha/Bohr]':>27}{'max |F| [Ha/Bohr]':>19}"
        f"{'force time / s':>16}"
    )
    print("-" * 101)
    for path in args.models:
        predictor = load(path, dtype=torch.float64)
        worst, largest, seconds = 0.0, 0.0, []
        structures = list(held_out_structures(predictor, args.n))
        for atoms in structures:
            t0 = time.perf_counter()
            _, forces = predict_energy_and_forces(predictor, atoms)
            seconds.append(time.perf_counter() - t0)
            fd = np.zeros_like(forces)
            for a in range(len(atoms)):
                for x in range(3):
                    values = []
                    for sign in (1, -1):
                        moved = atoms.copy()
                        moved.positions[a, x] += sign * args.step
                        values.append(predict_energy_and_forces(predictor, moved, forces=False)[0])
                    fd[a, x] = -(values[0] - values[1]) / (2 * args.step)
            worst = max(worst, float(np.abs(forces - fd).max()) * BOHR)  # Ha/A -> Ha/Bohr
            largest = max(largest, float(np.abs(forces).max()) * BOHR)
        print(f"{Path(path).name:<28}{len(structures):>11}{worst:>27.2e}{largest:>19.3f}{np.median(seconds):>16.3f}")


if __name__ == "__main__":
    main()
