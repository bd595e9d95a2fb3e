"""phisnet.observables.solve against PySCF's own orbitals."""

import warnings

import numpy as np
import pytest

from phisnet.io import read_molecules
from phisnet.observables import solve
from phisnet.reference import build_mol, make_mf


@pytest.fixture(scope="module")
def water_mf():
    (atoms,) = read_molecules("water")
    mf = make_mf(build_mol(atoms), "pbe")
    mf.conv_tol = 1e-11
    mf.kernel()
    return mf


def test_solve_reproduces_pyscf(water_mf):
    mf = water_mf
    orbitals = solve(mf.get_fock(), mf.get_ovlp(), n_electrons=10)
    np.testing.assert_allclose(orbitals.energies, mf.mo_energy, atol=1e-6)
    np.testing.assert_allclose(orbitals.density_matrix, mf.make_rdm1(), atol=1e-6)
    np.testing.assert_array_equal(orbitals.occupations, mf.mo_occ)
    assert orbitals.homo == pytest.approx(mf.mo_energy[4], abs=1e-6)
    assert orbitals.lumo == pytest.approx(mf.mo_energy[5], abs=1e-6)
    assert orbitals.gap == pytest.approx(mf.mo_energy[5] - mf.mo_energy[4], abs=1e-6)
    C = orbitals.coefficients
    np.testing.assert_allclose(C.T @ mf.get_ovlp() @ C, np.eye(24), atol=1e-10)


def test_near_singular_overlap_is_orthogonalised_with_a_warning(water_mf):
    F, S = water_mf.get_fock(), water_mf.get_ovlp()
    # Duplicate the last orbital: S becomes exactly singular.
    idx = list(range(24)) + [23]
    with pytest.warns(UserWarning, match="near-singular: 1 of 25 functions dropped"):
        orbitals = solve(F[np.ix_(idx, idx)], S[np.ix_(idx, idx)], n_electrons=10)
    np.testing.assert_allclose(orbitals.energies[:5], water_mf.mo_energy[:5], atol=1e-6)


def test_odd_electrons_rejected(water_mf):
    with pytest.raises(ValueError, match="even electron count"):
        solve(water_mf.get_fock(), water_mf.get_ovlp(), n_electrons=9)


def test_mulliken_and_dipole_reproduce_pyscf(water_mf):
    from phisnet.observables import dipole_moment, mulliken_charges

    orbitals = solve(water_mf.get_fock(), water_mf.get_ovlp(), n_electrons=10)
    mol = water_mf.mol
    np.testing.assert_allclose(
        mulliken_charges(mol, orbitals.density_matrix), water_mf.mulliken_pop(verbose=0)[1], atol=1e-6
    )
    np.testing.assert_allclose(dipole_moment(mol, orbitals.density_matrix), water_mf.dip_moment(verbose=0), atol=1e-6)
    assert abs(dipole_moment(mol, orbitals.density_matrix)[2]) > 1.5  # water's dipole, along z here


def test_energy_and_forces_of_the_converged_density_are_pyscfs(water_mf):
    from phisnet.observables import energy_and_forces
    from phisnet.reference import BOHR

    orbitals = solve(water_mf.get_fock(), water_mf.get_ovlp(), n_electrons=10)
    energy, forces = energy_and_forces(water_mf.mol, orbitals, "pbe")
    assert energy == pytest.approx(water_mf.e_tot, abs=1e-9)
    expected = -water_mf.nuc_grad_method().kernel() / BOHR
    np.testing.assert_allclose(forces, expected, atol=1e-6)
    # A perturbed Hamiltonian raises the energy (the functional is minimal at the SCF density).
    noisy = water_mf.get_fock() + 1e-3 * np.random.default_rng(1).normal(size=(24, 24))
    worse = solve(0.5 * (noisy + noisy.T), water_mf.get_ovlp(), n_electrons=10)
    assert energy_and_forces(water_mf.mol, worse, "pbe", forces=False)[0] > water_mf.e_tot


def test_predict_wavefunction_with_the_pretrained_water_model():
    from phisnet import InputError
    from phisnet.observables import predict_wavefunction
    from phisnet.predictor import load

    predictor = load("pretrained/water.pt")
    (atoms,) = read_molecules("water")
    wf = predict_wavefunction(predictor, atoms)
    assert wf.orbitals.n_occupied == 5 and wf.seconds > 0
    np.testing.assert_allclose(wf.exact_overlap, build_mol(atoms).intor("int1e_ovlp"))
    np.testing.assert_allclose(np.trace(wf.orbitals.density_matrix @ wf.exact_overlap), 10, atol=1e-8)
    assert abs(wf.charges().sum()) < 1e-8 and wf.charges()[0] < 0  # oxygen is negative
    with pytest.raises(InputError, match="closed-shell molecules only"):
        predict_wavefunction(predictor, atoms, charge=1)
    with pytest.raises(InputError, match="C"):
        predict_wavefunction(predictor, read_molecules("ethanol")[0])


def test_align_orbital_signs(water_mf):
    from phisnet.observables import align_orbital_signs

    orbitals = solve(water_mf.get_fock(), water_mf.get_ovlp(), n_electrons=10)
    flipped = solve(water_mf.get_fock(), water_mf.get_ovlp(), n_electrons=10)
    flipped.coefficients[:, [1, 4, 7]] *= -1
    aligned = align_orbital_signs(flipped, orbitals, water_mf.get_ovlp())
    np.testing.assert_allclose(aligned.coefficients, orbitals.coefficients, atol=1e-10)
    np.testing.assert_allclose(aligned.density_matrix, orbitals.density_matrix, atol=1e-12)


def test_solve_in_a_subspace_of_the_overlap(water_mf):
    H, S = water_mf.get_fock(), water_mf.get_ovlp()
    s = np.linalg.eigvalsh(S)
    full = solve(H, S, 10)
    same = solve(H, S, 10, subspace=0.5 * s[0])  # below every eigenvalue: the full problem
    assert np.allclose(same.energies, full.energies, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a chosen subspace is not a near-singular S: no warning
        cut = solve(H, S, 10, subspace=0.1)
    kept = int((s > 0.1).sum())
    assert cut.coefficients.shape == (len(S), kept) and len(cut.energies) == kept < len(S)
    assert np.allclose(cut.coefficients.T @ S @ cut.coefficients, np.eye(kept), atol=1e-10)
    # Fewer functions raise every orbital energy (variational), the occupied ones only a little here.
    assert np.all(cut.energies[:5] >= full.energies[:5] - 1e-12)
    assert np.abs(cut.energies[:5] - full.energies[:5]).max() < 0.05
    with pytest.raises(ValueError, match="at least 0"):
        solve(H, S, 10, subspace=-1.0)
