"""phisnet.metrics: the paper's metrics behave as defined."""

import numpy as np
import pytest

from phisnet.io import read_molecules
from phisnet.metrics import Metrics, format_table, orbital_errors
from phisnet.reference import run_dft


@pytest.fixture(scope="module")
def water_ref():
    return run_dft(read_molecules("water")[0], forces=False)


def test_exact_prediction_scores_perfectly(water_ref):
    H, S = water_ref.hamiltonian, water_ref.overlap
    eps, psi = orbital_errors(H, S, H, S, 5)
    assert eps == pytest.approx(0, abs=1e-12) and psi == pytest.approx(1, abs=1e-12)


def test_shifted_hamiltonian_shifts_orbital_energies(water_ref):
    H, S = water_ref.hamiltonian, water_ref.overlap
    shift = 1e-4
    eps, psi = orbital_errors(H + shift * S, S, H, S, 5)  # H + c S has the same orbitals, energies + c
    assert eps == pytest.approx(shift, rel=1e-6) and psi == pytest.approx(1, abs=1e-9)
    noisy = H + np.random.default_rng(0).normal(scale=1e-2, size=H.shape)
    eps, psi = orbital_errors(0.5 * (noisy + noisy.T), S, H, S, 5)
    assert eps > 1e-4 and psi < 1


def test_table_layout():
    table = format_table([("water (test)", Metrics(100, 17.6, 0.9, 85.5, 100.0))])
    assert "H [uHa]" in table.splitlines()[0] and "17.6" in table and "85.5" in table
