"""phisnet.conventions: the PySCF <-> e3nn map, proven against PySCF itself."""

import numpy as np
import pytest
import torch
from e3nn import o3
from scipy.spatial.transform import Rotation

from phisnet.basis import layout
from phisnet.conventions import (
    AXES_TO_E3NN,
    ao_rotation,
    e3nn_to_pyscf_index,
    pyscf_to_e3nn_index,
    shell_rotation,
    to_e3nn_coordinates,
)
from phisnet.io import read_molecules
from phisnet.reference import build_mol, run_dft
from phisnet.torchtools import default_dtype


def random_rotations(n, seed):
    return Rotation.random(n, random_state=seed).as_matrix()


def rotated(atoms, R):
    out = atoms.copy()
    out.positions = atoms.positions @ R.T
    return out


@pytest.mark.parametrize("l", range(5))
def test_shell_rotation_is_a_representation(l):
    R1, R2 = random_rotations(2, seed=l)
    D1, D2 = shell_rotation(l, R1), shell_rotation(l, R2)
    np.testing.assert_allclose(D1 @ D1.T, np.eye(2 * l + 1), atol=1e-12)
    np.testing.assert_allclose(shell_rotation(l, R1 @ R2), D1 @ D2, atol=1e-12)
    np.testing.assert_allclose(shell_rotation(l, np.eye(3)), np.eye(2 * l + 1), atol=1e-12)


@pytest.mark.parametrize("l", range(5))
def test_map_agrees_with_e3nn(l):
    with default_dtype(torch.float64):
        (R,) = random_rotations(1, seed=10 + l)
        De = o3.Irrep(l, (-1) ** l).D_from_matrix(torch.as_tensor(AXES_TO_E3NN @ R @ AXES_TO_E3NN.T)).numpy()
        idx = list(pyscf_to_e3nn_index(l))
        Dp = shell_rotation(l, R)
        np.testing.assert_allclose(Dp[np.ix_(idx, idx)], De, atol=1e-12)
        # e3nn's l=1 irrep of the (y, z, x)-permuted vector is the vector itself.
        v = np.random.default_rng(l).normal(size=3)
        if l == 1:
            np.testing.assert_allclose(De @ to_e3nn_coordinates(v), to_e3nn_coordinates(R @ v), atol=1e-12)
            np.testing.assert_allclose(Dp, R, atol=1e-12)  # PySCF's (px, py, pz) rotate as Cartesians
        assert [idx[i] for i in e3nn_to_pyscf_index(l)] == list(range(2 * l + 1))


def test_rejects_non_rotations():
    with pytest.raises(ValueError):
        shell_rotation(1, np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ValueError):
        shell_rotation(1, np.ones((3, 3)))


@pytest.mark.parametrize("basis", ["def2-svp", "cc-pvqz"])  # cc-pVQZ has f and g shells on O
@pytest.mark.parametrize("name", ["water", "ethanol"])
def test_overlap_rotates_with_ao_rotation(name, basis):
    (atoms,) = read_molecules(name)
    lay = layout(atoms, basis)
    S = build_mol(atoms, basis).intor("int1e_ovlp")
    for R in random_rotations(4, seed=1):
        D = ao_rotation(lay, R)
        S_rot = build_mol(rotated(atoms, R), basis).intor("int1e_ovlp")
        np.testing.assert_allclose(S_rot, D @ S @ D.T, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name, n_rotations", [("water", 3), ("ethanol", 2)])
def test_fock_rotates_with_ao_rotation(name, n_rotations):
    """Ground truth: PySCF PBE/def2-SVP Fock of the rotated molecule equals D F D^T.

    PySCF's DFT grid is not rotation invariant: with its default grid (level 3) rotated
    ethanol Fock matrices differ by up to ~9e-6 Ha, with level 5 by ~2e-7, so this uses level 5.
    """
    (atoms,) = read_molecules(name)
    lay = layout(atoms)
    ref = run_dft(atoms, conv_tol=1e-12, forces=False, grid_level=5)
    assert ref.converged
    for R in random_rotations(n_rotations, seed=2):
        D = ao_rotation(lay, R)
        rot = run_dft(rotated(atoms, R), conv_tol=1e-12, forces=False, grid_level=5)
        assert rot.converged
        np.testing.assert_allclose(rot.hamiltonian, D @ ref.hamiltonian @ D.T, atol=1e-6, rtol=0)
        np.testing.assert_allclose(rot.overlap, D @ ref.overlap @ D.T, atol=1e-10, rtol=0)
        assert abs(rot.energy - ref.energy) < 1e-6
