"""phisnet.md: GFN2-xTB Langevin sampling: its temperature, its determinism, the rotamers it reaches."""

import ase
import ase.db
import numpy as np
import pytest

from phisnet import InputError
from phisnet.cli import main as cli_main
from phisnet.data import GenerationSettings, generate
from phisnet.io import read_molecules
from phisnet.md import MDSampler, MDSettings, run_block, start_conformers


def hocc_torsion(symbols, positions) -> float:
    """Ethanol's H-O-C-C dihedral in degrees, 0-360 (180: anti; about 60 or 300: gauche)."""
    atoms = ase.Atoms(symbols, positions=positions)
    distances = atoms.get_all_distances()
    o = symbols.index("O")
    hydrogens = [i for i, s in enumerate(symbols) if s == "H"]
    carbons = [i for i, s in enumerate(symbols) if s == "C"]
    h = min(hydrogens, key=lambda i: distances[o, i])  # nearest neighbours: bonds stretch at 500 K
    c1 = min(carbons, key=lambda i: distances[o, i])
    c2 = next(i for i in carbons if i != c1)
    return atoms.get_dihedral(h, o, c1, c2)


def is_anti(torsion: float) -> bool:
    return 120 <= torsion <= 240


def test_mean_kinetic_temperature_is_the_target():
    ethanol = read_molecules("ethanol")[0]
    # A stronger friction than the default decorrelates the snapshots faster; the distribution is the same.
    settings = MDSettings(friction_per_fs=0.05, spacing_fs=20, equilibration_fs=500, block=100)
    block = run_block(ethanol.get_chemical_symbols(), ethanol.positions, settings, 500.0, seed=0, block=0)
    assert block.temperatures.mean() == pytest.approx(500.0, rel=0.15)
    assert block.temperatures.std() > 50  # a thermostat, not a velocity rescaling to exactly 500 K
    masses = ethanol.get_masses()
    np.testing.assert_allclose(masses @ block.positions / masses.sum(), 0, atol=1e-10)  # centred snapshots


def test_ethanol_rotamers_are_starting_points():
    ethanol = read_molecules("ethanol")[0]
    starts = start_conformers(ethanol, 3)
    torsions = sorted(hocc_torsion(ethanol.get_chemical_symbols(), p) for p in starts)
    np.testing.assert_allclose(starts[0], ethanol.positions)  # the given structure first, atom order kept
    assert len(starts) == 3
    assert torsions[0] < 120 and is_anti(torsions[1]) and torsions[2] > 240  # gauche+, anti, gauche-


def test_malondialdehyde_starts_only_from_its_hydrogen_bonded_form():
    # Its open rotamers lie 9 kcal/mol and more above (GFN2-xTB): not visited at 500 K.
    mda = read_molecules("malondialdehyde")[0]
    starts = start_conformers(mda, 3)
    assert len(starts) == 1
    o1, o2 = [i for i, s in enumerate(mda.get_chemical_symbols()) if s == "O"]
    assert np.linalg.norm(starts[0][o1] - starts[0][o2]) < 2.9


@pytest.mark.slow
def test_ethanol_dynamics_crosses_between_gauche_and_anti():
    """Trajectories from the anti structure alone, default settings: the OH rotor turns at 500 K, both ways.

    GFN2-xTB puts gauche about 1.2 kcal/mol below anti, so anti holds about 13 % of the snapshots; 60 snapshots
    (three trajectories, 45 s) visit both regions."""
    ethanol = read_molecules("ethanol")[0]
    symbols = ethanol.get_chemical_symbols()
    sampler = MDSampler(symbols, [ethanol.positions], MDSettings(), 500.0, seed=0)
    anti = [is_anti(hocc_torsion(symbols, sampler.snapshot(i)[0])) for i in range(60)]
    assert 0 < sum(anti) < 60
    block = MDSettings().block
    gauche_to_anti = [i for i in range(59) if i // block == (i + 1) // block and not anti[i] and anti[i + 1]]
    assert gauche_to_anti  # within one trajectory, not only across the start of the next


def test_a_resumed_md_dataset_equals_an_uninterrupted_one(tmp_path):
    """A run stopped in the middle of a trajectory block and resumed recomputes that block identically."""
    options = dict(xc="hf", basis="sto-3g", sampler="md", md=MDSettings(block=4, spacing_fs=20, equilibration_fs=100))
    quiet = dict(progress=False, log=lambda m: None)
    whole, parts = tmp_path / "whole.db", tmp_path / "parts.db"
    generate("water", 6, whole, **options, **quiet)
    generate("water", 3, parts, **options, **quiet)  # stops inside block 0 (snapshots 0-3)
    generate("water", 6, parts, **options, **quiet)
    a = {r.sample_index: r for r in ase.db.connect(whole).select()}
    b = {r.sample_index: r for r in ase.db.connect(parts).select()}
    assert sorted(a) == sorted(b) == list(range(6))
    for i in a:
        np.testing.assert_array_equal(a[i].positions, b[i].positions)
        np.testing.assert_allclose(a[i].data["hamiltonian"], b[i].data["hamiltonian"], atol=1e-8)
        assert a[i].kinetic_temperature_K == b[i].kinetic_temperature_K > 0
    assert len({a[i].positions.tobytes() for i in a}) == 6
    metadata = ase.db.connect(whole).metadata
    assert metadata["settings"]["sampler"] == "md" and metadata["settings"]["md"]["block"] == 4
    assert metadata["sampling"]["engine"] == "GFN2-xTB" and metadata["sampling"]["timestep_fs"] == 0.5
    assert len(metadata["md_conformers"]) == metadata["sampling"]["n_conformers"] == 1
    with pytest.raises(InputError, match="sampler, md differ|md differ"):
        generate("water", 7, whole, xc="hf", basis="sto-3g", sampler="md", md=MDSettings(block=5), **quiet)


def test_normal_mode_settings_are_stored_as_before():
    """Datasets made before the MD sampler resume: their stored settings have no sampler keys."""
    settings = GenerationSettings(molecule="water", symbols=("O", "H", "H")).to_json()
    assert "sampler" not in settings and "md" not in settings
    md = GenerationSettings(molecule="water", symbols=("O", "H", "H"), sampler="md").to_json()
    assert md["sampler"] == "md" and md["md"]["spacing_fs"] == 100.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(spacing_fs=0.1), "shorter than the time step"),
        (dict(friction_per_fs=0), "friction per fs must be positive"),
        (dict(block=0), "at least 1"),
        (dict(engine="GFN1"), "GFN2-xTB"),
    ],
)
def test_bad_md_settings_are_refused(options, message):
    with pytest.raises(InputError, match=message):
        MDSettings(**options)


def test_cli_md_options(tmp_path, capsys):
    assert cli_main(["generate", "--molecules", "builtin", "--sampler", "md", "--n", "1", "--out", "x.db"]) == 2
    assert "--sampler md samples one MOLECULE" in capsys.readouterr().err
    assert cli_main(["generate", "water", "--sampler", "md", "--md-spacing", "0", "--n", "1", "--out", "x.db"]) == 2
    assert "spacing" in capsys.readouterr().err
    out = str(tmp_path / "x.db")
    assert cli_main(["generate", "water", "--md-block", "10", "--n", "1", "--out", out]) == 2  # no --sampler md
    assert "--md-block set the MD sampler" in capsys.readouterr().err
    assert cli_main(["generate", "water", "--conformers", "2", "--n", "1", "--out", out]) == 2
    assert "--conformers set the MD sampler" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()
