"""The energy of a predicted Fock matrix F as a differentiable function (the paper's end-to-end energies).

With the exact overlap S and core Hamiltonian h of the geometry, the closed-shell
density P of the lowest n_electrons / 2 orbitals of (F, S) gives E = 1/2 Tr[P (h + F)] + E_nuc: exactly the
Hartree-Fock energy when F is the converged HF Fock matrix. For a Kohn-Sham F it is the same expression (a
model's own energy), not the Kohn-Sham energy functional.

Used for training on energies and forces (``phisnet.losses``), for a model's own energy and
forces (``predict_energy_and_forces``) and the ASE calculator's end-to-end route.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phisnet.errors import InputError


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
