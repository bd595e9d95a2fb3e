"""phisnet.io: every way in, and a clear InputError for every bad input."""

import numpy as np
import pytest
from ase.io import write

from phisnet import InputError
from phisnet.io import read_molecules

WATER_XYZ = """3
water
O 0.000 0.000 0.119
H 0.000 0.763 -0.477
H 0.000 -0.763 -0.477
"""


@pytest.mark.parametrize(
    "name, formula",
    [("water", "H2O"), ("Ethanol", "C2H6O"), ("malondialdehyde", "C3H4O2"), ("uracil", "C4H4N2O2"), ("CH4", "CH4")],
)
def test_named_molecules(name, formula):
    (atoms,) = read_molecules(name)
    assert atoms.get_chemical_formula() == formula
    assert atoms.info["charge"] == 0 and atoms.info["spin"] == 0


def test_xyz_text_bytes_and_path_agree(tmp_path):
    path = tmp_path / "w.xyz"
    path.write_text(WATER_XYZ)
    for source in (WATER_XYZ, WATER_XYZ.encode(), path, str(path)):
        (atoms,) = read_molecules(source)
        assert atoms.get_chemical_symbols() == ["O", "H", "H"]
        np.testing.assert_allclose(atoms.positions[1], [0.0, 0.763, -0.477])


def test_multi_frame_and_extended_xyz():
    text = WATER_XYZ + WATER_XYZ.replace("0.119", "0.120")
    frames = read_molecules(text)
    assert len(frames) == 2 and frames[1].positions[0, 2] == pytest.approx(0.120)
    ext = '3\nProperties=species:S:1:pos:R:3 charge=1 spin=1 pbc="F F F"\n' + "\n".join(WATER_XYZ.splitlines()[2:])
    (atoms,) = read_molecules(ext, spin=1)
    assert atoms.info["charge"] == 1 and len(atoms) == 3


@pytest.mark.parametrize("fmt, suffix", [("proteindatabank", ".pdb"), ("sdf", ".sdf"), ("cif", ".cif")])
def test_other_ase_formats(tmp_path, fmt, suffix):
    (water,) = read_molecules("water")
    path = tmp_path / f"w{suffix}"
    if fmt == "cif":
        water = water.copy()
        water.cell = [10, 10, 10]
        water.pbc = True
        water.center()
    if fmt == "sdf":
        # ASE writes no SDF; this is the V2000 block RDKit writes for water.
        path.write_text(
            "\n     RDKit          3D\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\n"
            "    0.0000    0.0000    0.1193 O   0  0  0  0  0  0  0  0  0  0  0  0\n"
            "    0.0000    0.7632   -0.4770 H   0  0  0  0  0  0  0  0  0  0  0  0\n"
            "    0.0000   -0.7632   -0.4770 H   0  0  0  0  0  0  0  0  0  0  0  0\n"
            "  1  2  1  0\n  1  3  1  0\nM  END\n$$$$\n"
        )
    else:
        write(path, water, format=fmt)
    for source in (path, path.read_bytes()):
        (atoms,) = read_molecules(source, format=None if isinstance(source, type(path)) else fmt)
        assert sorted(atoms.get_chemical_symbols()) == ["H", "H", "O"]
        assert not atoms.pbc.any()


def test_smiles():
    (atoms,) = read_molecules("CCO")
    assert atoms.get_chemical_formula() == "C2H6O"
    d = atoms.get_all_distances()
    assert d[np.triu_indices(len(atoms), 1)].min() > 0.9  # relaxed, hydrogens in place
    (methanol,) = read_molecules("CO", format="smiles")
    assert methanol.get_chemical_formula() == "CH4O"
    (acetate,) = read_molecules("CC(=O)[O-]")
    assert acetate.info["charge"] == -1


