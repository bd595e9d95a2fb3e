"""How accurate must a model be to halve minao's SCF iterations? What-if guesses from scaled errors.

    python benchmarks/scf_guess_headroom.py [--models pretrained/water.pt] [--n 20]
        [--scales 1 0.5 0.25 0.1 0.03 0.01 0]

For every model, on the same held-out geometries as ``benchmarks/scf_guess.py``, PySCF at the
model's level of theory (tolerance 1e-9 Ha) starts from: minao; the predicted guess; and, for
each scale a, the density of the reference Hamiltonian plus a times the prediction's
occupied-virtual error in the reference orbitals' basis (``phisnet.scf_guess.OccupiedVirtualError``:
the only part of the error that moves the density; a = 1 is the prediction to first order,
a = 0 the converged answer). Prints the mean iterations per start with the ratio to minao, the
share of geometries at each count, and the root-mean-square occupied-virtual error (uHa) and
orbital rotation (error / gap, 1e-6) the scale stands for.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scf_guess import held_out_structures  # noqa: E402 - the benchmark scripts share the held-out selection

from phisnet.dataset import HamiltonianDataset  # noqa: E402
from phisnet.metrics import MICRO  # noqa: E402
from phisnet.observables import predict_wavefunction  # noqa: E402
from phisnet.predictor import load  # noqa: E402
from phisnet.reference import run_dft  # noqa: E402
from phisnet.scf_guess import DEFAULT_CONV_TOL, OccupiedVirtualError  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["pretrained/water.pt"])
    parser.add_argument("--n", type=int, default=20, help="held-out geometries per model")
    parser.add_argument("--scales", nargs="+", type=float, default=[1, 0.5, 0.25, 0.1, 0.03, 0.01, 0])
    args = parser.parse_args()
    if any(a < 0 for a in args.scales):
        parser.error("--scales are factors on the error, 0 or more")
    header = (
        f"{'model':<14}{'start':<14}{'n':>4}{'iterations':>12}{'iter/minao':>12}{'ov RMS / uHa':>14}"
        f"{'rotation / 1e-6':>17}   share of geometries by iterations"
    )
    lines = [header, "-" * len(header)]
    for path in args.models:
        predictor = load(path)
        dataset = HamiltonianDataset(predictor.metadata["data"]["path"])
        starts = ["minao", "predicted", *[f"scale {a:g}" for a in args.scales]]
        counts, errors = iterations_by_start(predictor, dataset, args.n, args.scales, starts, Path(path).stem)
        minao = np.mean(counts["minao"])
        for start in starts:
            n = np.asarray(counts[start])
            share = "  ".join(f"{k}: {np.mean(n == k):.0%}" for k in sorted(set(n.tolist())))
            ov = np.sqrt(np.mean(np.square(errors[start]), axis=0)) if errors[start] else (np.nan, np.nan)
            lines.append(
                f"{Path(path).stem:<14}{start:<14}{len(n):>4}{n.mean():>12.2f}{n.mean() / minao:>12.2f}"
                f"{ov[0] * MICRO:>14.1f}{ov[1] * MICRO:>17.1f}   {share}"
            )
    print(f"SCF tolerance {DEFAULT_CONV_TOL:.0e} Ha (gradient sqrt of it); 'scale a': reference + a x the prediction's")
    print("occupied-virtual error (the part that moves the density); ov RMS and rotation over all geometries.")
    print("\n".join(lines))


def iterations_by_start(predictor, dataset, n: int, scales: list[float], starts: list[str], name: str):
    """SCF iterations from each start on n held-out geometries, and the start's occupied-virtual error."""
    settings = dict(xc=predictor.info.xc, basis=predictor.info.basis)
    counts: dict[str, list[int]] = {s: [] for s in starts}
    errors: dict[str, list[tuple[float, float]]] = {s: [] for s in starts}
    structures = list(held_out_structures(predictor, n))
    for atoms in tqdm(structures, desc=name, unit="geometry", file=sys.stderr):
        sample = dataset[atoms.info["index"]]
        reference = sample["hamiltonian"].double().numpy()
        wavefunction = predict_wavefunction(predictor, atoms)
        H, S = wavefunction.hamiltonian, wavefunction.exact_overlap
        n_electrons = int(atoms.numbers.sum())
        ov = OccupiedVirtualError.from_matrices(H, reference, S, n_electrons)
        error = (ov.rms, ov.rotation_rms)
        run = dict(forces=False, conv_tol=DEFAULT_CONV_TOL, **settings)
        counts["minao"].append(run_dft(atoms, init_guess="minao", **run).n_iterations)
        counts["predicted"].append(run_dft(atoms, dm0=wavefunction.orbitals.density_matrix, **run).n_iterations)
        errors["predicted"].append(error)
        for a, start in zip(scales, starts[2:], strict=True):
            dm = ov.guess(a)
            counts[start].append(run_dft(atoms, dm0=dm, **run).n_iterations)
            errors[start].append((a * error[0], a * error[1]))
    return counts, errors


if __name__ == "__main__":
    main()
