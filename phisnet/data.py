"""Datasets of (geometry, H, S, energy, forces) in ASE databases, and their generation.

Format (SchNOrb-style, readable with ``ase db FILE.db``): one row per structure,
``data={"hamiltonian": (nao, nao), "overlap": (nao, nao)}`` in Hartree, and on the
row the key ``sample_index`` plus energy and forces in ASE's units (eV, eV/Angstrom)
so that ``ase db`` shows them correctly. :class:`HamiltonianDataset` converts them
back to Hartree and Hartree/Angstrom. The database metadata holds the level of
theory, basis, sampling settings, library versions, the optimised structure and its
normal modes.

Crash safety: every row is written in one SQLite transaction by the parent process
only; a restarted run with the same settings skips the sample indices already present,
so it ends with exactly N distinct rows. Structure i is drawn from a random generator
seeded with (seed, i), so a restart reproduces the same geometries.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import ase
import ase.db
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols
from tqdm.auto import tqdm

import phisnet
from phisnet.basis import DEFAULT_BASIS
from phisnet.errors import InputError
from phisnet.io import read_molecules
from phisnet.md import MDSampler, MDSettings, start_conformers
from phisnet.pool import Pool
from phisnet.reference import HARTREE_EV
from phisnet.sampling import NormalModes, normal_modes, optimise, thermal_sample

#: The geometry samplers of ``phisnet generate --sampler``.
NORMAL_MODES, MD = "normal-modes", "md"
SAMPLERS = (NORMAL_MODES, MD)

#: Tight SCF tolerance for training data: the Fock matrix is then converged far below 1 uHa noise.
DATASET_CONV_TOL = 1e-11


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides the content of a generated dataset."""

    molecule: str
    symbols: tuple[str, ...]
    xc: str = "pbe"
    basis: str = DEFAULT_BASIS
    charge: int = 0
    spin: int = 0
    temperature: float = 500.0
    seed: int = 0
    conv_tol: float = DATASET_CONV_TOL
    forces: bool = True  # False: no analytic forces (H and S training data; about 40 % of a calculation)
    sampler: str = NORMAL_MODES  # or MD (phisnet.md)
    md: MDSettings | None = None  # the MD sampler's settings (MDSettings() when sampler is MD and none given)

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise InputError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}.")
        if self.sampler == MD and self.md is None:
            object.__setattr__(self, "md", MDSettings())
        if self.sampler != MD and self.md is not None:
            raise InputError("MD settings were given for a normal-mode dataset; use --sampler md.")

    def to_json(self) -> dict:
        d = _without_default_forces(asdict(self))
        d["symbols"] = list(self.symbols)
        if self.sampler == NORMAL_MODES:  # as stored before the MD sampler, so those datasets resume unchanged
            d.pop("sampler")
            d.pop("md")
        return d

    @classmethod
    def from_json(cls, d: dict) -> GenerationSettings:
        """The settings ``to_json`` wrote (a dataset's metadata, a checkpoint's record of its data)."""
        md = d.get("md")
        return cls(**{**d, "symbols": tuple(d["symbols"]), "md": MDSettings(**md) if md else None})


def _without_default_forces(settings: dict) -> dict:
    """Settings as stored: ``forces`` only when off, so datasets made before the option resume unchanged."""
    if settings.get("forces", True):
        settings.pop("forces", None)
    return settings


