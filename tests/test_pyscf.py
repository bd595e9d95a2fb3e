"""phisnet.pyscf.guess: a model's density as the start of the user's own PySCF calculation."""

from pathlib import Path

import numpy as np
import pytest
from pyscf import dft, gto, scf

import phisnet.pyscf
from phisnet.errors import InputError
from phisnet.molecules import paper_molecule

ROOT = Path(__file__).resolve().parents[1]
WATER = str(ROOT / "pretrained" / "water.pt")


def water_mol(**kwargs):
    atoms = paper_molecule("water")
    atoms.positions[1] += (0.04, 0.02, 0.0)
    settings = {"basis": "def2-SVP", "verbose": 0, **kwargs}
    return gto.M(atom=list(zip(atoms.get_chemical_symbols(), atoms.positions.tolist(), strict=True)), **settings)


def test_the_guess_saves_iterations_and_changes_no_answer():
    mol = water_mol()
    mf = dft.RKS(mol, xc="pbe")
    mf.conv_tol = 1e-10
    energy = mf.kernel(dm0=phisnet.pyscf.guess(mf, WATER))
    guessed = mf.cycles
    plain = dft.RKS(mol, xc="pbe")
    plain.conv_tol = 1e-10
    assert energy == pytest.approx(plain.kernel(), abs=1e-8)
    assert guessed < plain.cycles  # minao, PySCF's default
    assert np.einsum("ij,ji->", phisnet.pyscf.guess(mol, WATER), mol.intor("int1e_ovlp")) == pytest.approx(10.0)


def test_an_unrestricted_calculation_gets_two_spin_densities():
    mol = water_mol()
    dm = phisnet.pyscf.guess(scf.UHF(mol), WATER)
    assert dm.shape == (2, mol.nao, mol.nao)
    np.testing.assert_allclose(dm[0], dm[1])


@pytest.mark.parametrize(
    ("mol", "message"),
    [
        (water_mol(basis="sto-3g"), "def2-svp basis"),
        (water_mol(cart=True), "spherical"),
        (gto.M(atom="O 0 0 0; H 0 0 0.97", basis="def2-svp", spin=1, verbose=0), "closed-shell"),
        (gto.M(atom="O 0 0 0; O 0 0 1.45; H 0.95 0 -0.2; H -0.95 0.1 1.65", basis="def2-svp", verbose=0), "not water"),
        (gto.M(atom="C 0 0 0; O 0 0 1.13", basis="def2-svp", verbose=0), "not trained on C"),
    ],
)
def test_a_calculation_the_model_cannot_start_is_refused(mol, message):
    with pytest.raises(InputError, match=message):
        phisnet.pyscf.guess(mol, WATER)


def test_what_is_not_a_molecule_or_a_model_is_refused():
    with pytest.raises(InputError, match="PySCF Mole"):
        phisnet.pyscf.guess("water", WATER)
    with pytest.raises(InputError, match="no checkpoint file"):
        phisnet.pyscf.guess(water_mol(), ROOT / "pretrained" / "missing.pt")
