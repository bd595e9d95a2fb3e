"""The one map between PySCF's real spherical AOs and e3nn's irreps.

e3nn's real spherical harmonics use the axis order (y, z, x): give e3nn
coordinates permuted to (y, z, x) and PySCF's p shell (px, py, pz) maps to
e3nn's l=1 components by the index [1, 2, 0]; d, f and g shells map with no
permutation and no sign change. In matrices, with ``Q = eye(3)[[1, 2, 0]]``,

    Irrep(l, (-1)**l).D_from_matrix(Q @ R @ Q.T) == Dp[idx][:, idx]

where Dp rotates an l shell in PySCF order. ``tests/test_conventions.py``
proves this against PySCF itself (rotated Fock and overlap matrices).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from e3nn import o3

from phisnet.basis import Layout
from phisnet.torchtools import default_dtype

#: Cartesian (x, y, z) -> e3nn's (y, z, x).
AXES_TO_E3NN = np.eye(3)[[1, 2, 0]]


def to_e3nn_coordinates(positions):
    """Vectors (..., 3) in (x, y, z) order permuted to e3nn's (y, z, x)."""
    return positions[..., [1, 2, 0]]


@cache
def pyscf_to_e3nn_index(l: int) -> tuple[int, ...]:
    """Index into the 2l+1 PySCF components of an l shell giving e3nn's order.

    ``x_e3nn = x_pyscf[idx]`` for a vector of AO coefficients of one shell.
    """
    if l < 0:
        raise ValueError(f"l must be >= 0, got {l}")
    if l == 1:
        return (1, 2, 0)
    return tuple(range(2 * l + 1))


@cache
def e3nn_to_pyscf_index(l: int) -> tuple[int, ...]:
    """Inverse of :func:`pyscf_to_e3nn_index`: ``x_pyscf = x_e3nn[idx]``."""
    return tuple(int(i) for i in np.argsort(pyscf_to_e3nn_index(l)))


def _check_rotation(R: np.ndarray) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"R must have shape (3, 3), got {R.shape}")
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-8) or np.linalg.det(R) < 0:
        raise ValueError("R must be a proper rotation matrix (orthogonal, det +1)")
    return R


def shell_rotation(l: int, R: np.ndarray) -> np.ndarray:
    """Rotation of one real spherical l shell in PySCF component order.

    Parameters
    ----------
    l : angular momentum.
    R : rotation matrix of shape (3, 3) acting on Cartesian column vectors.

    Returns
    -------
    Dp : array of shape (2l+1, 2l+1) with ``M(R x) = Dp M(x) Dp^T`` for any
        one-electron matrix block M between two such shells.
    """
    R = _check_rotation(R)
    Re = AXES_TO_E3NN @ R @ AXES_TO_E3NN.T
    # e3nn builds its generators in the default dtype; float32 would cap the accuracy at ~1e-7.
    with default_dtype(torch.float64):
        De = o3.Irrep(l, (-1) ** l).D_from_matrix(torch.as_tensor(Re, dtype=torch.float64)).numpy()
    inv = list(e3nn_to_pyscf_index(l))
    return De[np.ix_(inv, inv)]


def ao_rotation(layout: Layout, R: np.ndarray) -> np.ndarray:
    """Block-diagonal AO rotation D for a rotation R of the Cartesian coordinates.

    Parameters
    ----------
    layout : AO layout of the molecule (``phisnet.basis.layout``).
    R : rotation matrix of shape (3, 3); the rotated geometry is ``positions @ R.T``.

    Returns
    -------
    D : array of shape (nao, nao) such that ``H(R x) = D H(x) D^T`` and
        ``S(R x) = D S(x) D^T``.
    """
    R = _check_rotation(R)
    D = np.zeros((layout.nao, layout.nao))
    cache: dict[int, np.ndarray] = {}
    for _, l, sl in layout.shell_slices():
        if l not in cache:
            cache[l] = shell_rotation(l, R)
        D[sl, sl] = cache[l]
    return D
