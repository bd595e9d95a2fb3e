"""Files and pictures of a wavefunction: molden, Gaussian cube grids, 3D views, plots.

Molden files (``pyscf.tools.molden``) open in Jmol, Avogadro, IboView, Multiwfn and
most other viewers; cube files (``pyscf.tools.cubegen``) hold an orbital or a density on
a grid (Bohr, as the cube format requires).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from phisnet.errors import InputError
from phisnet.files import write_text_atomic
from phisnet.observables import Orbitals

#: Points per axis of the cube grids (PySCF's default is 80).
DEFAULT_CUBE_POINTS = 80
#: Names of the densities a cube can hold, beside orbitals.
DENSITIES = ("density", "difference")

_ORBITAL = re.compile(r"^(homo|lumo)\s*(?:([+-])\s*(\d+))?$")


def orbital_index(spec: str | int, orbitals: Orbitals) -> int:
    """Zero-based orbital index for ``homo``, ``lumo``, ``homo-1``, ``lumo+2`` or a number counted from 1."""
    n_mo, n_occ = len(orbitals.energies), orbitals.n_occupied
    text = str(spec).strip().lower()
    match = _ORBITAL.match(text)
    if match:
        base = n_occ - 1 if match.group(1) == "homo" else n_occ
        offset = int(match.group(3) or 0) * (-1 if match.group(2) == "-" else 1)
        index = base + offset
    elif text.isdigit():
        index = int(text) - 1
    else:
        raise InputError(f"'{spec}' is not an orbital: use homo, lumo, homo-N, lumo+N or a number from 1 to {n_mo}.")
    if not 0 <= index < n_mo:
        raise InputError(f"orbital '{spec}' does not exist: this molecule has orbitals 1 to {n_mo} (HOMO = {n_occ}).")
    return index


def orbital_label(index: int, orbitals: Orbitals) -> str:
    """``HOMO``, ``LUMO+1``, ... for a zero-based orbital index."""
    homo = orbitals.n_occupied - 1
    if index <= homo:
        return "HOMO" if index == homo else f"HOMO-{homo - index}"
    return "LUMO" if index == homo + 1 else f"LUMO+{index - homo - 1}"


def molden_text(mol, orbitals: Orbitals) -> str:
    """The orbitals (energies, occupations, coefficients) of ``mol`` in molden format."""
    from pyscf.tools import molden

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "orbitals.molden"
        molden.from_mo(mol, str(path), orbitals.coefficients, ene=orbitals.energies, occ=orbitals.occupations)
        return path.read_text()


def cube_text(
    mol,
    what: str,
    orbitals: Orbitals,
    reference_density: np.ndarray | None = None,
    points: int = DEFAULT_CUBE_POINTS,
) -> str:
    """A Gaussian cube of an orbital (``homo``, ``lumo+1``, ``7``...), ``density`` or ``difference``.

    ``difference`` is the predicted minus the reference electron density and needs
    ``reference_density`` (the reference density matrix in the same AO basis).
    """
    from pyscf.tools import cubegen

    what = str(what).strip().lower()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "grid.cube")
        grid = dict(nx=points, ny=points, nz=points)
        if what == "density":
            cubegen.density(mol, path, orbitals.density_matrix, **grid)
        elif what == "difference":
            if reference_density is None:
                raise InputError("the 'difference' cube needs a reference calculation (--reference).")
            cubegen.density(mol, path, orbitals.density_matrix - reference_density, **grid)
        else:
            index = orbital_index(what, orbitals)
            cubegen.orbital(mol, path, orbitals.coefficients[:, index], **grid)
        return Path(path).read_text()


def write_molden(path: str | Path, mol, orbitals: Orbitals) -> Path:
    """Write a molden file atomically; returns its path."""
    write_text_atomic(path, molden_text(mol, orbitals))
    return Path(path)


def write_cube(path: str | Path, mol, what: str, orbitals: Orbitals, **kwargs) -> Path:
    """Write a cube file atomically (see ``cube_text``); returns its path."""
    write_text_atomic(path, cube_text(mol, what, orbitals, **kwargs))
    return Path(path)
