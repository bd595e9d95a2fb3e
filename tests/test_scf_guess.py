"""phisnet.scf_guess: the predicted guess against PySCF's guesses, on real SCF runs."""

import numpy as np
import pytest
import scipy.linalg

from phisnet import InputError
from phisnet.io import read_molecules
from phisnet.observables import solve
from phisnet.predictor import load
from phisnet.reference import run_dft
from phisnet.scf_guess import PREDICTED, OccupiedVirtualError, compare, scaled_error_guess


@pytest.fixture(scope="module")
def predictor():
    return load("pretrained/water.pt")


@pytest.fixture(scope="module")
def comparison(predictor):
    (atoms,) = read_molecules("water")
    atoms.rattle(0.02, seed=3)
    return compare(atoms, predictor, guesses=("minao", "1e"))


def test_every_guess_reaches_the_same_energy(comparison):
    assert [r.guess for r in comparison.results] == [PREDICTED, "minao", "1e"]
    assert all(r.converged for r in comparison.results)
    assert comparison.max_energy_spread < comparison.conv_tol
    for r in comparison.results:
        assert len(r.energies) == r.n_iterations and abs(r.energies[-1] - r.energy) < comparison.conv_tol
        assert comparison.energy_errors(r.guess)[-1] < comparison.conv_tol


def test_predicted_guess_times_include_the_prediction_and_beat_the_core_guess(comparison):
    predicted, minao, core = (comparison.result(g) for g in (PREDICTED, "minao", "1e"))
    assert predicted.predict_seconds > 0 and minao.predict_seconds == 0
    assert predicted.seconds > predicted.predict_seconds
    # The first energy of the predicted guess is far closer to the answer than the core guess's.
    assert comparison.energy_errors(PREDICTED)[0] < comparison.energy_errors("1e")[0]
    assert predicted.n_iterations < core.n_iterations
    rows = comparison.rows()
    assert rows[1]["iterations / minao"] == 1.0
    assert "largest difference between final energies" in comparison.format_table()
    assert np.isfinite([r["seconds"] for r in rows]).all()


def test_unknown_element_is_refused(predictor):
    with pytest.raises(InputError, match="not trained on C"):
        compare(read_molecules("ethanol")[0], predictor)


def test_scaled_error_guess_interpolates_between_the_reference_and_the_prediction(predictor):
    (atoms,) = read_molecules("water")
    atoms.rattle(0.03, seed=5)
    ref = run_dft(atoms, forces=False, conv_tol=1e-11)
    H = predictor.predict(atoms).hamiltonian
    dm_ref = ref.mo_coeff[:, :5] @ ref.mo_coeff[:, :5].T * 2
    dm_pred = solve(H, ref.overlap, 10).density_matrix
    dm = {a: scaled_error_guess(H, ref.hamiltonian, ref.overlap, 10, a) for a in (0.0, 0.5, 1.0)}
    np.testing.assert_allclose(dm[0.0], dm_ref, atol=1e-6)  # mo_coeff are one cycle behind get_fock()
    error = np.linalg.norm(dm_pred - dm_ref)
    assert error > 1e-4
    # Only the occupied-virtual block moves the density: scale 1 is the prediction's density to first
    # order, and the density error is linear in the scale.
    assert np.linalg.norm(dm[1.0] - dm_pred) < 0.05 * error
    assert np.linalg.norm(dm[0.5] - dm_ref) == pytest.approx(0.5 * np.linalg.norm(dm[1.0] - dm_ref), rel=0.05)
    # The reference density is converged already: PySCF stops after one cycle from it.
    assert run_dft(atoms, dm0=dm[0.0], forces=False).n_iterations == 1


def test_occupied_virtual_error_sees_only_the_block_that_moves_the_density():
    rng = np.random.default_rng(3)
    nao, n_electrons = 9, 6
    A = rng.normal(size=(nao, nao))
    overlap = A @ A.T / nao + np.eye(nao)
    reference = rng.normal(size=(nao, nao))
    reference = reference + reference.T
    ov = OccupiedVirtualError.from_matrices(reference, reference, overlap, n_electrons)
    C, eps = ov.orbitals, ov.energies
    SC = overlap @ C
    d, homo, lumo = 1e-3, 2, 3
    # An error between HOMO and LUMO, and one within the occupied orbitals that must not count.
    coupling = np.outer(SC[:, homo], SC[:, lumo])
    within = np.outer(SC[:, 0], SC[:, 1])
    H = reference + d * (coupling + coupling.T) + 5 * d * (within + within.T)
    ov = OccupiedVirtualError.from_matrices(H, reference, overlap, n_electrons)
    assert ov.block.shape == (3, 6)
    expected = np.zeros((3, 6))
    expected[homo, 0] = d
    np.testing.assert_allclose(ov.block, expected, atol=1e-12)
    assert ov.rms == pytest.approx(d / np.sqrt(18), rel=1e-9)
    assert ov.rotation_rms == pytest.approx(d / (eps[lumo] - eps[homo]) / np.sqrt(18), rel=1e-9)
    # The what-if guess at scale 1 is the density of H to first order; at 0 the reference density.
    dm_ref = 2 * C[:, :3] @ C[:, :3].T
    _, orbitals = scipy.linalg.eigh(H, overlap)
    dm_H = 2 * orbitals[:, :3] @ orbitals[:, :3].T
    np.testing.assert_allclose(ov.guess(0.0), dm_ref, atol=1e-12)
    assert np.linalg.norm(ov.guess(1.0) - dm_H) < 1e-3 * np.linalg.norm(dm_H - dm_ref)
    np.testing.assert_allclose(ov.guess(0.5), scaled_error_guess(H, reference, overlap, n_electrons, 0.5))
