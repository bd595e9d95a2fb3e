"""End-to-end energy and forces from a predicted Fock matrix (phisnet.observables, torch)."""

import numpy as np
import pytest
import torch

from phisnet.config import PhiSNetConfig
from phisnet.end_to_end import (
    end_to_end,
    energy_from_hamiltonian,
    geometry_integrals,
    occupied_density,
    stack_integrals,
)
from phisnet.errors import InputError
from phisnet.io import read_molecules
from phisnet.model import PhiSNet
from phisnet.predictor import load
from phisnet.reference import build_mol, make_mf
from phisnet.torchtools import default_dtype


def converged_hf(atoms):
    mf = make_mf(build_mol(atoms), "hf")
    mf.conv_tol = 1e-13
    mf.conv_tol_grad = 1e-10
    mf.kernel()
    return mf


@pytest.fixture(scope="module")
def water():
    (atoms,) = read_molecules("water")
    atoms.positions += np.random.default_rng(3).normal(scale=0.03, size=atoms.positions.shape)
    return atoms


def test_energy_of_the_converged_hf_fock_matrix_is_the_hf_energy(water):
    mf = converged_hf(water)
    ints = stack_integrals([geometry_integrals(water, derivatives=False)])
    F = torch.tensor(mf.get_fock())[None]
    E = energy_from_hamiltonian(F, ints["overlap"], ints["core_hamiltonian"], ints["nuclear_repulsion"], 10)
    assert float(E[0]) == pytest.approx(mf.e_tot, abs=1e-9)
    # and the density is PySCF's
    P = occupied_density(F, ints["overlap"], 10)[0].numpy()
    assert np.abs(P - mf.make_rdm1()).max() < 1e-7


def test_degenerate_occupied_orbitals_give_finite_gradients():
    # Methane's three highest occupied orbitals are degenerate: eigh's backward divides by zero there.
    (atoms,) = read_molecules("CH4")
    mf = converged_hf(atoms)
    ints = stack_integrals([geometry_integrals(atoms, derivatives=False)])
    F = torch.tensor(mf.get_fock())[None].requires_grad_(True)
    E = energy_from_hamiltonian(F, ints["overlap"], ints["core_hamiltonian"], ints["nuclear_repulsion"], 10)
    assert float(E[0].detach()) == pytest.approx(mf.e_tot, abs=1e-9)
    (g,) = torch.autograd.grad(E.sum(), F)
    assert torch.isfinite(g).all()
    # and correct: central differences along random symmetric directions
    rng = np.random.default_rng(0)

    def energy(F):
        return float(
            energy_from_hamiltonian(F, ints["overlap"], ints["core_hamiltonian"], ints["nuclear_repulsion"], 10)[0]
        )

    for _ in range(3):
        D = rng.normal(size=F.shape[1:])
        D = torch.tensor(D + D.T)[None]
        step = 1e-6
        fd = (energy(F.detach() + step * D) - energy(F.detach() - step * D)) / (2 * step)
        assert fd == pytest.approx(float((g * D).sum()), rel=1e-6)


def test_a_closed_shell_needs_a_gap():
    S = torch.eye(2, dtype=torch.float64)[None]
    with pytest.raises(InputError, match="HOMO-LUMO gap"):
        occupied_density(torch.zeros(1, 2, 2, dtype=torch.float64), S, 2)


def _model():
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        return PhiSNet(PhiSNetConfig(elements=[1, 8], channels=4, n_interactions=1, n_radial=8, radial_hidden=8))


def _energy(model, atoms):
    ints = stack_integrals([geometry_integrals(atoms, derivatives=False)])
    energy, _ = end_to_end(model, torch.tensor(atoms.positions)[None], torch.tensor(atoms.numbers), ints, forces=False)
    return float(energy[0].detach())


def finite_difference_forces(model, atoms, step=1e-4):
    forces = np.zeros_like(atoms.positions)
    for a in range(len(atoms)):
        for x in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[a, x] += sign * step
                energies.append(_energy(model, moved))
            forces[a, x] = -(energies[0] - energies[1]) / (2 * step)
    return forces


