"""phisnet.observables.solve against PySCF's own orbitals."""

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
