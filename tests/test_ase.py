"""phisnet.ase: the ASE calculator on the shipped water models, against finite differences and PySCF."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import units
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from phisnet.ase import PhiSNetCalculator
from phisnet.errors import InputError
from phisnet.molecules import paper_molecule
from phisnet.predictor import load

ROOT = Path(__file__).resolve().parents[1]


def distorted_water(shift=(0.05, 0.03, 0.0)):
    atoms = paper_molecule("water")
    atoms.positions[1] += shift
    return atoms


@pytest.fixture(scope="module")
def ccsdt64():
    """The CCSD(T) water model in float64: float32 rounding of F would swamp a finite difference."""
    return load(ROOT / "pretrained" / "water-ccsdt.pt", dtype=torch.float64)


def test_end_to_end_forces_are_the_energys_derivative(ccsdt64):
    atoms = distorted_water()
    calc = PhiSNetCalculator(ccsdt64)
    assert calc.route == "end-to-end"
    atoms.calc = calc
    forces = atoms.get_forces()
    step, numeric = 1e-4, np.zeros_like(forces)
    for i in range(len(atoms)):
        for x in range(3):
            moved = atoms.copy()
            moved.calc = calc
            moved.positions[i, x] += step
            plus = moved.get_potential_energy()
            moved.positions[i, x] -= 2 * step
            numeric[i, x] = -(plus - moved.get_potential_energy()) / (2 * step)
    assert np.abs(forces).max() > 0.5  # a distorted molecule: the comparison is not of zeros
    np.testing.assert_allclose(forces, numeric, atol=1e-5)


def test_bfgs_relaxes_a_distorted_water_with_the_ccsdt_model():
    atoms = distorted_water((0.15, 0.05, 0.0))
    atoms.calc = PhiSNetCalculator(ROOT / "pretrained" / "water-ccsdt.pt")
    assert np.abs(atoms.get_forces()).max() > 1.0
    assert BFGS(atoms, logfile=None).run(fmax=0.05, steps=40)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.05
    # PySCF's CCSD(T)/def2-SVP minimum (benchmarks/ase_relax.py): O-H 0.9621 A, H-O-H 102.70 deg
    for h in (1, 2):
        assert abs(atoms.get_distance(0, h) - 0.9621) < 0.01
    assert abs(atoms.get_angle(1, 0, 2) - 102.70) < 1.0


def test_velocity_verlet_conserves_the_end_to_end_energy(ccsdt64):
    atoms = distorted_water()
    atoms.calc = PhiSNetCalculator(ccsdt64)
    atoms.set_momenta(np.random.default_rng(0).normal(size=(3, 3)) * 0.5)  # a few hundred K
    dynamics = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    totals = []
    for _ in range(30):
        dynamics.run(1)
        totals.append(atoms.get_total_energy())
    assert atoms.get_kinetic_energy() > 0.02
    assert max(totals) - min(totals) < 1e-3  # eV, against a potential energy that moves by tenths


def test_variational_route_matches_pyscf_forces_and_dipole():
    from phisnet.reference import run_dft

    atoms = distorted_water()
    calc = PhiSNetCalculator(ROOT / "pretrained" / "water.pt")
    assert calc.route == "variational"
    atoms.calc = calc
    ref = run_dft(atoms, xc="pbe", basis="def2-svp", forces=True)
    assert abs(atoms.get_potential_energy() - ref.energy * units.Hartree) < 5e-3  # eV
    np.testing.assert_allclose(atoms.get_forces(), ref.forces * units.Hartree, atol=0.02)
    assert calc.wavefunction is not None and calc.wavefunction.orbitals.n_occupied == 5
    assert np.linalg.norm(atoms.get_dipole_moment()) / units.Debye == pytest.approx(
        np.linalg.norm(calc.wavefunction.dipole()), rel=1e-9
    )


def test_a_molecule_the_model_does_not_know_is_refused():
    import ase

    atoms = ase.Atoms("OH2", positions=[(0, 0, 0), (0.96, 0, 0), (-0.24, 0.93, 0)])
    atoms.calc = PhiSNetCalculator(ROOT / "pretrained" / "ethanol.pt")
    with pytest.raises(InputError, match="is not ethanol"):
        atoms.get_potential_energy()
    assert PhiSNetCalculator(ROOT / "pretrained" / "water-hf.pt").route == "variational"  # trained on matrices
    with pytest.raises(InputError, match="route must be"):
        PhiSNetCalculator(ROOT / "pretrained" / "water.pt", route="exact")