def _baseline_model(screening=()):
    """A float64 model with a one-electron baseline fitted to the HF Fock matrices of three water geometries."""
    (atoms,) = read_molecules("water")
    rng = np.random.default_rng(5)
    samples = []
    for _ in range(3):
        moved = atoms.copy()
        moved.positions += rng.normal(scale=0.05, size=moved.positions.shape)
        samples.append(
            {
                "positions": torch.tensor(moved.positions),
                "atomic_numbers": torch.tensor(moved.numbers),
                "hamiltonian": torch.tensor(converged_hf(moved).get_fock()),
                "overlap": torch.tensor(build_mol(moved).intor("int1e_ovlp")),
            }
        )
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        config = PhiSNetConfig(
            elements=[1, 8],
            channels=4,
            n_interactions=1,
            n_radial=8,
            radial_hidden=8,
            integral_baseline=True,
            baseline_screening=list(screening),
        )
        model = PhiSNet(config)
    model.fit_references(samples)
    return model


@pytest.mark.parametrize(
    "which", ["random float64 model", "pretrained water model", "model with a baseline", "screened baseline"]
)
def test_forces_are_minus_the_gradient_of_the_same_energy(water, which):
    if which == "random float64 model":
        model = _model()
    elif which == "model with a baseline":  # the baseline's integrals move with the atoms too
        model = _baseline_model()
    elif which == "screened baseline":  # and so do its screened attractions
        model = _baseline_model(screening=(0.5, 2.0))
    else:
        model = load("pretrained/water.pt", dtype=torch.float64).model
    ints = stack_integrals([geometry_integrals(water, screening=model.config.baseline_screening)])
    energy, forces = end_to_end(model, torch.tensor(water.positions)[None], torch.tensor(water.numbers), ints)
    assert float(energy[0].detach()) == pytest.approx(_energy(model, water), abs=1e-10)
    fd = finite_difference_forces(model, water)
    # Hartree/Angstrom; the bar is 1e-5 Hartree/Bohr = 1.9e-5 Hartree/Angstrom
    assert np.abs(forces[0].detach().numpy() - fd).max() < 2e-6
    assert np.abs(forces[0].detach().numpy().sum(0)).max() < 1e-6  # no net force: translation invariance


def test_forces_can_be_trained_on(water):
    # create_graph=True keeps the forces differentiable with respect to the parameters (force loss).
    model = _model()
    ints = stack_integrals([geometry_integrals(water)])
    _, forces = end_to_end(
        model, torch.tensor(water.positions)[None], torch.tensor(water.numbers), ints, create_graph=True
    )
    (forces**2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(g is not None and bool((g != 0).any()) for g in grads) > len(grads) // 2
    assert all(g is None or bool(torch.isfinite(g).all()) for g in grads)


def test_geometry_integrals_derivatives_match_finite_differences(water):
    ints = geometry_integrals(water)
    step = 1e-5
    for a, x in ((0, 2), (1, 0)):
        plus, minus = water.copy(), water.copy()
        plus.positions[a, x] += step
        minus.positions[a, x] -= step
        ip, im = geometry_integrals(plus, derivatives=False), geometry_integrals(minus, derivatives=False)
        assert np.abs((ip.overlap - im.overlap) / (2 * step) - ints.overlap_gradient[a, x]).max() < 1e-6
        dh = (ip.core_hamiltonian - im.core_hamiltonian) / (2 * step)
        assert np.abs(dh - ints.core_hamiltonian_gradient[a, x]).max() < 1e-5
        mp, mm = (build_mol(moved).intor("int1e_kin") for moved in (plus, minus))
        assert np.abs((mp - mm) / (2 * step) - ints.kinetic_gradient[a, x]).max() < 1e-5
        de = (ip.nuclear_repulsion - im.nuclear_repulsion) / (2 * step)
        assert de == pytest.approx(ints.nuclear_repulsion_gradient[a, x], abs=1e-6)
