"""Reference calculations with PySCF: the ground truth the model learns.

The Hamiltonian is the converged Kohn-Sham (or Hartree-Fock) Fock matrix
``mf.get_fock()`` in real spherical AOs, PySCF order; the overlap is
``mol.intor("int1e_ovlp")``. Closed shells (spin 0) use RKS/RHF; open shells
use ROKS/ROHF, whose Fock matrix is PySCF's effective restricted open-shell one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import ase
import numpy as np
from pyscf import dft, gto, lib, scf

from phisnet.ao_values import KeptAONumInt
from phisnet.basis import DEFAULT_BASIS
from phisnet.errors import InputError

BOHR = lib.param.BOHR  # Angstrom per Bohr
HARTREE_EV = 27.211386245988  # eV per Hartree, CODATA 2018 (ase.units defaults to CODATA 2014: 27.211386024)


@dataclass
class Reference:
    """Result of one PySCF calculation. Energies in Hartree, lengths in Angstrom.

    Attributes
    ----------
    hamiltonian : (nao, nao) converged Fock matrix, Hartree.
    overlap : (nao, nao) AO overlap matrix.
    energy : total energy, Hartree.
    forces : (n_atoms, 3) forces, Hartree/Angstrom (NaN when not converged or not asked for).
    mo_energy : (nao,) orbital energies, Hartree.
    mo_coeff : (nao, nao) MO coefficients, columns are orbitals.
    mo_occ : (nao,) occupations.
    n_iterations : SCF cycles PySCF ran.
    seconds : wall time of the SCF alone.
    converged : whether the SCF converged.
    energies : total energy after every SCF cycle, for convergence plots.
    xc, basis : level of theory.
    forces_seconds : wall time of the forces.
    guess : where the SCF started: a PySCF guess name, ``"given"`` (a density matrix passed in) or, in
        generated datasets, ``"model"`` (a model's predicted density).
    """

    hamiltonian: np.ndarray
    overlap: np.ndarray
    energy: float
    forces: np.ndarray
    mo_energy: np.ndarray
    mo_coeff: np.ndarray
    mo_occ: np.ndarray
    n_iterations: int
    seconds: float
    converged: bool
    xc: str
    basis: str
    energies: list[float] = field(default_factory=list)
    forces_seconds: float = 0.0
    guess: str = "minao"


def build_mol(atoms: ase.Atoms, basis: str = DEFAULT_BASIS, charge: int = 0, spin: int = 0) -> gto.Mole:
    """PySCF molecule (real spherical AOs, Angstrom) for an ``ase.Atoms``."""
    mol = gto.Mole()
    symbols = atoms.get_chemical_symbols()
    mol.atom = [(s, tuple(float(x) for x in p)) for s, p in zip(symbols, atoms.positions, strict=True)]
    mol.unit = "Angstrom"
    mol.basis = basis
    mol.charge = charge
    mol.spin = spin
    mol.cart = False
    mol.verbose = 0
    try:
        mol.build()
    except (RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"PySCF cannot build this molecule with basis {basis}: {exc}") from None
    return mol


def make_mf(mol: gto.Mole, xc: str = "pbe"):
    """Mean-field object: RHF/ROHF for ``xc="hf"``, RKS/ROKS for any functional PySCF knows."""
    closed = mol.spin == 0
    if xc.lower() in ("hf", "rhf", "scf"):
        return scf.RHF(mol) if closed else scf.ROHF(mol)
    try:
        dft.libxc.parse_xc(xc)
    except (KeyError, ValueError, NotImplementedError) as exc:
        raise InputError(f"'{xc}' is not an exchange-correlation functional PySCF knows ({exc}).") from None
    mf = dft.RKS(mol) if closed else dft.ROKS(mol)
    mf.xc = xc
    return mf


def run_dft(
    atoms: ase.Atoms,
    xc: str = "pbe",
    basis: str = DEFAULT_BASIS,
    charge: int = 0,
    spin: int = 0,
    *,
    init_guess: str = "minao",
    dm0: np.ndarray | None = None,
    conv_tol: float | None = None,
    max_cycle: int = 100,
    forces: bool = True,
    grid_level: int | None = None,
    second_order: bool = False,
    progress: Callable[[int, float], None] | None = None,
    keep_ao: bool = True,
) -> Reference:
    """Run a PySCF SCF calculation and collect what the model learns.

    Parameters
    ----------
    atoms : molecule, positions in Angstrom.
    xc : any PySCF functional (``pbe``, ``b3lyp``, ...) or ``hf`` for Hartree-Fock.
    basis : any basis set PySCF knows.
    charge, spin : total charge and number of unpaired electrons.
    init_guess : PySCF initial guess (``minao``, ``atom``, ``huckel``, ``1e``, ...), used when dm0 is None.
    dm0 : initial density matrix (nao, nao), e.g. from a predicted Hamiltonian.
    conv_tol : SCF energy tolerance in Hartree; PySCF's default (1e-9) when None.
    max_cycle : most SCF cycles before giving up.
    forces : also compute analytic forces (only when converged).
    grid_level : DFT integration grid level; PySCF's default (3) when None.
    second_order : use PySCF's second-order (Newton) solver, for hard cases.
    progress : called after every SCF iteration with its number (1, 2, ...) and energy (Hartree); an exception
        it raises stops the calculation (the app's Stop button works this way).
    keep_ao : keep the orbitals' values on the DFT grid between iterations (``phisnet.ao_values``): the same
        result in 0.6-0.9 of the time; False runs PySCF's integrator as it ships (for speed comparisons).

    Returns
    -------
    Reference; ``converged`` is False when the SCF did not converge.
    """
    mol = build_mol(atoms, basis, charge, spin)
    mf = _solver(mol, xc, init_guess, conv_tol, max_cycle, grid_level, second_order, keep_ao)
    energies, seconds, fock = _iterate(mf, dm0, progress)
    converged = bool(mf.converged)
    grad, forces_seconds = (
        _gradient(mf, len(atoms)) if forces and converged else (np.full((len(atoms), 3), np.nan), 0.0)
    )
    if isinstance(getattr(mf, "_numint", None), KeptAONumInt):
        mf._numint.release()  # hundreds of MB: freed now, not whenever the mean-field object goes
    return Reference(
        hamiltonian=np.asarray(fock),
        overlap=mol.intor("int1e_ovlp"),
        energy=float(mf.e_tot),
        forces=-np.asarray(grad) / BOHR,
        mo_energy=np.asarray(mf.mo_energy),
        mo_coeff=np.asarray(mf.mo_coeff),
        mo_occ=np.asarray(mf.mo_occ),
        n_iterations=len(energies),
        seconds=seconds,
        converged=converged,
        xc=xc,
        basis=basis,
        energies=energies,
        forces_seconds=forces_seconds,
        guess="given" if dm0 is not None else init_guess,
    )


def _solver(mol, xc: str, init_guess: str, conv_tol, max_cycle: int, grid_level, second_order: bool, keep_ao=True):
    """The PySCF mean-field object for ``run_dft``, its options set (PySCF's defaults where None)."""
    mf = make_mf(mol, xc)
    if keep_ao and hasattr(mf, "_numint"):
        mf._numint = KeptAONumInt()
    mf.max_cycle = max_cycle
    mf.init_guess = init_guess
    if conv_tol is not None:
        mf.conv_tol = conv_tol
    if grid_level is not None and hasattr(mf, "grids"):
        mf.grids.level = grid_level
    return mf.newton() if second_order else mf


def _iterate(mf, dm0, progress) -> tuple[list[float], float, np.ndarray]:
    """Run the SCF from ``dm0`` (the solver's guess when None); each iteration's energy, the seconds taken and the
    Fock matrix of the final density."""
    energies: list[float] = []
    final: dict = {}

    def record(envs):
        energies.append(float(envs["e_tot"]))
        if progress is not None:
            progress(len(energies), energies[-1])

    def keep_final(envs):  # PySCF's hook at the end of its SCF driver sees the last density and its potential
        final.update((key, envs.get(key)) for key in ("h1e", "s1e", "vhf", "dm"))
        post_kernel(envs)

    post_kernel = mf.post_kernel
    mf.callback, mf.post_kernel = record, keep_final
    t0 = time.perf_counter()
    try:
        mf.kernel(dm0=dm0)
    finally:  # the hooks refer to mf: left on it, they would keep it (and its grid's values) alive in a cycle
        mf.callback = None
        del mf.post_kernel
    return energies, time.perf_counter() - t0, _final_fock(mf, final)


def _final_fock(mf, final: dict) -> np.ndarray:
    """The Fock matrix of the density the SCF ended with.

    PySCF's driver ends having built the potential of that density (``vhf``, which its ``post_kernel`` hook sees);
    the Fock matrix is then h1e + vhf with no extrapolation (``get_fock`` outside the iterations). That saves the
    extra potential build of ``mf.get_fock()``, one iteration's time (a Coulomb and an XC evaluation). Where the
    hook did not see the final density (e.g. the second-order solver), the potential is built again.
    """
    dm = final.get("dm")
    if final.get("vhf") is not None and dm is not None and np.array_equal(dm, mf.make_rdm1()):
        return mf.get_fock(h1e=final["h1e"], s1e=final["s1e"], vhf=final["vhf"], dm=dm)
    return mf.get_fock()


def _gradient(mf, n_atoms: int) -> tuple[np.ndarray, float]:
    """The analytic nuclear gradient (Hartree/Bohr, shape (n_atoms, 3)) of a converged SCF and its seconds."""
    t0 = time.perf_counter()
    grad = np.asarray(mf.nuc_grad_method().kernel()).reshape(n_atoms, 3)
    return grad, time.perf_counter() - t0


@dataclass
class CoupledCluster:
    """CCSD(T) energy and analytic forces of one geometry (Hartree, Hartree/Angstrom).

    ``hf_energy`` is the RHF energy the coupled-cluster calculation started from, so
    ``energy - hf_energy`` is the correlation energy.
    """

    energy: float
    forces: np.ndarray
    hf_energy: float
    seconds: float


#: The anchor of :func:`estimate_scf_seconds`: uracil, 132 functions of def2-SVP, PBE, minao guess, 15 iterations in
#: 18.05 s on this project's 2-core CPU (``benchmarks/reference_cost.py``, two threads).
ANCHOR_FUNCTIONS, ANCHOR_SECONDS = 132, 18.05
#: What every calculation costs whatever its size (water's 24 functions took 0.62 s there).
OVERHEAD_SECONDS = 0.5


def estimate_scf_seconds(atoms: ase.Atoms, basis: str = DEFAULT_BASIS, xc: str = "pbe") -> float:
    """A rough wall time of ``run_dft`` for ``atoms`` on this kind of machine, from its number of basis functions.

    ``OVERHEAD_SECONDS`` plus the cube of the function count scaled from one measured calculation; Hartree-Fock has
    no grid and costs about a third. A scale to decide whether to ask first, good to a factor of a few (the grid,
    the iteration count and the machine's other work move it): caffeine, 246 functions, is estimated at about
    2 minutes and took 5.5 in the app's trial beside other work.
    """
    charge = int(atoms.info.get("charge", 0) or 0)  # any consistent spin: only the basis functions count
    n = build_mol(atoms, basis=basis, charge=charge, spin=(int(atoms.numbers.sum()) - charge) % 2).nao
    seconds = ANCHOR_SECONDS * (n / ANCHOR_FUNCTIONS) ** 3
    return OVERHEAD_SECONDS + (seconds / 3 if xc.lower() in ("hf", "rhf", "scf") else seconds)


def run_ccsd_t(atoms: ase.Atoms, basis: str = DEFAULT_BASIS, charge: int = 0) -> CoupledCluster:
    """CCSD(T) on top of a tightly converged RHF, with PySCF's analytic CCSD(T) gradient.

    Closed shells only (PySCF's CCSD(T) gradient is restricted). All electrons are
    correlated (no frozen core), so the forces are the analytic derivative of exactly
    the reported energy.
    """
    from pyscf import cc
    from pyscf.cc import ccsd_t_lambda
    from pyscf.grad import ccsd_t as ccsd_t_grad

    mol = build_mol(atoms, basis, charge, 0)
    if mol.nelectron % 2:
        raise InputError(f"CCSD(T) here needs a closed shell; this molecule has {mol.nelectron} electrons.")
    t0 = time.perf_counter()
    mf = scf.RHF(mol)
    mf.conv_tol = 1e-11
    mf.kernel()
    if not mf.converged:
        mf = scf.RHF(mol).newton()
        mf.conv_tol = 1e-11
        mf.kernel()
    if not mf.converged:
        raise InputError("The Hartree-Fock calculation under CCSD(T) did not converge.")
    mycc = cc.CCSD(mf)
    mycc.conv_tol = 1e-10
    mycc.kernel()
    if not mycc.converged:
        raise InputError("The CCSD amplitude equations did not converge.")
    eris = mycc.ao2mo()
    e_t = mycc.ccsd_t(eris=eris)
    # The (T) gradient needs the CCSD(T) Lagrange multipliers, not the CCSD ones that the plain
    # gradient would solve for (with those the forces were off by ~4 % in a finite-difference test).
    converged, l1, l2 = ccsd_t_lambda.kernel(mycc, eris, mycc.t1, mycc.t2, verbose=0)
    if not converged:
        raise InputError("The CCSD(T) lambda equations did not converge.")
    grad = ccsd_t_grad.Gradients(mycc).kernel(mycc.t1, mycc.t2, l1, l2, eris=eris)
    return CoupledCluster(
        energy=float(mycc.e_tot + e_t),
        forces=-np.asarray(grad) / BOHR,
        hf_energy=float(mf.e_tot),
        seconds=time.perf_counter() - t0,
    )
