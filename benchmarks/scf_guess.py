"""SCF iterations and wall time from the predicted guess against PySCF's standard guesses.

    python benchmarks/scf_guess.py [--models pretrained/*.pt] [--n 20] [--conv-tol 1e-9]
        [--split test|test_ood] [--guesses minao atom huckel 1e]
    python benchmarks/scf_guess.py --models pretrained/uracil.pt:data/uracil-test.db   # a rebuilt test split

For every model, on the first --n structures of the test split recorded in its
checkpoint (geometries it never trained on; with --split test_ood, the molecules a set
model never saw, taken one molecule after another), run PySCF at the model's level of theory
from the predicted density matrix and from each standard guess, all to the same
tolerance (``phisnet.scf_guess.compare``). Prints the mean iterations and wall time per
guess with ratios to minao (wall time of the predicted guess includes the prediction),
the number of geometries on which a guess needed more iterations than minao, and the
largest difference between the final energies of one geometry.
The dataset is the one named in the checkpoint (``data/<molecule>.db``), or the one after
MODEL: (that dataset, or its test split made again with ``phisnet generate --split-of MODEL``);
make it with the command in the model card when it is missing.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from phisnet.dataset import HamiltonianDataset, sample_atoms
from phisnet.errors import InputError
from phisnet.metrics import model_split
from phisnet.predictor import load
from phisnet.scf_guess import DEFAULT_CONV_TOL, PREDICTED, STANDARD_GUESSES, compare


def held_out_structures(predictor, n: int, split: str = "test", path: str | None = None):
    """The first n geometries of a held-out split (test, or test_ood for a set model) of the model's own dataset
    (or of ``path``: that dataset, or its split rebuilt by ``phisnet generate --split-of``); ``atoms.info["index"]``
    is the row in it."""
    path = Path(path or predictor.metadata.get("data", {}).get("path", ""))
    if not path.is_file():
        raise SystemExit(
            f"{path}: dataset missing; make it with the command in the model card, or its test split with "
            "phisnet generate --split-of MODEL --out FILE and give MODEL:FILE."
        )
    dataset = HamiltonianDataset(path)
    try:
        indices = model_split(predictor, dataset, split)
    except InputError as exc:
        raise SystemExit(str(exc)) from None
    for k in _spread(dataset, indices, n):
        atoms = sample_atoms(dataset[k])
        atoms.info["name"] = dataset[k].get("molecule", "")
        atoms.info["index"] = k
        yield atoms


def _spread(dataset, indices: list[int], n: int) -> list[int]:
    """n of the indices, one molecule after another (round-robin over molecules) so that a set's held-out
    geometries cover as many molecules as possible; the first n for a single-molecule dataset."""
    by_molecule: dict[str, list[int]] = {}
    for k in indices:
        by_molecule.setdefault(dataset[k].get("molecule", ""), []).append(k)
    queues = list(by_molecule.values())
    chosen: list[int] = []
    while len(chosen) < min(n, len(indices)):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        nargs="+",
        default=sorted(glob.glob("pretrained/*.pt")),
        help="checkpoints, each optionally MODEL:DATA (a dataset holding its split)",
    )
    parser.add_argument("--n", type=int, default=20, help="held-out geometries per model")
    parser.add_argument("--conv-tol", type=float, default=DEFAULT_CONV_TOL, help="SCF energy tolerance, Hartree")
    parser.add_argument(
        "--split", default="test", choices=("test", "test_ood"), help="test_ood: molecules a set model never saw"
    )
    parser.add_argument("--guesses", nargs="+", default=list(STANDARD_GUESSES), choices=STANDARD_GUESSES)
    args = parser.parse_args()
    if "minao" not in args.guesses:
        parser.error("--guesses must include minao (the ratios are to minao)")
    guesses = (PREDICTED, *args.guesses)
    header = (
        f"{'model':<22}{'guess':<11}{'n':>4}{'iterations':>12}{'seconds':>10}{'iter/minao':>12}{'time/minao':>12}"
        f"{'> minao':>9}{'max |dE| / Ha':>15}"
    )
    lines = [header, "-" * len(header)]
    for pair in args.models:
        path, *data = pair.split(":", 1)
        predictor = load(path)
        predictor.warm_up()
        runs = []
        structures = list(held_out_structures(predictor, args.n, args.split, *data))
        for atoms in tqdm(structures, desc=Path(path).stem, unit="geometry", file=sys.stderr):
            runs.append(compare(atoms, predictor, tuple(args.guesses), conv_tol=args.conv_tol))
        spread = max(c.max_energy_spread for c in runs)
        iterations = {g: np.mean([c.result(g).n_iterations for c in runs]) for g in guesses}
        seconds = {g: np.mean([c.result(g).seconds for c in runs]) for g in guesses}
        worse = {g: sum(c.result(g).n_iterations > c.result("minao").n_iterations for c in runs) for g in guesses}
        unconverged = sum(not r.converged for c in runs for r in c.results)
        for g in guesses:
            lines.append(
                f"{Path(path).name:<22}{g:<11}{len(runs):>4}{iterations[g]:>12.2f}{seconds[g]:>10.3f}"
                f"{iterations[g] / iterations['minao']:>12.2f}{seconds[g] / seconds['minao']:>12.2f}{worse[g]:>9}"
                + (f"{spread:>15.1e}" if g == PREDICTED else "")
            )
        if unconverged:
            lines.append(f"{'':<22}{unconverged} runs did not converge within 100 cycles")
    print(f"SCF tolerance {args.conv_tol:.0e} Ha; seconds of the predicted guess include the prediction.")
    print("> minao: geometries on which the guess needed more iterations than minao.")
    print("max |dE|: largest difference between the final energies of all guesses on one geometry.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
