"""From H and S to chemistry: orbitals, occupations, density matrix, frontier orbitals."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg

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


def solve(H: np.ndarray, S: np.ndarray, n_electrons: int) -> Orbitals:
    """Orbitals of a closed-shell molecule from its Hamiltonian and overlap.

    Parameters
    ----------
    H, S : arrays of shape (nao, nao), Hartree and dimensionless, symmetric.
    n_electrons : even number of electrons.

    When S has eigenvalues below ``LINDEP_THRESHOLD`` (near linear dependence, possible
    with a predicted S), the problem is solved in the canonically orthogonalised basis
    and a warning says how many functions were dropped.
    """
    if n_electrons % 2:
        raise ValueError(f"closed-shell orbitals need an even electron count, got {n_electrons}")
    H = 0.5 * (np.asarray(H, dtype=float) + np.asarray(H, dtype=float).T)
    S = 0.5 * (np.asarray(S, dtype=float) + np.asarray(S, dtype=float).T)
    s, U = np.linalg.eigh(S)
    keep = s > LINDEP_THRESHOLD
    if keep.all():
        energies, C = scipy.linalg.eigh(H, S)
    else:
        warnings.warn(
            f"The overlap matrix is near-singular: {int((~keep).sum())} of {len(s)} functions dropped "
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