def library_versions() -> dict[str, str]:
    import pyscf
    import scipy

    return {
        "phisnet": phisnet.__version__,
        "pyscf": pyscf.__version__,
        "ase": ase.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


def sample_positions(modes: NormalModes, settings: GenerationSettings, index: int) -> np.ndarray:
    """Positions (Angstrom) of structure ``index``: deterministic in (seed, index)."""
    rng = np.random.default_rng([settings.seed, index])
    return thermal_sample(modes, settings.temperature, rng)


def _level(settings, guess_model: str | None = None) -> dict:
    """What a worker needs to run one reference calculation (plain data, pickles anywhere)."""
    return dict(
        xc=settings.xc,
        basis=settings.basis,
        charge=settings.charge,
        spin=settings.spin,
        conv_tol=settings.conv_tol,
        forces=settings.forces,
        guess_model=guess_model,
    )


def check_guess_model(path, basis: str, spin: int, symbols) -> str:
    """The absolute path of a model whose predicted density can start the SCF of these calculations.

    Refused with InputError: a file that is not a model, another basis (the density matrix would not
    fit), an open shell (the predicted density is closed shell), or an element the model does not know.
    """
    from phisnet.predictor import load

    predictor = load(path)
    model_basis = predictor.info.basis
    if model_basis.lower() != basis.lower():
        raise InputError(f"--guess-model {path} predicts in {model_basis}; these calculations use {basis}.")
    if spin:
        raise InputError("--guess-model gives a closed-shell density; it cannot start a calculation with --spin.")
    missing = sorted(set(symbols) - {chemical_symbols[z] for z in predictor.elements})
    if missing:
        known = ", ".join(chemical_symbols[z] for z in predictor.elements)
        raise InputError(f"--guess-model {path} was not trained on {', '.join(missing)}; it knows {known}.")
    return str(Path(path).resolve())


def _write_row(db, index: int, positions: np.ndarray, symbols: list[str], ref, **keys) -> None:
    atoms = ase.Atoms(symbols, positions=positions)
    results = {"energy": ref.energy * HARTREE_EV}
    if np.isfinite(ref.forces).all():  # not computed for datasets made without forces
        results["forces"] = ref.forces * HARTREE_EV
    atoms.calc = SinglePointCalculator(atoms, **results)
    db.write(
        atoms,
        sample_index=index,
        n_iterations=ref.n_iterations,
        scf_seconds=round(ref.seconds, 4),
        guess=ref.guess,
        **keys,
        data={"hamiltonian": ref.hamiltonian, "overlap": ref.overlap},
    )


def _check_resumed_settings(db, metadata: dict, settings) -> None:
    """Refuse to resume a database made with other settings, naming each that differs (either side missing
    counts: a dataset made without forces must not be resumed with them)."""
    stored, wanted = metadata["settings"], settings.to_json()
    diff = [k for k in dict.fromkeys([*wanted, *stored]) if stored.get(k) != wanted.get(k)]
    if diff:
        raise InputError(
            f"{db.filename} was made with other settings ({', '.join(diff)} differ); "
            "use the same settings to resume it, or a new --out file."
        )


def _new_metadata(title: str, fmt: str, settings, method: str, sampling: dict | None = None, **extra) -> dict:
    """Metadata of a new dataset: what it is, how its structures were sampled (``method`` and ``sampling``
    beside the temperature and seed), units, library versions; ``extra`` adds top-level entries."""
    return {
        "title": title,
        "format": fmt,
        "level_of_theory": settings.xc,
        "basis": settings.basis,
        "settings": settings.to_json(),
        "sampling": {
            "method": method,
            "temperature_K": settings.temperature,
            "seed": settings.seed,
            **(sampling or {"min_wavenumber_cm1": 50.0}),
        },
        "units": {"hamiltonian": "Hartree", "energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"},
        "versions": library_versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def _prepare(db, settings: GenerationSettings, log, subset: dict | None = None):
    """The dataset's sampler, a function of the sample index returning (positions, row keys), and its
    metadata; what the sampler starts from (normal modes, MD conformers) is computed and stored once.
    ``subset``: what a file holding only some rows of a dataset records about them (``phisnet.split_rebuild``)."""
    metadata = dict(db.metadata)
    if metadata.get("settings"):
        _check_resumed_settings(db, metadata, settings)
        if metadata.get("subset") != subset:
            raise InputError(f"{db.filename} holds other rows of these settings; use a new --out file.")
    else:
        new_metadata = _new_md_metadata if settings.sampler == MD else _new_normal_mode_metadata
        metadata = new_metadata(settings.molecule, settings, log)
        if subset is not None:
            metadata["subset"] = subset
        db.metadata = metadata
    if settings.sampler == MD:
        sampler = MDSampler(
            list(settings.symbols),
            [np.asarray(c, dtype=float) for c in metadata["md_conformers"]],
            settings.md,
            settings.temperature,
            settings.seed,
            settings.charge,
            settings.spin,
        )

        def md_sample(i: int):
            positions, temperature = sampler.snapshot(i)
            return positions, {"kinetic_temperature_K": round(temperature, 2)}

        return md_sample, metadata
    modes = NormalModes.from_json(metadata["normal_modes"])
    return (lambda i: (sample_positions(modes, settings, i), {})), metadata


def _new_normal_mode_metadata(molecule: str, settings: GenerationSettings, log) -> dict:
    atoms = read_molecules(molecule, charge=settings.charge, spin=settings.spin, basis=settings.basis)[0]
    log(f"Optimising {molecule} at {settings.xc}/{settings.basis} with geomeTRIC ...")
    atoms = optimise(atoms, settings.xc, settings.basis, settings.charge, settings.spin)
    log("Computing the analytic Hessian and normal modes ...")
    modes = normal_modes(atoms, settings.xc, settings.basis, settings.charge, settings.spin)
    return _new_metadata(
        f"{molecule} {settings.xc}/{settings.basis} thermal normal-mode samples",
        "phisnet-dataset-1",
        settings,
        "classical harmonic Boltzmann sampling of normal modes, random orientation",
        normal_modes=modes.to_json(),
        failed_indices=[],
    )


def _new_md_metadata(molecule: str, settings: GenerationSettings, log) -> dict:
    atoms = read_molecules(molecule, charge=settings.charge, spin=settings.spin, basis=settings.basis)[0]
    md = settings.md
    starts = start_conformers(atoms, md.conformers)
    log(f"{len(starts)} starting conformer(s) of {molecule}: GFN2-xTB Langevin dynamics at {settings.temperature} K.")
    return _new_metadata(
        f"{molecule} {settings.xc}/{settings.basis} snapshots of {settings.temperature:g} K GFN2-xTB dynamics",
        "phisnet-dataset-1",
        settings,
        f"Langevin molecular dynamics (ASE, fixcm=False) driven by {md.engine} (tblite); trajectory b starts from "
        "conformer b mod n_conformers with Maxwell-Boltzmann velocities and its random numbers from (seed, b), "
        f"is equilibrated {md.equilibration_fs:g} fs and keeps {md.block} snapshots {md.spacing_fs:g} fs apart",
        {"engine": md.engine, **md.to_json(), "n_conformers": len(starts)},
        md_conformers=[c.tolist() for c in starts],
        failed_indices=[],
    )


def generate(
    molecule: str,
    n: int,
    out: str | os.PathLike,
    *,
    temperature: float = 500.0,
    seed: int = 0,
    workers: int = 1,
    scheduler: str | None = None,
    threads: int | None = None,
    xc: str = "pbe",
    basis: str = DEFAULT_BASIS,
    charge: int = 0,
    spin: int = 0,
    conv_tol: float = DATASET_CONV_TOL,
    forces: bool = True,
    guess_model: str | os.PathLike | None = None,
    sampler: str = NORMAL_MODES,
    md: MDSettings | None = None,
    progress: bool = True,
    log=print,
) -> Path:
    """Generate (or resume) a dataset of ``n`` thermally sampled structures.

    Parameters
    ----------
    molecule : a name, SMILES or file that ``phisnet.io.read_molecules`` reads (first frame).
    n : number of rows the finished database holds.
    out : path of the ASE SQLite database (``.db``).
    temperature : sampling temperature in K.
    seed : seed of the sampling; structure i uses the generator seeded with (seed, i).
    workers : parallel processes for the reference calculations (Dask workers with ``scheduler="local"``).
    scheduler : None (local processes), ``"local"`` (a Dask LocalCluster) or a Dask scheduler address.
    threads : PySCF threads per calculation; see :class:`Pool`.
    xc, basis, charge, spin : level of theory (``xc="hf"`` for Hartree-Fock).
    conv_tol : SCF energy tolerance in Hartree.
    forces : compute analytic forces; without them (about 40 % of each calculation) the rows hold H, S
        and the energy, enough for training H and S.
    guess_model : a model checkpoint whose predicted density starts every SCF (``check_guess_model``):
        the same answers in fewer iterations. Not part of the settings: a run may resume with or
        without it. Rows record ``guess`` (``model`` or ``minao``).
    sampler : ``"normal-modes"`` (harmonic Boltzmann samples around the optimised structure) or ``"md"``
        (snapshots of GFN2-xTB Langevin dynamics at ``temperature`` from several conformers; ``phisnet.md``;
        rows record ``kinetic_temperature_K``).
    md : the MD sampler's settings (``MDSettings()`` by default).

    Returns
    -------
    The path of the database, holding exactly ``n`` rows.
    """
    out = _output_database(out, n)
    first = read_molecules(molecule, charge=charge, spin=spin, basis=basis)[0]
    if len(first) < 2:
        raise InputError(
            f"{first.get_chemical_formula()} is a single atom: it has no vibrations to sample; "
            "give a molecule of two or more atoms."
        )
    settings = GenerationSettings(
        molecule=str(molecule),
        symbols=tuple(first.get_chemical_symbols()),
        xc=xc,
        basis=basis,
        charge=charge,
        spin=spin,
        temperature=float(temperature),
        seed=seed,
        conv_tol=conv_tol,
        forces=forces,
        sampler=sampler,
        md=md,
    )
    run = _Run(Pool(workers, scheduler, threads, log), _guess(guess_model, settings), progress, log)
    with _writer_lock(out):
        return _generate_locked(out, n, settings, run)


def generate_rows(
    settings: GenerationSettings,
    indices: list[int],
    out: str | os.PathLike,
    subset: dict,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    threads: int | None = None,
    guess_model: str | os.PathLike | None = None,
    progress: bool = True,
    log=print,
) -> Path:
    """Generate (or resume) only the structures ``indices`` of the dataset that ``settings`` describe.

    Each row is the one the whole dataset holds at that sample index (structure i depends on (seed, i) alone), so
    a file of a few rows costs what those rows cost. ``subset`` goes into the metadata (what the rows are);
    a structure whose SCF does not converge is not replaced by another (it would not be the dataset's row):
    InputError after the others are written. The other arguments are those of :func:`generate`.
    """
    out = _output_database(out, len(indices))
    run = _Run(Pool(workers, scheduler, threads, log), _guess(guess_model, settings), progress, log)
    with _writer_lock(out):
        return _generate_locked(out, len(indices), settings, run, sorted(indices), subset)


@dataclass(frozen=True)
class _Run:
    """How a generation runs (not what it makes): workers, the guess model's path, progress bar, log."""

    pool: Pool
    guess_model: str | None
    progress: bool
    log: Callable[[str], None]


def _guess(guess_model, settings: GenerationSettings) -> str | None:
    if guess_model is None:
        return None
    return check_guess_model(guess_model, settings.basis, settings.spin, settings.symbols)


def _output_database(out: str | os.PathLike, n: int) -> Path:
    """Check the row count and the output name of a generation run; create the output's folder."""
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}.")
    out = Path(out)
    if out.suffix != ".db":
        raise InputError(f"The output must be an ASE SQLite database ending in .db, got {out.name}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def _writer_lock(out: Path):
    """One writer per database: a second run on the same file would compute the same structures and
    write them twice. The lock is the kernel's (flock), released however the process ends. Its name
    is not ASE's own "<db>.lock", which ASE takes around every write."""
    lock = open(out.with_name(out.name + ".generate.lock"), "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise InputError(f"Another phisnet command is writing {out}; wait for it to finish or stop it first.") from None
    try:
        yield
    finally:
        lock.close()


def _generate_locked(
    out: Path, n: int, settings: GenerationSettings, run: _Run, indices: list[int] | None = None, subset=None
) -> Path:
    """Fill ``out`` to ``n`` rows: the first sample indices that converge, or exactly ``indices``."""
    xc, basis, log = settings.xc, settings.basis, run.log
    # No `with db:` block: ASE would make the whole run one transaction; each write must commit alone.
    db = ase.db.connect(out, type="db", append=True)
    sample, metadata = _prepare(db, settings, log, subset)
    done = {row.sample_index for row in db.select(include_data=False)}
    # A whole dataset draws the next index for one that failed; a fixed list tries its failed rows again.
    failed = set(metadata.get("failed_indices", [])) if indices is None else set()
    if len(done) >= n:
        log(f"{out} already holds {len(done)} structures; nothing to do.")
        return out
    symbols, level = list(settings.symbols), _level(settings, run.guess_model)
    pending: set[int] = set()
    keys: dict[int, dict] = {}  # the row keys of each structure in flight (the MD snapshot's temperature)
    counter = iter(range(10**9) if indices is None else indices)

    def next_task():
        if len(done) + len(pending) >= n:
            return None
        i = next((k for k in counter if k not in done and k not in failed), None)
        if i is None:  # a fixed list of rows, some of which did not converge
            return None
        pending.add(i)
        positions, keys[i] = sample(i)
        return i, (symbols, positions, level)

    def record(i, task_args, ref):
        pending.discard(i)
        _record(db, i, task_args[1], symbols, ref, done, failed, log, **keys.pop(i))
        bar.n = len(done)
        bar.refresh()

    description = f"{settings.molecule} {xc}/{basis}"
    bar = tqdm(total=n, initial=len(done), unit="structure", desc=description, disable=not run.progress)
    try:
        run.pool.run(next_task, record)
    finally:
        bar.close()
    missing = sorted(set(indices or ()) - done)
    if missing:
        raise InputError(
            f"The SCF of structure(s) {', '.join(map(str, missing))} did not converge, so {out} lacks them; "
            "run the command again to retry them (with another --guess-model, or none)."
        )
    return out


def _record(db, i, positions, symbols, ref, done: set, failed: set, log, **keys) -> None:
    if ref.converged:
        _write_row(db, i, positions, symbols, ref, **keys)
        done.add(i)
    else:
        failed.add(i)
        metadata = dict(db.metadata)
        metadata["failed_indices"] = sorted(failed)
        db.metadata = metadata
        log(f"Structure {i}: the SCF did not converge; it is skipped.")
