"""phisnet.molecules: the paper's molecules and the general molecule set; force-field normal modes."""

import ase
import numpy as np
import pytest
from rdkit import Chem

from phisnet.errors import InputError
from phisnet.molecules import (
    SET_ELEMENTS,
    SET_MAX_HEAVY_ATOMS,
    MoleculeEntry,
    bond_signature,
    builtin_molecule_set,
    check_entry,
    conformers,
    g2_molecule_set,
    paper_molecule,
    rdkit_molecule,
    read_molecule_list,
    same_molecule,
    write_molecule_list,
)
from phisnet.sampling import force_field_modes, thermal_sample


def test_builtin_set_is_diverse_closed_shell_hcnof():
    entries = builtin_molecule_set()
    names = [e.name for e in entries]
    assert len(names) == len(set(names)) and len(entries) >= 100
    held = [e for e in entries if e.held_out]
    assert 5 <= len(held) <= len(entries) // 5
    smiles = set()
    for entry in entries:
        mol = rdkit_molecule(entry)
        check_entry(entry, mol)  # raises on anything outside the set's rules
        assert {a.GetSymbol() for a in mol.GetAtoms()} <= set(SET_ELEMENTS)
        assert sum(a.GetAtomicNum() > 1 for a in mol.GetAtoms()) <= SET_MAX_HEAVY_ATOMS
        smiles.add(Chem.MolToSmiles(Chem.RemoveHs(mol)))
    assert len(smiles) == len(entries), "two entries are the same molecule"
    assert {"glycine", "uracil", "C5H5N", "CH3CH2OH"} <= set(names)
    assert not any(e.held_out for e in g2_molecule_set())


def test_list_file_round_trip_and_errors(tmp_path):
    entries = [MoleculeEntry("water", "g2:H2O"), MoleculeEntry("glycine", "NCC(=O)O", held_out=True)]
    path = tmp_path / "set.txt"
    write_molecule_list(entries, path)
    assert read_molecule_list(path) == entries
    for text, message in [
        ("water g2:H2O maybe\n", "line 1: the split must be"),
        ("# c\nwater g2:H2O\nwater O\n", "line 3: the name 'water' is already used on line 2"),
        ("water\n", "line 1: expected 'NAME SPEC"),
        ("# only comments\n", "lists no molecules"),
    ]:
        path.write_text(text)
        with pytest.raises(InputError, match=message):
            read_molecule_list(path)
    with pytest.raises(InputError, match="not a valid SMILES"):
        rdkit_molecule(MoleculeEntry("bad", "C1CC"))
    with pytest.raises(InputError, match="contains S"):
        check_entry(MoleculeEntry("dmso", "CS(C)=O"))
    with pytest.raises(InputError, match="odd number of electrons"):
        check_entry(MoleculeEntry("methyl", "[CH3]"))
    with pytest.raises(InputError, match="heavy atoms"):
        check_entry(MoleculeEntry("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"))


def test_conformers_are_distinct_force_field_minima():
    confs = conformers(MoleculeEntry("leucine", "CC(C)C[C@H](N)C(=O)O"), n=3)
    assert len(confs) == 3
    assert all(c.get_chemical_formula() == "C6H13NO2" for c in confs)
    heavy = [c.positions[c.numbers > 1] - c.positions[c.numbers > 1].mean(0) for c in confs]
    assert all(np.abs(heavy[0] - h).max() > 0.1 for h in heavy[1:])
    # A G2 entry keeps its own structure (relaxed by the force field), one conformer.
    (water,) = conformers(MoleculeEntry("water", "g2:H2O"), n=3)
    d = np.linalg.norm(water.positions[1:] - water.positions[0], axis=1)
    assert np.allclose(d, d[0], atol=1e-4) and 0.9 < d[0] < 1.0


@pytest.mark.parametrize("spec", ["g2:H2O", "g2:H2", "CO"])
def test_force_field_modes_are_real_and_sample_sensibly(spec):
    entry = MoleculeEntry("m", spec)
    (start,) = conformers(entry, n=1)
    modes = force_field_modes(rdkit_molecule(entry), start.positions)
    n = len(start)
    assert len(modes.wavenumbers) == (1 if n == 2 else 3 * n - 6)
    assert (modes.wavenumbers > 100).all(), modes.wavenumbers  # a minimum: no imaginary or zero modes
    if spec == "g2:H2O":  # MMFF94 water: bend near 1600, stretches near 3700-3800 cm^-1
        assert 1400 < modes.wavenumbers[0] < 1800 and (modes.wavenumbers[1:] > 3400).all()
    rng = np.random.default_rng(0)
    for _ in range(20):
        positions = thermal_sample(modes, 500.0, rng)
        d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)[np.triu_indices(n, 1)]
        assert d.min() > 0.5


def test_molecules_cli_lists_and_writes_the_set(tmp_path, capsys):
    from phisnet.cli import main

    out = tmp_path / "set.txt"
    assert main(["molecules", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    entries = builtin_molecule_set()
    assert f"{len(entries)} molecules, {sum(e.held_out for e in entries)} held out" in printed
    assert "glycine" in printed and "C2H5NO2" in printed
    assert read_molecule_list(out) == entries
    assert main(["generate", "--n", "1", "--out", str(tmp_path / "x.db")]) == 2
    assert "either one MOLECULE or --molecules" in capsys.readouterr().err
    assert main(["generate", "water", "--molecules", str(out), "--n", "1", "--out", str(tmp_path / "x.db")]) == 2


def test_same_molecule_tells_isomers_apart_and_survives_thermal_motion():
    from phisnet.io import read_molecules

    ethanol = paper_molecule("ethanol")
    assert bond_signature(ethanol) == (((6, 6), (6, 8)), ((6, 2), (6, 3), (8, 1)))
    assert same_molecule(ethanol, read_molecules("CCO", format="smiles")[0])
    assert not same_molecule(ethanol, read_molecules("COC", format="smiles")[0])  # dimethyl ether, same formula
    assert not same_molecule(paper_molecule("water"), ethanol)
    entry = MoleculeEntry("ethanol", "CCO")
    (start,) = conformers(entry, n=1)
    modes = force_field_modes(rdkit_molecule(entry), start.positions)
    rng = np.random.default_rng(0)
    for _ in range(20):
        hot = ase.Atoms(start.numbers, positions=thermal_sample(modes, 500.0, rng))
        assert same_molecule(ethanol, hot)
