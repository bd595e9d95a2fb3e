"""Geometry sampling: optimisation, normal modes and thermal normal-mode sampling.

Thermal sampling here draws every mass-weighted normal coordinate from the
classical Boltzmann distribution of the harmonic potential at temperature T,
``q_i ~ N(0, k_B T / k_i)``, which is the distribution a classical MD run at T
samples in the harmonic limit (MD17 used 500 K MD). Each structure then gets a
uniformly random orientation about its centre of mass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import ase
import numpy as np
from ase.units import kB
from pyscf.geomopt import geometric_solver
from pyscf.hessian import thermo
from scipy.spatial.transform import Rotation

from phisnet.basis import DEFAULT_BASIS
from phisnet.errors import InputError
from phisnet.reference import BOHR, HARTREE_EV, build_mol, make_mf

_QUIET_LOG = Path(__file__).with_name("geometric_quiet.ini")
MIN_WAVENUMBER = 50.0  # cm^-1; softer modes are sampled as if they had this frequency


@dataclass
class NormalModes:
    """Harmonic analysis of an optimised structure.

    Attributes
    ----------
    symbols : chemical symbols.
    positions : (n_atoms, 3) equilibrium positions, Angstrom, centre of mass at the origin.
    wavenumbers : (n_modes,) harmonic frequencies, cm^-1.
    force_constants : (n_modes,) mass-weighted force constants, Hartree / (Bohr^2 amu).
    modes : (n_modes, n_atoms, 3) Cartesian displacement per unit mass-weighted
        coordinate, amu^-1/2 (PySCF's ``norm_mode``).
    """

    symbols: list[str]
    positions: np.ndarray
    wavenumbers: np.ndarray
    force_constants: np.ndarray
    modes: np.ndarray

    def to_json(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> NormalModes:
        return cls(
            symbols=list(data["symbols"]),
            positions=np.asarray(data["positions"], dtype=float),
            wavenumbers=np.asarray(data["wavenumbers"], dtype=float),
            force_constants=np.asarray(data["force_constants"], dtype=float),
            modes=np.asarray(data["modes"], dtype=float),
        )


def optimise(
    atoms: ase.Atoms, xc: str = "pbe", basis: str = DEFAULT_BASIS, charge: int = 0, spin: int = 0, maxsteps: int = 100
) -> ase.Atoms:
    """Optimise a structure at the given level of theory with geomeTRIC through PySCF."""
    mf = make_mf(build_mol(atoms, basis, charge, spin), xc)
    mf.conv_tol = 1e-10
    converged, mol = geometric_solver.kernel(mf, maxsteps=maxsteps, assert_convergence=False, logIni=str(_QUIET_LOG))
    if not converged:
        raise InputError(f"The geometry optimisation at {xc}/{basis} did not converge in {maxsteps} steps.")
    out = ase.Atoms(atoms.numbers, positions=mol.atom_coords(unit="Angstrom"))
    out.info.update(atoms.info)
    return out


def normal_modes(
    atoms: ase.Atoms, xc: str = "pbe", basis: str = DEFAULT_BASIS, charge: int = 0, spin: int = 0
) -> NormalModes:
    """Analytic Hessian at ``atoms`` (should be a minimum) and its harmonic analysis."""
    mol = build_mol(atoms, basis, charge, spin)
    mf = make_mf(mol, xc)
    mf.conv_tol = 1e-11
    mf.kernel()
    if not mf.converged:
        raise InputError(f"The SCF at the optimised structure did not converge ({xc}/{basis}).")
    hessian = mf.Hessian().kernel()
    return _harmonic_modes(mol, hessian, atoms.get_chemical_symbols())


def _harmonic_modes(mol, hessian: np.ndarray, symbols: list[str]) -> NormalModes:
    """PySCF's harmonic analysis of a (N, N, 3, 3) Hessian in Hartree/Bohr^2 at ``mol``'s geometry."""
    res = thermo.harmonic_analysis(mol, hessian, imaginary_freq=False)
    masses = mol.atom_mass_list(isotope_avg=True)
    positions = mol.atom_coords(unit="Angstrom")
    positions = positions - masses @ positions / masses.sum()
    return NormalModes(
        symbols=list(symbols),
        positions=positions,
        wavenumbers=np.asarray(res["freq_wavenumber"], dtype=float),
        force_constants=np.asarray(res["force_const_au"], dtype=float),
        modes=canonical_signs(np.asarray(res["norm_mode"], dtype=float)),
    )


def canonical_signs(modes: np.ndarray) -> np.ndarray:
    """Each mode times +1 or -1 so that its first clearly non-zero component is positive.

    An eigenvector's sign is arbitrary, and PySCF's harmonic analysis of the same optimised ethanol returned
    another pattern of signs in each of three runs (8 of its 21 modes flipped between two); a flipped mode moves every
    thermal sample, so the same ``phisnet generate`` command made other geometries. (Degenerate modes, as in CH4,
    can still mix.)

    Parameters
    ----------
    modes : (n_modes, n_atoms, 3) displacements.
    """
    flat = modes.reshape(len(modes), -1)
    clear = np.abs(flat) > 1e-3 * np.abs(flat).max(axis=1, keepdims=True)  # noise cannot decide the sign
    first = flat[np.arange(len(flat)), clear.argmax(axis=1)]
    return modes * np.where(first < 0, -1.0, 1.0)[:, None, None]


def thermal_sample(modes: NormalModes, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """One classical harmonic Boltzmann sample at ``temperature`` (K), randomly oriented.

    Returns
    -------
    positions : (n_atoms, 3) in Angstrom, centre of mass at the origin.
    """
    kT = kB * temperature / HARTREE_EV  # Hartree
    k = modes.force_constants
    # Frequency scales as sqrt(k): floor every mode at the force constant of MIN_WAVENUMBER
    # so near-free rotors and numerically soft modes do not fly apart.
    i_ref = int(np.argmax(modes.wavenumbers))
    k_floor = k[i_ref] * (MIN_WAVENUMBER / modes.wavenumbers[i_ref]) ** 2
    k = np.maximum(k, k_floor)
    q = rng.normal(size=k.shape) * np.sqrt(kT / k)  # sqrt(amu) Bohr
    displacement = np.einsum("i,iax->ax", q, modes.modes) * BOHR  # Angstrom
    positions = modes.positions + displacement
    masses = ase.Atoms(modes.symbols).get_masses()
    positions = positions - masses @ positions / masses.sum()
    R = Rotation.random(random_state=rng).as_matrix()
    return positions @ R.T


#: Unit conversion of a force-field Hessian: kcal/mol/A^2 -> Hartree/Bohr^2.
_KCAL_PER_HARTREE = 627.5094740631


def force_field_modes(mol, positions: np.ndarray, step: float = 1e-3) -> NormalModes:
    """Normal modes of a force-field minimum: a cheap stand-in for the DFT Hessian of ``normal_modes``.

    For sets of many molecules an optimisation and analytic Hessian at the level of theory per
    molecule would cost more than the dataset itself; the MMFF94 (or UFF) Hessian at the force
    field's own minimum gives the thermal sampling the molecule's soft and stiff directions.
    The Hessian is from central second differences of the force-field energy; PySCF's
    ``harmonic_analysis`` (which projects out translations and rotations) does the rest.

    Parameters
    ----------
    mol : RDKit molecule with hydrogens (``phisnet.molecules.rdkit_molecule``).
    positions : (n_atoms, 3) Angstrom, a force-field minimum (``phisnet.molecules.conformers``).
    step : finite-difference step in Angstrom.
    """
    import pyscf
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    from phisnet.molecules import force_field

    mol = Chem.Mol(mol)
    mol.RemoveAllConformers()
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, p in enumerate(np.asarray(positions, dtype=float)):
        conf.SetAtomPosition(i, Point3D(*p))
    mol.AddConformer(conf, assignId=True)
    ff = force_field(mol)
    ff.Initialize()
    x0 = np.asarray(positions, dtype=float).reshape(-1)
    n = x0.size

    def energy(*shifts: tuple[int, float]) -> float:
        x = x0.copy()
        for k, s in shifts:
            x[k] += s
        return ff.CalcEnergy(x.tolist())

    # Second differences of the energy (RDKit's CalcGrad(pos) disagreed with the energy's own derivative
    # after a minimisation, so it is not used): n^2 energies of microseconds each.
    hessian = np.zeros((n, n))
    e0 = energy()
    for k in range(n):
        hessian[k, k] = (energy((k, step)) + energy((k, -step)) - 2 * e0) / step**2
        for m in range(k):
            hessian[k, m] = hessian[m, k] = (
                energy((k, step), (m, step))
                - energy((k, step), (m, -step))
                - energy((k, -step), (m, step))
                + energy((k, -step), (m, -step))
            ) / (4 * step**2)
    hessian = 0.5 * (hessian + hessian.T) / _KCAL_PER_HARTREE * BOHR**2  # Hartree / Bohr^2
    n_atoms = n // 3
    hessian = hessian.reshape(n_atoms, 3, n_atoms, 3).transpose(0, 2, 1, 3)  # PySCF's (N, N, 3, 3)
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    pmol = pyscf.M(
        atom=list(zip(symbols, x0.reshape(-1, 3).tolist(), strict=True)), basis="sto-3g", unit="Angstrom", verbose=0
    )
    return _harmonic_modes(pmol, hessian, symbols)
