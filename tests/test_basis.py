"""phisnet.basis: the AO layout is exactly PySCF's."""

import pytest

from phisnet import InputError
from phisnet.basis import element_shells, layout
from phisnet.io import read_molecules
from phisnet.reference import build_mol

L_LETTERS = "spdfghi"


@pytest.mark.parametrize("name", ["water", "ethanol", "uracil"])
@pytest.mark.parametrize("basis", ["def2-svp", "cc-pvtz", "sto-3g"])
def test_layout_matches_pyscf_ao_labels(name, basis):
    (atoms,) = read_molecules(name)
    mol = build_mol(atoms, basis)
    lay = layout(atoms, basis)
    assert lay.nao == mol.nao
    labels = mol.ao_labels(fmt=False)  # (atom, symbol, nl, m-label)
    for atom_index, l, sl in lay.shell_slices():
        for k in range(sl.start, sl.stop):
            assert labels[k][0] == atom_index
            assert labels[k][2][-1] == L_LETTERS[l]
    for i, atom in enumerate(lay.atoms):
        assert mol.aoslice_by_atom()[i][2:].tolist() == [atom.start, atom.stop]


def test_def2_svp_shells():
    assert element_shells("H") == (0, 0, 1)
    assert element_shells("O") == (0, 0, 0, 1, 1, 2)
    assert layout(["O", "H", "H"]).nao == 24
    assert layout([8, 1, 1]).symbols == ("O", "H", "H")


def test_unknown_element_and_missing_basis():
    with pytest.raises(InputError, match="not a chemical element"):
        element_shells("Xx")
    with pytest.raises(InputError, match="no functions for U"):
        element_shells("U", "def2-svp")