@pytest.mark.parametrize(
    "source, kwargs, message",
    [
        ("", {}, "empty"),
        ("   \n  ", {}, "empty"),
        (b"", {}, "empty"),
        ("3\nc\nO 0 0 0\nH 0 0 1 \nH 0 1\n", {}, "Line 5"),
        ("3\nc\nO 0 0 0\nH 0 0 x\nH 0 1 0\n", {}, "Line 4: 'x' is not a number"),
        ("three\nc\nO 0 0 0\n", {"format": "xyz"}, "Line 1: expected the number of atoms"),
        ("3\nc\nO 0 0 0\nH 0 0 1\n", {}, "ends after 2 atom lines"),
        ("3\nc\nO 0 0 0\nQq 0 0 1\nH 0 1 0\n", {}, "Line 4: 'Qq' is not a chemical element"),
        ("2\nc\nO 0 0 0\nU 0 0 2.0\n", {}, "Atom 2 is U, an element the basis set def2-svp does not cover"),
        ("3\nc\nO 0 0 0\nH 0 0 nan\nH 0 1 0\n", {}, "Line 4: coordinate 'nan' is not a finite"),
        ("3\nc\nO 0 0 0\nH 0 0 inf\nH 0 1 0\n", {}, "Line 4: coordinate 'inf' is not a finite"),
        ("3\nc\nO 0 0 0\nH 0 0 0.3\nH 0 1 0\n", {}, "Atoms 1 (O) and 2 (H) are only 0.300 Angstrom apart"),
        ("2\nc\nO 0 0 0\nH 0 0 1\n", {}, "9 electrons, an odd number"),
        ("water", {"max_atoms": 2}, "3 atoms, more than the limit of 2"),
        ("C1CC(", {}, "is not a valid SMILES"),
        ("water", {"format": "smiles"}, "is not a valid SMILES"),
        ("hello world\nfoo bar\n", {}, "Cannot tell the format"),
        (b"\xff\xfe\x00bad", {}, "not UTF-8"),
    ],
)
def test_bad_input_is_one_clear_sentence(source, kwargs, message):
    with pytest.raises(InputError) as info:
        read_molecules(source, **kwargs)
    assert message in str(info.value)


def test_odd_electrons_allowed_with_charge_or_spin():
    text = "2\nc\nO 0 0 0\nH 0 0 1\n"
    assert read_molecules(text, charge=-1)[0].info["charge"] == -1
    assert read_molecules(text, spin=1)[0].info["spin"] == 1


def test_default_atom_limit_is_60():
    with pytest.raises(InputError, match="62 atoms, more than the limit of 60"):
        read_molecules("C" * 20)  # icosane, C20H42
    (icosane,) = read_molecules("C" * 20, max_atoms=100)
    assert len(icosane) == 62


def test_multi_frame_error_names_the_frame():
    bad = WATER_XYZ + "3\nc\nO 0 0 0\nH 0 0 0.1\nH 0 1 0\n"
    with pytest.raises(InputError, match="Frame 2: Atoms 1 \\(O\\) and 2 \\(H\\)"):
        read_molecules(bad)


def test_missing_file():
    with pytest.raises(InputError, match="not a valid SMILES"):
        read_molecules("no_such_file.xyz")


SDF_HYDROXIDE = """hydroxide
  hand-written

  2  1  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0
    0.9700    0.0000    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
M  CHG  1   1  -1
M  END
$$$$
"""


def test_an_sdf_charge_is_read_from_m_chg_or_the_atom_block():
    (atoms,) = read_molecules(SDF_HYDROXIDE, format="sdf")
    assert atoms.info["charge"] == -1 and atoms.get_chemical_formula() == "HO"
    lines = SDF_HYDROXIDE.replace("M  CHG  1   1  -1\n", "").splitlines(keepends=True)
    lines[4] = lines[4][:36] + "  5" + lines[4][39:]  # the old atom-block code 5: a charge of -1 on O
    assert read_molecules("".join(lines), format="sdf")[0].info["charge"] == -1
    with pytest.raises(InputError, match="odd number"):  # no charge anywhere: OH has 9 electrons
        read_molecules(SDF_HYDROXIDE.replace("M  CHG  1   1  -1\n", ""), format="sdf")
    assert read_molecules(SDF_HYDROXIDE, format="sdf", charge=1, spin=2)[0].info["charge"] == 1  # given wins


def test_a_smiles_of_several_molecules_is_refused_for_what_it_is():
    with pytest.raises(InputError, match="2 separate molecules"):
        read_molecules("O.O", format="smiles")
