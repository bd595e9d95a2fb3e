"""A PySCF numerical integrator that keeps the orbital values on the DFT grid between SCF iterations.

PySCF's ``NumInt`` evaluates every atomic orbital (and, for GGAs, its gradient) on every grid point anew in each
iteration, then contracts them with the density and the potential. For the molecules here that evaluation is about
a quarter of a PBE calculation (malondialdehyde, 90 functions, 110k grid points, one thread: 1.6 of 5.9 s over 12
iterations), and the values do not change while the geometry and the grid stay the same. PySCF has no switch that
keeps them, so this subclass does (hand-written for that reason): the first pass over the grid stores each block of
values, later passes of the same grid, orbitals and derivative order hand the stored blocks back. The arithmetic
after them is PySCF's own, so the results are the same to the last bit on one thread and to rounding on more
(``tests/test_ao_values.py``); ``benchmarks/fast_paths.py`` prints the time side by side.

Only SCF's orders (values, first derivatives) are kept, and only when they fit in ``max_bytes``; the second
derivatives that nuclear gradients need pass through as PySCF computes them.
"""

from __future__ import annotations

import numpy as np
from pyscf.dft import numint

#: The most bytes of orbital values one integrator keeps (a grid that needs more is evaluated as PySCF does):
#: uracil's 132 functions on 150k points with first derivatives are about 0.6 GiB.
MAX_BYTES = 2 * 1024**3


class KeptAONumInt(numint.NumInt):
    """``pyscf.dft.numint.NumInt`` whose ``block_loop`` keeps the orbital values of the last grid it ran over.

    Use one per mean-field object: ``mf._numint = KeptAONumInt()``. The kept blocks are those of one (molecule,
    grid, orbitals, derivative order); a pass over anything else replaces them, and one that asks for its own block
    size passes through. The molecule and the grid's arrays are held with them, so none of them can be freed and its
    address reused by a new one.
    """

    def __init__(self, max_bytes: int = MAX_BYTES):
        super().__init__()
        self.max_bytes = max_bytes
        self._kept: tuple | None = None  # (key, holders, blocks)

    def release(self) -> None:
        """Free the kept values (the next pass evaluates them again)."""
        self._kept = None

    def block_loop(self, mol, grids, nao=None, deriv=0, max_memory=2000, non0tab=None, blksize=None, buf=None):
        if grids.coords is None:
            grids.build(with_non0tab=True)
        nao = mol.nao if nao is None else nao
        holders = (mol, grids.coords, grids.weights, non0tab)
        # Not max_memory: PySCF's callers pass what is left of their memory, which changes from call to call. The
        # kept blocks keep the first pass's layout, which every caller reads by the blocks' own sizes.
        key = (deriv, nao, *(id(h) for h in holders))
        if self._kept is not None and self._kept[0] == key:
            yield from self._kept[2]
            return
        components = (deriv + 1) * (deriv + 2) * (deriv + 3) // 6
        size = components * nao * len(grids.coords) * 8
        blocks = super().block_loop(mol, grids, nao, deriv, max_memory, non0tab, blksize, buf)
        if deriv > 1 or size > self.max_bytes or blksize is not None:
            yield from blocks
            return
        self._kept = None  # the previous grid's values are freed before this one's are stored
        kept = []
        for ao, mask, weight, coords in blocks:  # PySCF reuses one buffer for every block: each is copied
            kept.append((np.array(ao, copy=True), mask, weight, coords))
            yield kept[-1]
        self._kept = (key, holders, kept)
