"""phisnet.subspace: the orbital subspace a model is solved in, chosen on validation structures."""

import numpy as np
import pytest
from conftest import Oracle

from phisnet.errors import InputError
from phisnet.io import read_molecules
from phisnet.metrics import evaluate, format_table
from phisnet.reference import run_dft


@pytest.fixture(scope="module")
def water_ref():
    return run_dft(read_molecules("water")[0], forces=False)


def _sample(atoms, ref):
    import torch

    return {
        "atomic_numbers": torch.as_tensor(atoms.numbers),
        "positions": torch.as_tensor(atoms.positions),
        "hamiltonian": torch.as_tensor(ref.hamiltonian),
        "overlap": torch.as_tensor(ref.overlap),
        "energy": torch.tensor(ref.energy, dtype=torch.float64),
        "forces": torch.full((len(atoms), 3), float("nan"), dtype=torch.float64),
    }


def test_choose_subspace_keeps_a_right_hamiltonian_whole_and_cuts_an_error_along_near_null_overlap(water_ref):
    from phisnet.observables import solve
    from phisnet.predictor import Prediction
    from phisnet.subspace import SubspaceChoice, choose_subspace, occupied_space_error

    atoms = read_molecules("water")[0]
    H, S = water_ref.hamiltonian, water_ref.overlap
    s, U = np.linalg.eigh(S)
    assert s[0] < 0.05 < s[1]  # water in def2-SVP: 0.038, then 0.082

    class NearNullError(Oracle):  # H wrong only along S's least eigenvector: amplified ~1/s in the orbitals
        def predict(self, atoms):
            return Prediction(H - 0.2 * np.outer(U[:, 0], U[:, 0]), S, 0.0)

    full = solve(H - 0.2 * np.outer(U[:, 0], U[:, 0]), S, 10)
    assert occupied_space_error(full.density_matrix, solve(H, S, 10).density_matrix, S) > 0.9  # one orbital lost
    samples = [_sample(atoms, water_ref)] * 2
    exact = choose_subspace(Oracle(water_ref), samples, candidates=[0, 0.05, 0.1])
    assert exact.threshold == 0 and exact.errors[0] == pytest.approx(0, abs=1e-12)
    assert exact.errors[1] > 1e-3  # leaving out a part of the basis costs an exact H something
    wrong = choose_subspace(NearNullError(water_ref), samples, candidates=[0, 0.05, 0.1])
    assert wrong.threshold == 0.05 and wrong.errors[0] > 0.9 and wrong.errors[1] < 0.01
    assert isinstance(wrong, SubspaceChoice) and "<- chosen" in wrong.format_table().splitlines()[3]
    with pytest.raises(InputError, match="ascending"):
        choose_subspace(Oracle(water_ref), samples, candidates=[0.1, 0])
    # evaluate solves within the subspace given (or the model's): eps and psi recover, the table says so.
    assert evaluate(NearNullError(water_ref), samples).psi_percent < 95
    cut = evaluate(NearNullError(water_ref), samples, subspace=0.05)
    assert cut.psi_percent > 99 and cut.subspace == 0.05
    assert "eigenvalues above 0.05" in format_table([("water", cut)])
