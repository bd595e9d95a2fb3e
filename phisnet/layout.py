"""Orbital bookkeeping: padded per-atom shell slots and the Clebsch-Gordan map from irreps to a block."""

from __future__ import annotations

import math

import numpy as np
import torch
from ase.data import chemical_symbols
from e3nn import o3

from phisnet.basis import element_shells
from phisnet.conventions import e3nn_to_pyscf_index

# ----------------------------------------------------------------------------- orbital bookkeeping


class OrbitalLayout:
    """Padded per-atom shell slots and, per element, which slot orbitals it uses.

    A slot is (l, k): the k-th shell of angular momentum l. The padded set holds, for each
    l, the largest count over the model's elements; slot orbitals are in PySCF component
    order. ``element_index[e]`` lists the slot orbitals element e uses, in PySCF AO order.
    """

    def __init__(self, elements: list[int], basis: str):
        shells = {z: element_shells(chemical_symbols[z], basis) for z in elements}
        lmax_basis = max(max(s) for s in shells.values())
        counts = [max(s.count(l) for s in shells.values()) for l in range(lmax_basis + 1)]
        self.slots: list[tuple[int, int]] = [(l, k) for l in range(lmax_basis + 1) for k in range(counts[l])]
        self.slot_start: dict[tuple[int, int], int] = {}
        p = 0
        for l, k in self.slots:
            self.slot_start[(l, k)] = p
            p += 2 * l + 1
        self.n_orbitals = p
        self.element_index: list[list[int]] = []
        for z in elements:
            seen = [0] * (lmax_basis + 1)
            idx: list[int] = []
            for l in shells[z]:
                start = self.slot_start[(l, seen[l])]
                idx.extend(range(start, start + 2 * l + 1))
                seen[l] += 1
            self.element_index.append(idx)


def block_irreps_and_basis(slots: list[tuple[int, int]]) -> tuple[o3.Irreps, torch.Tensor]:
    """Irreps of a padded K x K block and the Clebsch-Gordan map from them to the block.

    Returns
    -------
    irreps : ``n_L x Le`` for L = 0..2 lmax_basis: one L component for every slot pair (a, b)
        with L in |la-lb|..la+lb.
    Q : tensor of shape (irreps.dim, K, K); ``block = features @ Q.flatten(1)``, in PySCF
        component order, such that block rotates as ``D_a block D_b^T``.
    """
    sizes = [2 * l + 1 for l, _ in slots]
    starts = np.cumsum([0] + sizes)[:-1]
    K = int(sum(sizes))
    entries = []
    for a, (la, _) in enumerate(slots):
        for b, (lb, _) in enumerate(slots):
            for L in range(abs(la - lb), la + lb + 1):
                entries.append((a, b, la, lb, L))
    # Grouped by L, one "n_L x Le" irrep per order: e3nn's Linear then runs one matrix product per L.
    entries.sort(key=lambda entry: entry[-1])
    lmax = entries[-1][-1]
    irreps = o3.Irreps([(sum(1 for e in entries if e[-1] == L), (L, 1)) for L in range(lmax + 1)])
    Q = torch.zeros(irreps.dim, K, K, dtype=torch.float64)
    row = 0
    for a, b, la, lb, L in entries:
        C = o3.wigner_3j(la, lb, L, dtype=torch.float64) * math.sqrt(2 * L + 1)  # (2la+1, 2lb+1, 2L+1)
        ia = list(e3nn_to_pyscf_index(la))
        ib = list(e3nn_to_pyscf_index(lb))
        C = C[ia][:, ib]  # rows/columns from e3nn to PySCF component order
        sa, sb = int(starts[a]), int(starts[b])
        Q[row : row + 2 * L + 1, sa : sa + 2 * la + 1, sb : sb + 2 * lb + 1] = C.permute(2, 0, 1)
        row += 2 * L + 1
    return irreps, Q
