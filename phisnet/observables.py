"""From H and S to chemistry: orbitals, density matrix, charges, dipole, energy and forces.

``solve`` is pure linear algebra. The rest evaluates PySCF's own integrals and energy
functional at a density matrix: Mulliken charges, the dipole moment, and the total
energy and forces of the density built from predicted orbitals.

The approximation behind ``energy_and_forces`` on a predicted wavefunction: the
predicted Hamiltonian Hp and the exact overlap S give orbitals Cp (Hp Cp = S Cp ep);
their density Pp = 2 Cp_occ Cp_occ^T is put into the Kohn-Sham (or Hartree-Fock)
energy functional of the model's level of theory, E[Pp] (PySCF ``energy_tot``), with
no SCF iteration. Because the functional is stationary at the SCF solution, the energy
error is second order in the density error. The forces are PySCF's analytic SCF
gradient evaluated with Cp, ep and Pp (Hellmann-Feynman, Pulay and XC-grid terms): the
gradient of a *converged* calculation, exact when Pp is self-consistent, with an error
first order in the density error otherwise (it is not the derivative of E[Pp]).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from phisnet.errors import InputError

#: Overlap eigenvalues below this are treated as linear dependencies (canonical orthogonalisation).
LINDEP_THRESHOLD = 1e-8


@dataclass
class Orbitals:
    """Solution of the generalized eigenproblem H C = S C diag(eps), closed shell.

    Attributes
    ----------
    energies : (n_mo,) orbital energies, Hartree, ascending.
    coefficients : (nao, n_mo) MO coefficients, columns are orbitals, C^T S C = 1.
    occupations : (n_mo,) 2 for occupied orbitals, 0 otherwise.
    density_matrix : (nao, nao) closed-shell density matrix 2 C_occ C_occ^T (PySCF's dm).
    homo, lumo : energies of the highest occupied and lowest unoccupied orbital (lumo NaN if none).
    gap : lumo - homo, Hartree.
    """

    energies: np.ndarray
    coefficients: np.ndarray
    occupations: np.ndarray
    density_matrix: np.ndarray
    homo: float
    lumo: float
    gap: float

    @property
    def n_occupied(self) -> int:
        return int(np.count_nonzero(self.occupations))


def solve(H: np.ndarray, S: np.ndarray, n_electrons: int, subspace: float = 0.0) -> Orbitals:
    """Orbitals of a closed-shell molecule from its Hamiltonian and overlap.

    Parameters
    ----------
    H, S : arrays of shape (nao, nao), Hartree and dimensionless, symmetric.
    n_electrons : even number of electrons.
    subspace : solve only within the span of S's eigenvectors with eigenvalues above this
        (canonical orthogonalisation; 0 solves the full problem). A predicted H's error along
        S's near-null combinations of basis functions is amplified about 1/eigenvalue in the
        orbitals; a model can carry a threshold chosen on its validation data
        (``choose_subspace``, metadata ``subspace``). There are then fewer orbitals than
        basis functions.

    When S has eigenvalues below ``LINDEP_THRESHOLD`` (near linear dependence, possible
    with a predicted S), the problem is solved in the canonically orthogonalised basis
    and a warning says how many functions were dropped.
    """
    if n_electrons % 2:
        raise ValueError(f"closed-shell orbitals need an even electron count, got {n_electrons}")
    if not subspace >= 0:
        raise ValueError(f"subspace must be a threshold of at least 0, got {subspace}")
    H = 0.5 * (np.asarray(H, dtype=float) + np.asarray(H, dtype=float).T)
    S = 0.5 * (np.asarray(S, dtype=float) + np.asarray(S, dtype=float).T)
    s, U = np.linalg.eigh(S)
    keep = s > max(LINDEP_THRESHOLD, subspace)
    if keep.all():
        energies, C = scipy.linalg.eigh(H, S)
    else:
        singular = int((s <= LINDEP_THRESHOLD).sum())
        if singular:
            warnings.warn(
                f"The overlap matrix is near-singular: {singular} of {len(s)} functions dropped "
                "by canonical orthogonalisation.",
                stacklevel=2,
            )
        X = U[:, keep] / np.sqrt(s[keep])
        energies, V = np.linalg.eigh(X.T @ H @ X)
        C = X @ V
    n_occ = n_electrons // 2
    if n_occ > len(energies):
        raise ValueError(f"{n_electrons} electrons do not fit into {len(energies)} orbitals")
    occupations = np.zeros(len(energies))
    occupations[:n_occ] = 2.0
    C_occ = C[:, :n_occ]
    homo = float(energies[n_occ - 1]) if n_occ else float("nan")
    lumo = float(energies[n_occ]) if n_occ < len(energies) else float("nan")
    return Orbitals(
        energies=energies,
        coefficients=C,
        occupations=occupations,
        density_matrix=2.0 * C_occ @ C_occ.T,
        homo=homo,
        lumo=lumo,
        gap=lumo - homo,
    )


def align_orbital_signs(orbitals: Orbitals, reference: Orbitals, S: np.ndarray) -> Orbitals:
    """``orbitals`` with each column's sign flipped where it points against the same reference orbital.

    An orbital's overall sign is arbitrary; matching it (by the sign of c^T S c_ref) makes
    pictures and coefficient comparisons meaningful. Energies and density are unchanged.
    """
    n = min(orbitals.coefficients.shape[1], reference.coefficients.shape[1])
    overlap = np.einsum("ik,ij,jk->k", orbitals.coefficients[:, :n], S, reference.coefficients[:, :n])
    signs = np.ones(orbitals.coefficients.shape[1])
    signs[:n] = np.where(overlap < 0, -1.0, 1.0)
    return dataclasses.replace(orbitals, coefficients=orbitals.coefficients * signs)


@dataclass
class PredictedWavefunction:
    """What follows from one prediction: orbitals of the predicted H with the exact S.

    Attributes
    ----------
    atoms : the molecule (Angstrom).
    mol : the PySCF molecule (basis and charge of the model), for integrals and exports.
    hamiltonian, overlap : predicted H and S (Hartree, PySCF order).
    exact_overlap : PySCF's S of the geometry, used for the orbitals (cheap and exact).
    orbitals : solution of H C = S_exact C e (within ``subspace``).
    subspace : the overlap-eigenvalue threshold the orbitals were solved above (the model's; 0: all).
    predict_seconds : time of the network alone; ``solve_seconds`` of the eigenproblem.
    xc, basis : the model's level of theory.
    """

    atoms: object
    mol: object
    hamiltonian: np.ndarray
    overlap: np.ndarray
    exact_overlap: np.ndarray
    orbitals: Orbitals
    predict_seconds: float
    solve_seconds: float
    xc: str
    basis: str
    subspace: float = 0.0

    @property
    def seconds(self) -> float:
        """Prediction plus eigenproblem: the time to a usable wavefunction."""
        return self.predict_seconds + self.solve_seconds

    def dipole(self) -> np.ndarray:
        """Dipole moment of the predicted density, Debye."""
        return dipole_moment(self.mol, self.orbitals.density_matrix)

    def charges(self) -> np.ndarray:
        """Mulliken charges of the predicted density, elementary charges."""
        return mulliken_charges(self.mol, self.orbitals.density_matrix)


def predict_wavefunction(
    predictor, atoms, charge: int = 0, subspace: float | None = None, prediction=None
) -> PredictedWavefunction:
    """Predict H and S for ``atoms`` and solve for the orbitals (closed shell).

    ``prediction``: the ``Prediction`` of ``atoms`` when it is already made (``Predictor.predict_many``).

    The orbitals come from the predicted H and the exact S, within the model's ``subspace``
    (``Predictor.subspace``, chosen on its validation data) unless another is given.

    Raises InputError for an element the model does not know or an odd electron count
    (the models are trained on closed-shell molecules).
    """
    from phisnet.reference import build_mol

    predictor.check(atoms)
    basis = predictor.info.basis
    n_electrons = int(atoms.numbers.sum()) - charge
    if n_electrons % 2:
        raise InputError(
            f"{atoms.get_chemical_formula()} with charge {charge} has {n_electrons} electrons; the models predict "
            "closed-shell molecules only (an even electron count)."
        )
    mol = build_mol(atoms, basis=basis, charge=charge)
    if prediction is None:
        prediction = predictor.predict(atoms)
    t0 = time.perf_counter()
    S = mol.intor("int1e_ovlp")
    subspace = predictor.subspace if subspace is None else float(subspace)
    orbitals = solve(prediction.hamiltonian, S, n_electrons, subspace=subspace)
    return PredictedWavefunction(
        atoms=atoms,
        mol=mol,
        hamiltonian=prediction.hamiltonian,
        overlap=prediction.overlap,
        exact_overlap=S,
        orbitals=orbitals,
        predict_seconds=prediction.seconds,
        solve_seconds=time.perf_counter() - t0,
        xc=predictor.info.xc,
        basis=basis,
        subspace=subspace,
    )


def mulliken_charges(mol, density_matrix: np.ndarray) -> np.ndarray:
    """Mulliken atomic charges (elementary charges) of a density matrix, by PySCF."""
    from pyscf import scf

    _, charges = scf.hf.mulliken_pop(mol, density_matrix, s=mol.intor("int1e_ovlp"), verbose=0)
    return np.asarray(charges)


def dipole_moment(mol, density_matrix: np.ndarray) -> np.ndarray:
    """Dipole moment vector (Debye) of a density matrix and the nuclei, by PySCF."""
    from pyscf import scf

    return np.asarray(scf.hf.dip_moment(mol, density_matrix, unit="Debye", verbose=0))


def energy_and_forces(mol, orbitals: Orbitals, xc: str, forces: bool = True) -> tuple[float, np.ndarray | None]:
    """Total energy (Hartree) and forces (Hartree/Angstrom) of the density of ``orbitals``.

    The energy is PySCF's energy functional of level ``xc`` at the density matrix, with no
    SCF iteration; the forces are PySCF's analytic SCF gradient with these orbitals (see
    the module docstring for what that approximates). ``forces=False`` skips them (None).
    """
    from phisnet.reference import BOHR, make_mf

    mf = make_mf(mol, xc)
    mf.verbose = 0
    energy = float(mf.energy_tot(dm=orbitals.density_matrix))
    if not forces:
        return energy, None
    gradient = mf.nuc_grad_method().kernel(
        mo_energy=orbitals.energies, mo_coeff=orbitals.coefficients, mo_occ=orbitals.occupations
    )
    return energy, -np.asarray(gradient) / BOHR


# ----------------------------------------------------------------------------- end to end, in torch
#
# The energy of a predicted Fock matrix F as a differentiable function, for training and for
# forces (the paper's end-to-end energies). With the exact overlap S and core Hamiltonian h of
# the geometry, the closed-shell density P of the lowest n_electrons / 2 orbitals of (F, S)
# gives E = 1/2 Tr[P (h + F)] + E_nuc: exactly the Hartree-Fock energy when F is the converged
# HF Fock matrix. For a Kohn-Sham F it is the same expression (a model's own energy), not the
# Kohn-Sham energy functional.


@dataclass
class GeometryIntegrals:
    """Exact one-electron quantities of a geometry and their nuclear derivatives (numpy).

    Attributes
    ----------
    overlap, core_hamiltonian : (nao, nao) S and h = T + V_nuc (+ ECP), Hartree.
    nuclear_repulsion : E_nuc, Hartree.
    overlap_gradient, core_hamiltonian_gradient, kinetic_gradient : (n_atoms, 3, nao, nao) dS/dR, dh/dR and
        dT/dR (T the kinetic part of h), per Angstrom (None when derivatives were not asked for).
    nuclear_repulsion_gradient : (n_atoms, 3) dE_nuc/dR, Hartree/Angstrom.
    n_electrons : electron count (charge applied).
    screened_gradient : (n_zeta, n_atoms, 3, nao, nao) dW_zeta/dR of a baseline's screened attractions, per
        Angstrom (``phisnet.baseline.screened_attraction_gradient``; None when no screening was asked for).
    """

    overlap: np.ndarray
    core_hamiltonian: np.ndarray
    nuclear_repulsion: float
    n_electrons: int
    overlap_gradient: np.ndarray | None = None
    core_hamiltonian_gradient: np.ndarray | None = None
    nuclear_repulsion_gradient: np.ndarray | None = None
    kinetic_gradient: np.ndarray | None = None
    screened_gradient: np.ndarray | None = None


def geometry_integrals(
    atoms, basis: str = "def2-svp", charge: int = 0, derivatives: bool = True, screening=()
) -> GeometryIntegrals:
    """S, h and E_nuc of ``atoms`` from PySCF, with their derivatives for forces.

    The derivatives come from PySCF's own gradient machinery (``int1e_ipovlp``, the RHF
    gradient's ``hcore_generator`` and ``grad_nuc``), converted from Bohr to Angstrom. With
    ``screening`` (a baseline's exponents), also the derivatives of its screened attractions.
    """
    from pyscf import grad, scf

    from phisnet.reference import BOHR, build_mol

    mol = build_mol(atoms, basis=basis, charge=charge)
    mf = scf.RHF(mol)
    result = GeometryIntegrals(
        overlap=mol.intor("int1e_ovlp"),
        core_hamiltonian=np.asarray(mf.get_hcore()),
        nuclear_repulsion=float(mol.energy_nuc()),
        n_electrons=int(mol.nelectron),
    )
    if not derivatives:
        return result
    n_atoms, nao = mol.natm, mol.nao
    gradients = grad.rhf.Gradients(mf)
    hcore_deriv = gradients.hcore_generator(mol)
    s1 = -mol.intor("int1e_ipovlp")  # (3, nao, nao): <d mu / dR_A | nu> for mu on atom A
    t1 = -mol.intor("int1e_ipkin")  # the same for the kinetic energy, whose operator has no nuclear position
    dS = np.zeros((n_atoms, 3, nao, nao))
    dT = np.zeros((n_atoms, 3, nao, nao))
    dh = np.zeros((n_atoms, 3, nao, nao))
    for atom, (_, _, p0, p1) in enumerate(mol.aoslice_by_atom()):
        for d, one in ((dS, s1), (dT, t1)):
            d[atom, :, p0:p1, :] += one[:, p0:p1, :]
            d[atom, :, :, p0:p1] += one[:, p0:p1, :].transpose(0, 2, 1)
        dh[atom] = hcore_deriv(atom)
    result.overlap_gradient = dS / BOHR
    result.kinetic_gradient = dT / BOHR
    result.core_hamiltonian_gradient = dh / BOHR
    result.nuclear_repulsion_gradient = np.asarray(grad.rhf.grad_nuc(mol)) / BOHR
    if len(screening):
        from phisnet.baseline import screened_attraction_gradient

        result.screened_gradient = screened_attraction_gradient(atoms, basis, screening) / BOHR
    return result


def stack_integrals(items: list[GeometryIntegrals]) -> dict:
    """A batch of integrals as float64 torch tensors (same molecule throughout)."""
    import torch

    def stack(name):
        return torch.as_tensor(np.stack([getattr(item, name) for item in items]), dtype=torch.float64)

    batch = {
        "overlap": stack("overlap"),
        "core_hamiltonian": stack("core_hamiltonian"),
        "nuclear_repulsion": torch.tensor([item.nuclear_repulsion for item in items], dtype=torch.float64),
        "n_electrons": items[0].n_electrons,
    }
    if items[0].overlap_gradient is not None:
        for name in ("overlap_gradient", "core_hamiltonian_gradient", "nuclear_repulsion_gradient", "kinetic_gradient"):
            batch[name] = stack(name)
    if items[0].screened_gradient is not None:
        batch["screened_gradient"] = stack("screened_gradient")
    return batch


#: Newton-Schulz iterations allowed for the matrix sign function before giving up.
SIGN_MAX_ITERATIONS = 200


def occupied_density(F, S, n_electrons: int):
    """Closed-shell density P (float64 torch, batched) of the lowest n_electrons/2 orbitals of (F, S).

    P = 2 C_occ C_occ^T is computed without eigenvectors, as the spectral projector
    P = L^-T (1 - sign(F' - mu)) L^-1 with S = L L^T, F' = L^-1 F L^-T and mu midway between
    the HOMO and the LUMO; sign() by Newton-Schulz iteration. Its derivatives (of any order,
    so forces can enter a loss) depend only on occupied-virtual gaps, whereas
    ``torch.linalg.eigh``'s backward divides by every eigenvalue difference, degenerate occupied
    orbitals included (PyTorch documents it as unstable there).
    """
    import torch

    F = F.double()
    S = S.double()
    n_occ = n_electrons // 2
    L = torch.linalg.cholesky(S)
    X = torch.linalg.solve_triangular(L, F, upper=False)
    Fo = torch.linalg.solve_triangular(L, X.transpose(-1, -2), upper=False)  # L^-1 F L^-T (symmetric)
    Fo = 0.5 * (Fo + Fo.transpose(-1, -2))
    n = Fo.shape[-1]
    eye = torch.eye(n, dtype=Fo.dtype, device=Fo.device)
    if n_occ == 0:
        return torch.zeros_like(F)
    if n_occ >= n:
        P_orth = 2.0 * eye.expand_as(Fo)
    else:
        with torch.no_grad():
            levels = torch.linalg.eigvalsh(Fo)
            gap = levels[..., n_occ] - levels[..., n_occ - 1]
            if bool((gap < 1e-8).any()):
                raise InputError(
                    f"The HOMO-LUMO gap of this Fock matrix is {float(gap.min()):.2e} Ha: no closed-shell density."
                )
            mu = 0.5 * (levels[..., n_occ] + levels[..., n_occ - 1])
        A = Fo - mu[..., None, None] * eye
        Y = A / torch.linalg.matrix_norm(A, ord="fro")[..., None, None].detach()
        for _ in range(SIGN_MAX_ITERATIONS):
            Y2 = Y @ Y
            with torch.no_grad():
                converged = float(torch.linalg.matrix_norm(Y2 - eye, ord="fro").max()) < 1e-12
            Y = 1.5 * Y - 0.5 * Y2 @ Y
            if converged:
                break
        else:
            raise InputError("The density of this Fock matrix did not converge (matrix sign iteration).")
        P_orth = eye - Y
    Linv = torch.linalg.solve_triangular(L, eye.expand_as(Fo), upper=False)
    return Linv.transpose(-1, -2) @ P_orth @ Linv


def energy_from_hamiltonian(F, S, h, nuclear_repulsion, n_electrons: int):
    """E = 1/2 Tr[P (h + F)] + E_nuc in Hartree (float64 torch, batched), differentiable.

    F : predicted Fock matrix (..., nao, nao); S, h : exact overlap and core Hamiltonian of the
    geometry; nuclear_repulsion : (...) E_nuc; P from :func:`occupied_density`. Exactly the
    Hartree-Fock energy when F is the converged HF Fock matrix.
    """
    import torch

    F = F.double()
    P = occupied_density(F, S, n_electrons)
    return 0.5 * torch.einsum("...ij,...ji->...", P, h.double() + F) + nuclear_repulsion


def end_to_end(model, positions, atomic_numbers, integrals: dict, forces: bool = True, create_graph: bool = False):
    """Energy (Hartree) and forces (Hartree/Angstrom) of a model's predicted Fock matrix.

    positions : (B, N, 3) Angstrom; integrals : from :func:`stack_integrals` at those positions.
    The forces are -dE/dR through everything that depends on the geometry: the network's F
    (autograd through the model), S, h and E_nuc. S, h and E_nuc enter as their first-order
    expansion around the given geometry, which has their exact value and exact first
    derivative there; that is all -dE/dR needs, and it keeps the forces differentiable with
    respect to the model's parameters (``create_graph=True``) for a force loss.
    Returns (energy (B,), forces (B, N, 3) or None).
    """
    import torch

    R = positions.detach().clone().requires_grad_(forces)
    F = model(R.to(next(model.parameters()).dtype), atomic_numbers)["hamiltonian"]
    S, h, e_nuc = integrals["overlap"], integrals["core_hamiltonian"], integrals["nuclear_repulsion"]
    if forces:
        dR = (R - R.detach()).double()  # zero, with the gradient of R
        dS = torch.einsum("bax,baxij->bij", dR, integrals["overlap_gradient"])
        dh = torch.einsum("bax,baxij->bij", dR, integrals["core_hamiltonian_gradient"])
        S, h = S + dS, h + dh
        e_nuc = e_nuc + torch.einsum("bax,bax->b", dR, integrals["nuclear_repulsion_gradient"])
        network = getattr(model, "module", model)  # under DistributedDataParallel
        if network.baseline is not None:  # the network sees its baseline's integrals as constants
            dT = torch.einsum("bax,baxij->bij", dR, integrals["kinetic_gradient"])
            change = [dS, dT, dh - dT]  # S, T, V_nuc = h - T
            if network.baseline.screening:
                if "screened_gradient" not in integrals:
                    raise ValueError(
                        "This model's baseline has screened attractions: build its integrals with "
                        "geometry_integrals(..., screening=model.config.baseline_screening)."
                    )
                change += list(torch.einsum("bax,bkaxij->kbij", dR, integrals["screened_gradient"]))
            change = torch.stack(change, dim=1)  # [B, F, nao, nao]
            F = F + network.baseline(change, network.element_indices(atomic_numbers), constant=False)
    energy = energy_from_hamiltonian(F, S, h, e_nuc, integrals["n_electrons"])
    if not forces:
        return energy, None
    (gradient,) = torch.autograd.grad(energy.sum(), R, create_graph=create_graph)
    return energy, -gradient


def predict_energy_and_forces(
    predictor, atoms, charge: int = 0, forces: bool = True
) -> tuple[float, np.ndarray | None]:
    """End-to-end energy (Hartree) and forces (Hartree/Angstrom; None unless ``forces``) of one molecule.

    See :func:`end_to_end`; the exact S, h and E_nuc come from PySCF in the model's basis.
    """
    import torch

    predictor.check(atoms)
    basis = predictor.info.basis
    screening = predictor.model.config.baseline_screening if forces else ()
    integrals = stack_integrals([geometry_integrals(atoms, basis, charge, derivatives=forces, screening=screening)])
    energy, gradient_forces = end_to_end(
        predictor.model,
        torch.as_tensor(atoms.positions, dtype=torch.float64)[None],
        torch.as_tensor(atoms.numbers, dtype=torch.long),
        integrals,
        forces=forces,
    )
    return float(energy[0].detach()), (gradient_forces[0].detach().numpy() if forces else None)
