"""A model's orbital subspace: the overlap eigenvalue below which its orbitals are better left out.

A predicted H is least reliable along combinations of basis functions that the overlap S nearly
annihilates; solving within the span of S's eigenvectors above a threshold drops them
(``phisnet.observables.solve``). ``choose_subspace`` picks the threshold on validation data by the
occupied-space error of the predicted density; ``phisnet subspace --write`` and
``phisnet train --choose-subspace`` store it in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from phisnet.errors import InputError

#: Thresholds ``choose_subspace`` tries by default, ascending (0: the full problem).
SUBSPACE_CANDIDATES = (0.0, 1e-3, 3e-3, 0.01, 0.02, 0.03, 0.05, 0.1)

#: ``choose_subspace`` leaves the first candidate (the full problem) only for a threshold with this many times less
#: error: a small gain in the density is not worth it (ethanol's model, 0.01 picked for 0.0008 against 0.0009 of the
#: full problem, needed 7.10 SCF iterations against 6.90 on 20 test geometries).
SUBSPACE_GAIN = 2.0


def occupied_space_error(density: np.ndarray, reference: np.ndarray, overlap: np.ndarray) -> float:
    """How far a closed-shell density's occupied space is from the reference's, in occupied orbitals.

    Tr[dD S dD S] / 8 for densities D = 2 C_occ C_occ^T: the sum of sin^2 of the principal angles
    between the two occupied spaces, 0 when they are the same and 1 for one orbital wholly
    misplaced. It is what an SCF started from the density has left to correct.
    """
    a = (density - reference) @ overlap
    return float((a * a.T).sum() / 8.0)  # Tr[a a] without forming a @ a


@dataclass
class SubspaceChoice:
    """A model's orbital subspace threshold chosen on data: the error of each candidate and the pick."""

    threshold: float
    candidates: list[float]
    errors: list[float]  # mean occupied_space_error per candidate
    n_structures: int
    data: str = ""
    split: str = ""

    def to_json(self) -> dict:
        return {
            "threshold": self.threshold,
            "candidates": self.candidates,
            "occupied_space_errors": self.errors,
            "n_structures": self.n_structures,
            "data": self.data,
            "split": self.split,
        }

    def format_table(self) -> str:
        lines = [f"{'S eigenvalues kept >':>22}{'occupied-space error':>22}", "-" * 44]
        for t, e in zip(self.candidates, self.errors, strict=True):
            mark = "   <- chosen" if t == self.threshold else ""
            lines.append(f"{t:>22g}{e:>22.3e}{mark}")
        lines.append(
            f"mean over {self.n_structures} structures of Tr[dD S dD S]/8 (occupied orbitals out of place) of the "
            "predicted H's density, exact S; 0 solves the full problem. Chosen: the least error where it is "
            f"{SUBSPACE_GAIN:g}x less than the first candidate's, else the first."
        )
        return "\n".join(lines)


def store_subspace(path, choice: SubspaceChoice) -> None:
    """Write a choice into a checkpoint's metadata (``subspace`` and ``subspace_choice``); weights untouched."""
    from phisnet.checkpoint import update_checkpoint_metadata

    update_checkpoint_metadata(path, {"subspace": choice.threshold, "subspace_choice": choice.to_json()})


def choose_subspace(
    predictor, dataset, indices=None, candidates=SUBSPACE_CANDIDATES, progress: bool = False
) -> SubspaceChoice:
    """The overlap-eigenvalue threshold below which a model's orbitals are better left out, chosen on data.

    For each structure the predicted H is solved with the exact S in the span of S's
    eigenvectors above each candidate threshold (``phisnet.observables.solve``), and the
    density compared with the reference's (``occupied_space_error``) over the rows ``indices``
    (all when None). The pick is the candidate of least mean error if that is ``SUBSPACE_GAIN``
    times less than the first candidate's (usually 0, the full problem), else the first: a model
    whose H is right along S's near-null combinations keeps the full problem. Choose on
    validation data, never on the test split the model is reported on.
    """
    from phisnet.dataset import sample_atoms
    from phisnet.observables import solve

    candidates = [float(t) for t in candidates]
    if not candidates or any(not t >= 0 for t in candidates) or candidates != sorted(set(candidates)):
        raise InputError(
            f"subspace candidates must be distinct thresholds of at least 0 in ascending order, got {candidates}."
        )
    indices = list(range(len(dataset))) if indices is None else list(indices)
    if not indices:
        raise InputError("no structures to choose the subspace on")
    settings = getattr(dataset, "metadata", {}).get("settings") or {}
    charge = int(settings.get("charge", 0))
    errors = np.zeros((len(indices), len(candidates)))
    for row, k in enumerate(tqdm(indices, desc="subspace", unit="structure", disable=not progress)):
        sample = dataset[k]
        atoms = sample_atoms(sample)
        H = predictor.predict(atoms).hamiltonian
        S = sample["overlap"].numpy()
        n_electrons = int(atoms.numbers.sum()) - charge
        reference = solve(sample["hamiltonian"].numpy(), S, n_electrons).density_matrix
        for col, t in enumerate(candidates):
            errors[row, col] = occupied_space_error(solve(H, S, n_electrons, subspace=t).density_matrix, reference, S)
    mean = errors.mean(0)
    best = int(np.argmin(mean))
    pick = best if mean[best] * SUBSPACE_GAIN <= mean[0] else 0
    return SubspaceChoice(
        threshold=candidates[pick],
        candidates=candidates,
        errors=[float(e) for e in mean],
        n_structures=len(indices),
        data=str(getattr(dataset, "path", "")),
    )
