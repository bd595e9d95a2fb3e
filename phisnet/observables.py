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
