"""Atomic-orbital layout of a basis set, in PySCF's own AO order.

PySCF orders AOs atom by atom; within an atom, shell by shell as the basis
lists them; within a contracted shell with several contractions, contraction
by contraction, each with ``2l+1`` real spherical components (``cart=False``).
For l=1 the components are (px, py, pz); for l>=2, m = -l..l.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import ase
from ase.data import atomic_numbers, chemical_symbols
from pyscf import gto

from phisnet.errors import InputError

DEFAULT_BASIS = "def2-svp"


@dataclass(frozen=True)
class AtomLayout:
    """Shells of one atom.

    Attributes
    ----------
    symbol : chemical symbol.
    shells : angular momentum l of every shell, in PySCF order.
    start, stop : AO index range of this atom in the molecular matrix.
    """

    symbol: str
    shells: tuple[int, ...]
    start: int
    stop: int

    @property
    def ao_slice(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def nao(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Layout:
    """AO layout of a molecule: per atom the shells and the AO slice."""

    basis: str
    atoms: tuple[AtomLayout, ...]

    @property
    def nao(self) -> int:
        return self.atoms[-1].stop if self.atoms else 0

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(a.symbol for a in self.atoms)

    def shell_slices(self) -> list[tuple[int, int, slice]]:
        """Every shell of the molecule as (atom index, l, AO slice), in AO order."""
        out = []
        for i, atom in enumerate(self.atoms):
            p = atom.start
            for l in atom.shells:
                out.append((i, l, slice(p, p + 2 * l + 1)))
                p += 2 * l + 1
        return out


@cache
def element_shells(symbol: str, basis: str = DEFAULT_BASIS) -> tuple[int, ...]:
    """Angular momenta of the shells of one element in a basis, in PySCF order.

    Raises
    ------
    InputError
        If the basis set has no functions for the element.
    """
    if symbol not in atomic_numbers or atomic_numbers[symbol] == 0:
        raise InputError(f"'{symbol}' is not a chemical element symbol.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PySCF suggests installing basis-set-exchange; the error says enough
            shells = gto.basis.load(basis, symbol)
    except (KeyError, RuntimeError, ValueError, OSError, TypeError) as exc:
        raise InputError(f"The basis set {basis} has no functions for {symbol} ({exc}).") from exc
    if not shells:
        raise InputError(f"The basis set {basis} has no functions for {symbol}.")
    # Build a one-atom Mole so the shell order is exactly what PySCF uses for molecules.
    mol = gto.Mole()
    mol.atom = [[symbol, (0.0, 0.0, 0.0)]]
    mol.basis = {symbol: shells}
    mol.spin = atomic_numbers[symbol] % 2
    mol.cart = False
    mol.verbose = 0
    mol.build()
    out: list[int] = []
    for b in range(mol.nbas):
        out.extend([int(mol.bas_angular(b))] * int(mol.bas_nctr(b)))
    if sum(2 * l + 1 for l in out) != mol.nao_nr():
        raise RuntimeError(f"shell bookkeeping disagrees with PySCF for {symbol}/{basis}")
    return tuple(out)


def layout(atoms_or_symbols: ase.Atoms | Sequence[str] | Sequence[int], basis: str = DEFAULT_BASIS) -> Layout:
    """AO layout of a molecule in a basis set.

    Parameters
    ----------
    atoms_or_symbols : an ``ase.Atoms``, chemical symbols, or atomic numbers.
    basis : any basis set name PySCF knows, default def2-SVP.

    Returns
    -------
    Layout with per-atom shells and AO slices; ``layout.nao`` equals PySCF's ``mol.nao``.
    """
    if isinstance(atoms_or_symbols, ase.Atoms):
        symbols = atoms_or_symbols.get_chemical_symbols()
    else:
        symbols = [chemical_symbols[s] if isinstance(s, int) else str(s) for s in atoms_or_symbols]
    atoms = []
    p = 0
    for s in symbols:
        shells = element_shells(s, basis)
        n = sum(2 * l + 1 for l in shells)
        atoms.append(AtomLayout(symbol=s, shells=shells, start=p, stop=p + n))
        p += n
    return Layout(basis=basis, atoms=tuple(atoms))
