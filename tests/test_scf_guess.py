"""phisnet.scf_guess: the predicted guess against PySCF's guesses, on real SCF runs."""

import numpy as np
import pytest

from phisnet import InputError
from phisnet.io import read_molecules
from phisnet.model import load
from phisnet.scf_guess import PREDICTED, compare


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
