"""phisnet.reference: PySCF calculations and what they report."""

import numpy as np
import pytest
import scipy.linalg

from phisnet import InputError
from phisnet.io import read_molecules
from phisnet.reference import BOHR, build_mol, run_dft


@pytest.fixture(scope="module")
def water():
    return read_molecules("water")[0]


@pytest.fixture(scope="module")
def water_pbe(water):
    return run_dft(water, conv_tol=1e-11)


def test_fields(water_pbe):
    ref = water_pbe
    assert ref.converged and ref.xc == "pbe" and ref.basis == "def2-svp"
    assert ref.hamiltonian.shape == ref.overlap.shape == ref.mo_coeff.shape == (24, 24)
    np.testing.assert_allclose(ref.hamiltonian, ref.hamiltonian.T, atol=1e-12)
    assert ref.forces.shape == (3, 3) and np.isfinite(ref.forces).all()
    assert ref.n_iterations == len(ref.energies) > 1
    assert ref.energies[-1] == pytest.approx(ref.energy, abs=1e-9)
    assert ref.seconds > 0 and ref.mo_occ.sum() == pytest.approx(10)
    assert -76.4 < ref.energy < -76.1


def test_orbital_energies_solve_the_generalized_eigenproblem(water_pbe):
    eps = scipy.linalg.eigh(water_pbe.hamiltonian, water_pbe.overlap, eigvals_only=True)
    np.testing.assert_allclose(eps, water_pbe.mo_energy, atol=1e-6)


def test_forces_are_minus_the_energy_gradient_in_hartree_per_angstrom(water, water_pbe):
    h = 1e-3  # Angstrom
    for atom, axis in [(0, 2), (1, 1)]:
        energies = []
        for sign in (1, -1):
            displaced = water.copy()
            displaced.positions[atom, axis] += sign * h
            energies.append(run_dft(displaced, conv_tol=1e-11, forces=False).energy)
        finite_difference = -(energies[0] - energies[1]) / (2 * h)
        assert water_pbe.forces[atom, axis] == pytest.approx(finite_difference, abs=2e-4)
    assert BOHR == pytest.approx(0.529177, abs=1e-6)


def test_overlap_is_pyscfs(water, water_pbe):
    np.testing.assert_allclose(water_pbe.overlap, build_mol(water).intor("int1e_ovlp"), atol=1e-14)


def test_hartree_fock_and_other_functionals(water, water_pbe):
    hf = run_dft(water, xc="hf", forces=False)
    assert hf.converged and -76.1 < hf.energy < -75.9
    assert abs(hf.energy - water_pbe.energy) > 0.1
    b3lyp = run_dft(water, xc="b3lyp", basis="sto-3g", forces=False)
    assert b3lyp.converged and b3lyp.hamiltonian.shape == (7, 7)


def test_open_shell_uses_restricted_open_shell(water):
    ref = run_dft(water, charge=1, spin=1, forces=False)
    assert ref.converged and ref.mo_occ.sum() == pytest.approx(9)


def test_non_convergence_is_reported(water):
    ref = run_dft(water, max_cycle=2, conv_tol=1e-12)
    assert not ref.converged
    assert np.isnan(ref.forces).all()


def test_unknown_functional(water):
    with pytest.raises(InputError, match="not an exchange-correlation functional"):
        run_dft(water, xc="no-such-functional")


def test_the_scf_time_estimate_is_the_right_scale():
    from phisnet.io import read_molecules
    from phisnet.reference import estimate_scf_seconds

    water, ethanol = read_molecules("water")[0], read_molecules("ethanol")[0]
    ref = run_dft(ethanol, forces=False)  # measured here, now: the estimate is within a factor of 5 either way
    assert ref.seconds / 5 < estimate_scf_seconds(ethanol) < ref.seconds * 5
    assert (
        estimate_scf_seconds(water) < estimate_scf_seconds(ethanol) < estimate_scf_seconds(read_molecules("uracil")[0])
    )
    assert estimate_scf_seconds(ethanol, xc="hf") < estimate_scf_seconds(ethanol)
    hydroxide = read_molecules("[OH-]", format="smiles")[0]  # an ion: its electron count, not its nuclei's
    assert estimate_scf_seconds(hydroxide) > 0


def test_progress_sees_every_iteration_and_can_stop_the_scf(water):
    seen = []
    result = run_dft(water, xc="hf", forces=False, progress=lambda i, e: seen.append((i, e)))
    assert [i for i, _ in seen] == list(range(1, result.n_iterations + 1))
    assert seen[-1][1] == pytest.approx(result.energy, abs=1e-8)

    class Stopped(Exception):
        pass

    def stop(iteration, energy):  # what Streamlit's Stop button does from the app's progress bar
        if iteration == 2:
            raise Stopped

    with pytest.raises(Stopped):
        run_dft(water, xc="hf", forces=False, progress=stop)
