"""Checking a model's equivariance: rotate the molecule, compare H(R x) with D H(x) D^T.

``D = phisnet.conventions.ao_rotation(layout, R)`` is the block-diagonal rotation of the
AO basis; an exactly equivariant model satisfies ``H(R x) = D H(x) D^T`` (and the same
for S) up to floating-point error: about 1e-6 relative in float32, 1e-12 in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import ase
import numpy as np
from scipy.spatial.transform import Rotation

from phisnet.basis import layout
from phisnet.conventions import ao_rotation


def rotation_from_angles(x_deg: float, y_deg: float, z_deg: float) -> np.ndarray:
    """Rotation matrix of successive rotations about the fixed x, y and z axes (degrees)."""
    return Rotation.from_euler("xyz", [x_deg, y_deg, z_deg], degrees=True).as_matrix()


def rotate(atoms: ase.Atoms, R: np.ndarray) -> ase.Atoms:
    """A copy of ``atoms`` rotated by R about its centre of geometry."""
    rotated = atoms.copy()
    centre = atoms.positions.mean(axis=0)
    rotated.positions = (atoms.positions - centre) @ np.asarray(R).T + centre
    return rotated


@dataclass
class EquivarianceCheck:
    """H and S of the rotated molecule, the rotated prediction D H D^T, and their differences.

    Errors are maximum absolute entries (Hartree for H), and relative to the largest |H| entry.
    """

    rotation: np.ndarray
    hamiltonian_rotated: np.ndarray  # predicted H of the rotated molecule
    hamiltonian_transformed: np.ndarray  # D H(x) D^T
    h_error: float
    s_error: float
    h_relative_error: float


def check(predictor, atoms: ase.Atoms, R: np.ndarray) -> EquivarianceCheck:
    """Predict for ``atoms`` and for ``rotate(atoms, R)`` and compare through D."""
    D = ao_rotation(layout(atoms, predictor.info.basis), R)
    original = predictor.predict(atoms)
    rotated = predictor.predict(rotate(atoms, R))
    H_t = D @ original.hamiltonian @ D.T
    S_t = D @ original.overlap @ D.T
    h_error = float(np.abs(rotated.hamiltonian - H_t).max())
    return EquivarianceCheck(
        rotation=np.asarray(R),
        hamiltonian_rotated=rotated.hamiltonian,
        hamiltonian_transformed=H_t,
        h_error=h_error,
        s_error=float(np.abs(rotated.overlap - S_t).max()),
        h_relative_error=h_error / float(np.abs(H_t).max()),
    )


def random_rotation_errors(predictor, atoms: ase.Atoms, n: int = 20, seed: int = 0) -> np.ndarray:
    """Relative H errors of ``check`` for n random rotations (uniform on SO(3), seeded)."""
    rotations = Rotation.random(n, random_state=seed).as_matrix()
    return np.array([check(predictor, atoms, R).h_relative_error for R in rotations])
