"""phisnet.viz: orbital names, molden and cube files checked against PySCF."""

import numpy as np
import pytest
from pyscf import dft
from pyscf.tools import molden

from phisnet import InputError
from phisnet.io import read_molecules
from phisnet.observables import solve
from phisnet.reference import build_mol, make_mf
from phisnet.viz import cube_text, orbital_index, orbital_label, write_molden


@pytest.fixture(scope="module")
def water():
    mol = build_mol(read_molecules("water")[0])
    mf = make_mf(mol, "pbe")
    mf.kernel()
    return mol, solve(mf.get_fock(), mf.get_ovlp(), 10)


def test_orbital_names(water):
    _, orbitals = water
    assert [orbital_index(s, orbitals) for s in ("homo", "LUMO", "homo-1", "lumo+2", "1", " Homo - 2 ")] == [
        4,
        5,
        3,
        7,
        0,
        2,
    ]
    assert [orbital_label(k, orbitals) for k in (2, 4, 5, 7)] == ["HOMO-2", "HOMO", "LUMO", "LUMO+2"]
    with pytest.raises(InputError, match="homo, lumo, homo-N"):
        orbital_index("sigma", orbitals)
    with pytest.raises(InputError, match="orbitals 1 to 24"):
        orbital_index("lumo+40", orbitals)
    with pytest.raises(InputError, match="orbitals 1 to 24"):
        orbital_index("0", orbitals)


def test_molden_round_trip(water, tmp_path):
    mol, orbitals = water
    path = write_molden(tmp_path / "w.molden", mol, orbitals)
    _, energies, coefficients, occupations, _, _ = molden.load(str(path))
    np.testing.assert_allclose(energies, orbitals.energies, atol=1e-8)
    np.testing.assert_allclose(occupations, orbitals.occupations)
    # Molden stores coefficients for the same AOs up to PySCF's own normalisation conventions.
    np.testing.assert_allclose(np.abs(coefficients), np.abs(orbitals.coefficients), atol=1e-6)
    assert not list(tmp_path.glob(".*tmp"))


def parse_cube(text):
    lines = text.splitlines()
    n_atoms, *origin = lines[2].split()
    n_atoms, origin = int(n_atoms), np.array(origin[:3], dtype=float)
    axes = [lines[3 + k].split() for k in range(3)]
    counts = [int(a[0]) for a in axes]
    steps = np.array([a[1:4] for a in axes], dtype=float)
    values = np.array(" ".join(lines[6 + n_atoms :]).split(), dtype=float).reshape(counts)
    return origin, steps, values


def test_cubes_hold_pyscf_values(water):
    mol, orbitals = water
    rng = np.random.default_rng(0)
    for what in ("homo", "density", "difference"):
        ref_dm = 0.9 * orbitals.density_matrix if what == "difference" else None
        origin, steps, values = parse_cube(cube_text(mol, what, orbitals, reference_density=ref_dm, points=20))
        assert values.shape == (20, 20, 20)
        idx = rng.integers(0, 20, size=(30, 3))
        coords = origin + idx @ steps  # Bohr
        ao = dft.numint.eval_ao(mol, coords)
        if what == "homo":
            expected = ao @ orbitals.coefficients[:, 4]
        else:
            dm = orbitals.density_matrix - (ref_dm if ref_dm is not None else 0)
            expected = dft.numint.eval_rho(mol, ao, dm)
        np.testing.assert_allclose(values[tuple(idx.T)], expected, rtol=1e-4, atol=1e-8)
    with pytest.raises(InputError, match="needs a reference"):
        cube_text(mol, "difference", orbitals)


def test_force_arrows_share_one_scale():
    import re

    from phisnet.viz import FORCE_ARROW_ANGSTROM, view_html

    atoms = read_molecules("water")[0]
    small = np.zeros((3, 3))
    small[1] = [0.0, 0.0, 0.01]
    large = small * 4
    html = view_html(atoms, forces=[small, large], js="3Dmol.js")
    lengths = []
    for match in re.finditer(
        r'"start": \{"x": ([-\d.e]+), "y": ([-\d.e]+), "z": ([-\d.e]+)\}, '
        r'"end": \{"x": ([-\d.e]+), "y": ([-\d.e]+), "z": ([-\d.e]+)\}',
        html,
    ):
        v = np.array([float(g) for g in match.groups()])
        lengths.append(np.linalg.norm(v[3:] - v[:3]))
    assert len(lengths) == 6  # one arrow per atom and panel
    assert max(lengths) == pytest.approx(FORCE_ARROW_ANGSTROM)
    assert sorted(lengths)[-2] == pytest.approx(FORCE_ARROW_ANGSTROM / 4)  # the smaller panel, same scale


def test_per_molecule_figure_ranks_molecules_by_error():
    from phisnet.viz import per_molecule_figure

    by_molecule = {
        "anisole": {"H_MAE_uHa": 300.0, "n_structures": 2},
        "pyrazole": {"H_MAE_uHa": 90.0, "n_structures": 2},
    }
    bar = per_molecule_figure(by_molecule).data[0]
    assert list(bar.x) == ["pyrazole", "anisole"] and list(bar.y) == [90.0, 300.0]


def test_learning_curve_takes_a_validation_without_a_training_step():
    """A line of train.py --max-steps 0 (after an overlap fit) has no training loss; the curve skips it there."""
    from phisnet.viz import learning_curve_figure

    metrics = [
        {"step": 100, "train_loss": 0.01, "val_H_MAE_uHa": 120.0},
        {"step": 200, "train_loss": 0.008, "val_H_MAE_uHa": 110.0},
        {"step": 200, "val_H_MAE_uHa": 110.0, "val_S_MAE_1e-6": 4.6},
    ]
    fig = learning_curve_figure(metrics)
    assert list(fig.data[0].y) == [120.0, 110.0, 110.0]
    assert list(fig.data[1].x) == [100, 200] and list(fig.data[1].y) == [0.01, 0.008]


def test_learning_curve_labels_decades_only_over_a_wide_range():
    """Over more than a decade a log axis gets one label per power of ten (the 2s and 5s between overlapped)."""
    from phisnet.viz import learning_curve_figure

    wide = [{"step": s, "train_loss": 10.0**-s, "val_H_MAE_uHa": 10.0 ** (4 - s)} for s in (1, 2, 3)]
    fig = learning_curve_figure(wide)
    assert fig.layout.yaxis.dtick == 1 and fig.layout.yaxis2.dtick == 1
    narrow = [{"step": s, "train_loss": 0.01 + s * 1e-3, "val_H_MAE_uHa": 50.0 - s} for s in (1, 2, 3)]
    fig = learning_curve_figure(narrow)
    assert fig.layout.yaxis.dtick is None and fig.layout.yaxis2.dtick is None


def test_a_planar_molecule_is_turned_to_face_the_camera():
    from scipy.spatial.transform import Rotation

    from phisnet.molecules import paper_molecule
    from phisnet.viz import face_on

    water = paper_molecule("water")  # in the y-z plane: 3Dmol, looking down z, would see it edge-on
    angle, axis = face_on(water.positions)
    turn = Rotation.from_rotvec(np.radians(angle) * np.array([axis["x"], axis["y"], axis["z"]]))
    turned = turn.apply(water.positions - water.positions.mean(axis=0))
    assert np.abs(turned[:, 2]).max() < 1e-9  # every atom in the camera's x-y plane
    assert face_on(water.positions[:2])[0] == 0.0  # two atoms: nothing to face
