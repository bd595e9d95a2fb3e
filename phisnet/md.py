"""Molecular-dynamics sampling: Langevin dynamics at a temperature, driven by GFN2-xTB.

MD17, the paper's benchmark, sampled each molecule from a 500 K molecular-dynamics trajectory, so
its geometries hold torsions, other rotamers and anharmonic motion that normal-mode sampling around
one minimum never reaches. Here GFN2-xTB (``tblite``'s ASE calculator, milliseconds a step) drives
ASE's Langevin integrator; the PySCF labels of the snapshots stay at the dataset's level of theory.

Determinism: the snapshots form blocks of ``block`` each, and block b is one independent short
trajectory started from conformer ``b mod n_conformers`` with Maxwell-Boltzmann velocities, its
random numbers drawn from a generator seeded with (seed, b). It is equilibrated for
``equilibration_fs`` and then keeps one snapshot every ``spacing_fs``. Snapshot i is therefore a
function of (seed, i) alone: a run killed at any moment and resumed computes the same geometries.
xTB runs on one OpenMP thread here, because its sums differ in the last bits with the thread count
and a trajectory amplifies any difference.

ASE's ``Langevin(..., fixcm=True)`` does not sample the canonical distribution of a small molecule,
so the centre of mass is left free (``fixcm=False``) and the stored snapshots are moved to put it at
the origin instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import ase
import numpy as np

from phisnet.errors import InputError

#: GFN2-xTB energy window (kcal/mol) above the lowest conformer for a conformer to start trajectories:
#: a few kT at 500 K (kT = 1.0 kcal/mol), so higher rotamers that the molecule would not visit
#: at the temperature (malondialdehyde without its hydrogen bond, 9 kcal/mol up in xTB) are left out.
CONFORMER_WINDOW_KCAL = 4.0
#: Conformers closer than this all-atom RMSD (Angstrom, best alignment) count as one.
CONFORMER_RMSD = 0.3


@dataclass(frozen=True)
class MDSettings:
    """Everything besides temperature and seed that decides the snapshots of an MD-sampled dataset.

    Attributes
    ----------
    engine : the force field of the dynamics (``GFN2-xTB`` through tblite).
    timestep_fs : integration time step, fs.
    friction_per_fs : Langevin friction, 1/fs (1/friction is the thermostat's time constant).
    spacing_fs : time between kept snapshots, fs.
    equilibration_fs : time run before the first kept snapshot of each trajectory, fs.
    block : snapshots per independent trajectory.
    conformers : most RDKit conformers that start trajectories (fewer when the molecule has fewer).
    """

    engine: str = "GFN2-xTB"
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    spacing_fs: float = 100.0
    equilibration_fs: float = 1000.0
    block: int = 20
    conformers: int = 3

    def __post_init__(self):
        if self.engine != "GFN2-xTB":
            raise InputError(f"The MD engine must be GFN2-xTB (tblite), got {self.engine!r}.")
        for name in ("timestep_fs", "friction_per_fs", "spacing_fs"):
            if not getattr(self, name) > 0:
                raise InputError(f"The MD {name.replace('_', ' ')} must be positive, got {getattr(self, name)}.")
        if self.equilibration_fs < 0:
            raise InputError(f"The MD equilibration must be 0 fs or more, got {self.equilibration_fs}.")
        if self.block < 1 or self.conformers < 1:
            raise InputError("The MD block and the number of conformers must be at least 1.")
        if self.spacing_fs < self.timestep_fs:
            raise InputError(f"--md-spacing {self.spacing_fs} fs is shorter than the time step {self.timestep_fs} fs.")

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def steps_between(self) -> int:
        return max(1, round(self.spacing_fs / self.timestep_fs))

    @property
    def equilibration_steps(self) -> int:
        return round(self.equilibration_fs / self.timestep_fs)


@dataclass
class MDBlock:
    """The snapshots of one trajectory.

    Attributes
    ----------
    positions : (block, n_atoms, 3) Angstrom, centre of mass at the origin.
    temperatures : (block,) instantaneous kinetic temperature of each snapshot, K (3N degrees of freedom).
    energies : (block,) GFN2-xTB potential energy of each snapshot, eV.
    """

    positions: np.ndarray
    temperatures: np.ndarray
    energies: np.ndarray


def start_conformers(atoms: ase.Atoms, n: int, seed: int = 0x5EED) -> list[np.ndarray]:
    """Up to ``n`` distinct starting structures in the atom order of ``atoms``: ``atoms`` itself first,
    then RDKit ETKDG conformers relaxed with MMFF94, lowest GFN2-xTB energy first, each within
    ``CONFORMER_WINDOW_KCAL`` of the lowest (xTB, at the MMFF geometries) and ``CONFORMER_RMSD`` apart
    from every one kept.

    Bonds are perceived from the geometry (RDKit's ``DetermineBonds``), so any input whose structure
    is a sensible molecule works, whatever its source.

    Returns
    -------
    list of (n_atoms, 3) positions in Angstrom.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdMolAlign

    from phisnet.molecules import force_field_relax, rdkit_from_atoms

    charge, spin = int(atoms.info.get("charge", 0) or 0), int(atoms.info.get("spin", 0) or 0)
    mol = rdkit_from_atoms(atoms, charge)
    input_id = 10_000  # the embedded conformers take ids from 0
    mol.GetConformer().SetId(input_id)
    embedded = Chem.Mol(mol)
    embedded.RemoveAllConformers()
    ids = list(AllChem.EmbedMultipleConfs(embedded, numConfs=30, randomSeed=seed)) if len(atoms) > 2 else []
    if ids:
        force_field_relax(embedded, ids)
    for cid in ids:
        mol.AddConformer(embedded.GetConformer(cid), assignId=False)
    energies = {cid: _xtb_energy(atoms.numbers, mol.GetConformer(cid).GetPositions(), charge, spin) for cid in ids}
    lowest = min([*energies.values(), _xtb_energy(atoms.numbers, atoms.positions, charge, spin)])
    window = CONFORMER_WINDOW_KCAL * _EV_PER_KCAL
    candidates = [input_id] + sorted((c for c in ids if energies[c] - lowest <= window), key=energies.get)
    kept: list[int] = []
    for cid in candidates:
        if all(rdMolAlign.GetBestRMS(mol, mol, prbId=cid, refId=k) > CONFORMER_RMSD for k in kept):
            kept.append(cid)
        if len(kept) == n:
            break
    return [mol.GetConformer(cid).GetPositions() for cid in kept]


_EV_PER_KCAL = 0.0433641


def _xtb_energy(numbers, positions: np.ndarray, charge: int, spin: int) -> float:
    """GFN2-xTB energy (eV) of one structure."""
    from threadpoolctl import threadpool_limits

    atoms = ase.Atoms(numbers, positions=positions)
    atoms.calc = xtb_calculator(charge, spin)
    with threadpool_limits(limits=1):
        return float(atoms.get_potential_energy())


def xtb_minimum(symbols, positions: np.ndarray, charge: int = 0, spin: int = 0, fmax: float = 0.01) -> np.ndarray:
    """The GFN2-xTB minimum (Angstrom) reached by ASE's BFGS from ``positions``, to ``fmax`` eV/Angstrom."""
    from ase.optimize import BFGS
    from threadpoolctl import threadpool_limits

    atoms = ase.Atoms(symbols, positions=positions)
    atoms.calc = xtb_calculator(charge, spin)
    with threadpool_limits(limits=1):
        BFGS(atoms, logfile=None).run(fmax=fmax, steps=500)
    return atoms.positions.copy()


def run_block(
    symbols: list[str],
    start: np.ndarray,
    settings: MDSettings,
    temperature: float,
    seed: int,
    block: int,
    charge: int = 0,
    spin: int = 0,
) -> MDBlock:
    """Trajectory ``block``: equilibrate from ``start`` at ``temperature`` (K), then keep ``settings.block``
    snapshots ``settings.spacing_fs`` apart. Deterministic in (start, settings, temperature, seed, block)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta
    from threadpoolctl import threadpool_limits

    if temperature <= 0:
        raise InputError(f"--temperature must be positive for MD sampling, got {temperature} K.")
    rng = np.random.default_rng([seed, block])
    atoms = ase.Atoms(symbols, positions=start)
    atoms.calc = xtb_calculator(charge, spin)
    thermalize_momenta(atoms, temperature, rng=rng)
    dyn = Langevin(
        atoms,
        settings.timestep_fs * units.fs,
        temperature_K=temperature,
        friction=settings.friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )
    positions, temperatures, energies = [], [], []
    with threadpool_limits(limits=1):
        dyn.run(settings.equilibration_steps)
        for _ in range(settings.block):
            dyn.run(settings.steps_between)
            masses = atoms.get_masses()
            positions.append(atoms.positions - masses @ atoms.positions / masses.sum())
            temperatures.append(atoms.get_temperature())
            energies.append(atoms.get_potential_energy())
    return MDBlock(np.array(positions), np.array(temperatures), np.array(energies))


def xtb_calculator(charge: int = 0, spin: int = 0):
    """tblite's GFN2-xTB ASE calculator, quiet, for a molecule of this charge and ``spin`` unpaired electrons."""
    try:
        from tblite.ase import TBLite
    except ImportError:  # pragma: no cover - tblite is a declared dependency
        raise InputError("MD sampling needs tblite (pip install tblite).") from None
    return TBLite(method="GFN2-xTB", charge=charge, multiplicity=spin + 1, verbosity=0)


class MDSampler:
    """Snapshot i of an MD-sampled dataset, computing (and keeping) the trajectory block it belongs to."""

    def __init__(
        self,
        symbols: list[str],
        conformers: list[np.ndarray],
        settings: MDSettings,
        temperature: float,
        seed: int,
        charge: int = 0,
        spin: int = 0,
    ):
        if not conformers:
            raise InputError("MD sampling needs at least one starting structure.")
        self.symbols, self.conformers, self.settings = list(symbols), [np.asarray(c) for c in conformers], settings
        self.temperature, self.seed, self.charge, self.spin = temperature, seed, charge, spin
        self._blocks: dict[int, MDBlock] = {}

    def block(self, b: int) -> MDBlock:
        if b not in self._blocks:
            if len(self._blocks) >= 4:  # a run moves forward through the blocks; keep only the recent ones
                self._blocks.pop(min(self._blocks))
            start = self.conformers[b % len(self.conformers)]
            self._blocks[b] = run_block(
                self.symbols, start, self.settings, self.temperature, self.seed, b, self.charge, self.spin
            )
        return self._blocks[b]

    def snapshot(self, i: int) -> tuple[np.ndarray, float]:
        """Positions (n_atoms, 3; Angstrom) and kinetic temperature (K) of snapshot ``i``."""
        b, k = divmod(i, self.settings.block)
        block = self.block(b)
        return block.positions[k], float(block.temperatures[k])
