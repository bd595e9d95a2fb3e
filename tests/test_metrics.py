"""phisnet.metrics: the paper's metrics behave as defined."""

import numpy as np
import pytest
from conftest import Oracle

from phisnet.io import read_molecules
from phisnet.metrics import Metrics, block_errors, evaluate, format_block_table, format_table, orbital_errors
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


def test_block_errors_say_where_the_error_sits():
    # Water in def2-SVP: O has 14 functions, each H 5. An error only between O and the first H, and a
    # smaller one on the H-H blocks, shows up under those kinds and nowhere else.
    slices = [(0, 14), (14, 19), (19, 24)]
    error = np.zeros((24, 24))
    error[0:14, 14:19] = error[14:19, 0:14] = 2e-4
    error[14:19, 19:24] = error[19:24, 14:19] = -1e-4
    totals = block_errors(error, [8, 1, 1], slices)
    assert set(totals) == {"O", "H", "O-H", "H-H"}
    mae = {kind: total / count for kind, (total, count) in totals.items()}
    # O-H: 4 blocks of 14 x 5 entries, half of them (the first H's) at 2e-4.
    assert mae["O-H"] == pytest.approx(1e-4) and mae["H-H"] == pytest.approx(1e-4)
    assert mae["O"] == 0 and mae["H"] == 0
    assert sum(count for _, count in totals.values()) == 24 * 24
    table = format_block_table(
        [("water (test)", Metrics(1, 0.0, 0.0, 0.0, 100.0, h_mae_by_block={"O": 5, "O-H": 100}))]
    )
    lines = table.splitlines()
    assert "water (test)" in lines[0] and [line.split()[0] for line in lines[2:4]] == ["O", "O-H"]
    assert lines[3].split()[1] == "100.0"


def test_exact_prediction_gives_dft_energy_and_forces(water_ref):
    import torch

    atoms = read_molecules("water")[0]
    ref = run_dft(atoms, conv_tol=1e-11)
    sample = {
        "atomic_numbers": torch.as_tensor(atoms.numbers),
        "positions": torch.as_tensor(atoms.positions),
        "hamiltonian": torch.as_tensor(ref.hamiltonian),
        "overlap": torch.as_tensor(ref.overlap),
        "energy": torch.tensor(ref.energy, dtype=torch.float64),
        "forces": torch.as_tensor(ref.forces),
    }
    metrics = evaluate(Oracle(ref), [sample], energies=True)
    assert metrics.h_mae_uha == 0 and metrics.eps_mae_uha < 1e-6
    assert metrics.h_mae_by_block == {"O": 0, "H": 0, "O-H": 0, "H-H": 0}
    assert metrics.energy_mae_mev < 1e-5 and metrics.force_mae_mev_a < 1e-3
    # A wrong energy in the data shows up as exactly that error.
    sample["energy"] = torch.tensor(ref.energy + 1e-3, dtype=torch.float64)
    shifted = evaluate(Oracle(ref), [sample], energies=True)
    assert shifted.energy_mae_mev == pytest.approx(1e-3 * 27211.386, rel=1e-4)
    assert "E [meV]" in format_table([("water", shifted)])
    # Data made without forces: the energy is still compared, the forces are said to be missing.
    sample["forces"] = torch.full_like(sample["forces"], float("nan"))
    no_forces = evaluate(Oracle(ref), [sample], energies=True)
    assert no_forces.energy_mae_mev == pytest.approx(shifted.energy_mae_mev) and np.isnan(no_forces.force_mae_mev_a)
    assert "no reference forces (generated with --no-forces)" in format_table([("water", no_forces)])


def test_indefinite_predicted_overlap_is_orthogonalised_and_counted(water_ref):
    H, S = water_ref.hamiltonian, water_ref.overlap
    s, U = np.linalg.eigh(S)
    s[0] = -1e-3  # one negative eigenvalue: Cholesky (scipy eigh with S) fails on this
    bad_S = (U * s) @ U.T
    with pytest.warns(UserWarning, match="near-singular"):
        eps, psi = orbital_errors(H, bad_S, H, S, 5)
    assert np.isfinite(eps) and 0 < psi <= 1
    metrics = Metrics(10, 1.0, 1.0, 1.0, 99.0, n_orthogonalised=3)
    assert "x: the predicted S was not positive definite for 3 of 10" in format_table([("x", metrics)])
    # A table of many molecules says it once.
    table = format_table([(f"m{k}", metrics) for k in range(5)])
    assert table.count("positive definite") == 1 and "5 of 5 rows: the predicted S was not" in table
    assert "for 15 of 50 structures" in table


def test_overlap_without_room_for_the_occupied_orbitals_is_counted_not_fatal(water_ref):
    import torch

    from phisnet.predictor import Prediction

    class Collapsed(Oracle):  # S of rank 2 < 5 occupied orbitals of water
        def predict(self, atoms):
            v = np.zeros((len(self.ref.overlap), 2))
            v[0, 0] = v[1, 1] = 1.0
            return Prediction(self.ref.hamiltonian, v @ v.T, 0.0)

    atoms = read_molecules("water")[0]
    sample = {
        "atomic_numbers": torch.as_tensor(atoms.numbers),
        "positions": torch.as_tensor(atoms.positions),
        "hamiltonian": torch.as_tensor(water_ref.hamiltonian),
        "overlap": torch.as_tensor(water_ref.overlap),
    }
    exact = evaluate(Oracle(water_ref), [sample])
    metrics = evaluate(Collapsed(water_ref), [sample, sample])
    assert metrics.n_unsolvable == 2 and np.isnan(metrics.eps_mae_uha) and metrics.h_mae_uha == exact.h_mae_uha
    assert "fewer usable functions than occupied orbitals" in format_table([("x", metrics)])
