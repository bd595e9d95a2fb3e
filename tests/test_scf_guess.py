"""phisnet.scf_guess: the predicted guess against PySCF's guesses, on real SCF runs."""

import numpy as np
import pytest

from phisnet import InputError
from phisnet.io import read_molecules
from phisnet.model import load
from phisnet.observables import solve
from phisnet.reference import run_dft
from phisnet.scf_guess import PREDICTED, compare, scaled_error_guess


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
