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

import concurrent.futures as cf
import contextlib
import datetime
import fcntl
import functools
import multiprocessing
import os
import platform
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
from phisnet.errors import InputError, check_stop
from phisnet.io import read_molecules
from phisnet.md import MDSampler, MDSettings, start_conformers
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


@functools.cache
def _guess_predictor(path: str):
    from phisnet.predictor import load

    return load(path, threads=1)  # a prediction is a small part of an SCF; PySCF has the threads


def _compute(symbols: list[str], positions: np.ndarray, level: dict, threads: int):
    """Worker: one reference calculation; returns plain arrays so it pickles cheaply.

    With ``level["guess_model"]`` the SCF starts from that model's predicted density: the same converged
    answer (to the tolerance) in fewer iterations. The fallback below starts from PySCF's guess.
    """
    from pyscf import lib

    from phisnet.reference import run_dft

    lib.num_threads(threads)
    level = dict(level)
    guess_model = level.pop("guess_model", None)
    atoms = ase.Atoms(symbols, positions=positions)
    dm0 = None
    if guess_model:
        from phisnet.observables import predict_wavefunction  # torch and the model only when a guess is asked for

        try:
            wavefunction = predict_wavefunction(_guess_predictor(guess_model), atoms, charge=level["charge"])
            dm0 = wavefunction.orbitals.density_matrix
        except InputError:  # e.g. no HOMO-LUMO gap in the predicted H: this structure starts from PySCF's guess
            dm0 = None
    if dm0 is not None:
        ref = run_dft(atoms, dm0=dm0, **level)
        ref.guess = "model"
    else:
        ref = run_dft(atoms, **level)
    if not ref.converged:
        # One more try with PySCF's second-order (Newton) solver before giving up on this structure.
        ref = run_dft(atoms, second_order=True, **level)
    return ref


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


def _prepare(db, molecule: str, settings: GenerationSettings, log):
    """The dataset's sampler, a function of the sample index returning (positions, row keys), and its
    metadata; what the sampler starts from (normal modes, MD conformers) is computed and stored once."""
    metadata = dict(db.metadata)
    if metadata.get("settings"):
        _check_resumed_settings(db, metadata, settings)
    else:
        new_metadata = _new_md_metadata if settings.sampler == MD else _new_normal_mode_metadata
        metadata = new_metadata(molecule, settings, log)
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
    if guess_model is not None:
        guess_model = check_guess_model(guess_model, basis, spin, settings.symbols)
    pool = Pool(workers, scheduler, threads, log)
    with _writer_lock(out):
        return _generate_locked(out, molecule, n, settings, pool, progress, log, guess_model)


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
    out: Path, molecule, n: int, settings: GenerationSettings, pool: Pool, progress, log, guess_model=None
) -> Path:
    xc, basis = settings.xc, settings.basis
    # No `with db:` block: ASE would make the whole run one transaction; each write must commit alone.
    db = ase.db.connect(out, type="db", append=True)
    sample, metadata = _prepare(db, molecule, settings, log)
    done = {row.sample_index for row in db.select(include_data=False)}
    failed = set(metadata.get("failed_indices", []))
    if len(done) >= n:
        log(f"{out} already holds {len(done)} structures; nothing to do.")
        return out
    symbols, level = list(settings.symbols), _level(settings, guess_model)
    pending: set[int] = set()
    keys: dict[int, dict] = {}  # the row keys of each structure in flight (the MD snapshot's temperature)
    counter = iter(range(10**9))

    def next_task():
        if len(done) + len(pending) >= n:
            return None
        i = next(k for k in counter if k not in done and k not in failed)
        pending.add(i)
        positions, keys[i] = sample(i)
        return i, (symbols, positions, level)

    def record(i, task_args, ref):
        pending.discard(i)
        _record(db, i, task_args[1], symbols, ref, done, failed, log, **keys.pop(i))
        bar.n = len(done)
        bar.refresh()

    bar = tqdm(total=n, initial=len(done), unit="structure", desc=f"{molecule} {xc}/{basis}", disable=not progress)
    try:
        pool.run(next_task, record)
    finally:
        bar.close()
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
        log(f"Structure {i}: the SCF did not converge; it is skipped and another is drawn.")


# ----------------------------------------------------------------------------- sets of many molecules

SET_FORMAT = "phisnet-dataset-set-1"


@dataclass(frozen=True)
class SetSettings:
    """Everything besides the molecule list that decides the content of a multi-molecule dataset."""

    xc: str = "pbe"
    basis: str = DEFAULT_BASIS
    temperature: float = 500.0
    seed: int = 0
    conformers: int = 3
    conv_tol: float = DATASET_CONV_TOL
    charge: int = 0
    spin: int = 0
    forces: bool = True  # as in GenerationSettings
    minima: int = 0  # the first structures of each molecule: its conformers' minima (see generate_set)

    def to_json(self) -> dict:
        out = _without_default_forces(asdict(self))
        if not out.get("minima"):  # stored only when used, so datasets made before it resume unchanged
            out.pop("minima", None)
        return out


def resolve_molecule_set(molecules) -> list:
    """``"builtin"``, a molecule list file (``phisnet.molecules.read_molecule_list``) or a list of entries."""
    from phisnet.molecules import MoleculeEntry, builtin_molecule_set, read_molecule_list

    if isinstance(molecules, str | os.PathLike):
        return builtin_molecule_set() if str(molecules) == "builtin" else read_molecule_list(molecules)
    entries = list(molecules)
    if not entries or not all(isinstance(e, MoleculeEntry) for e in entries):
        raise InputError("Give the molecules as 'builtin', a molecule list file, or a list of MoleculeEntry.")
    return entries


def generate_set(
    molecules,
    n: int,
    out: str | os.PathLike,
    *,
    conformers: int = 3,
    minima: int = 0,
    temperature: float = 500.0,
    seed: int = 0,
    workers: int = 1,
    scheduler: str | None = None,
    threads: int | None = None,
    xc: str = "pbe",
    basis: str = DEFAULT_BASIS,
    conv_tol: float = DATASET_CONV_TOL,
    forces: bool = True,
    guess_model: str | os.PathLike | None = None,
    progress: bool = True,
    log=print,
) -> Path:
    """Generate (or resume, or extend) a dataset of ``n`` structures for each molecule of a set.

    Each molecule gets up to ``conformers`` force-field conformers (``phisnet.molecules.conformers``);
    structure i of a molecule is a classical harmonic sample at ``temperature`` around conformer
    i mod C, from the force-field normal modes (``phisnet.sampling.force_field_modes``), randomly
    oriented, drawn from a generator seeded with (seed, crc32(name), i). With ``minima`` M, structures
    i < M are instead minima, what a SMILES or an optimised upload looks like: conformer i mod C itself
    (its MMFF94 minimum) for even i // C, its GFN2-xTB minimum (``phisnet.md.xtb_minimum``) for odd
    i // C, randomly oriented with the same generator. The reference calculation is
    at ``xc``/``basis``. Molecules are filled round-robin, so a stopped run holds an even spread.

    Rows carry ``molecule`` (the name), ``sample_index``, ``conformer`` and ``held_out`` (the
    molecule is out-of-distribution: never trained on). The metadata records the settings and, per
    molecule, its spec, split and conformer geometries, so a resumed run samples the same structures
    without recomputing conformers. Rerunning with a longer molecule list or a larger ``n`` extends
    the dataset; a molecule whose spec or split changed is refused.

    Parameters
    ----------
    molecules : ``"builtin"`` (``phisnet.molecules.builtin_molecule_set``), a molecule list file, or a
        list of ``MoleculeEntry``.
    n : structures per molecule.
    workers, scheduler, threads : where the calculations run, see :class:`Pool`.
    forces, guess_model : see :func:`generate`; the model must know every element of the set.
    """
    if conformers < 1:
        raise InputError(f"--conformers must be at least 1, got {conformers}.")
    if not 0 <= minima <= n:
        raise InputError(f"--minima counts structures per molecule, from 0 to --n ({n}); got {minima}.")
    out = _output_database(out, n)
    entries = resolve_molecule_set(molecules)
    settings = SetSettings(
        xc=xc,
        basis=basis,
        temperature=float(temperature),
        seed=seed,
        conformers=conformers,
        conv_tol=conv_tol,
        forces=forces,
        minima=minima,
    )
    pool = Pool(workers, scheduler, threads, log)
    with _writer_lock(out):
        db = ase.db.connect(out, type="db", append=True)
        metadata = _prepare_set(db, entries, settings, log)
        if guess_model is not None:
            symbols = {s for e in entries for s in metadata["molecules"][e.name]["symbols"]}
            guess_model = check_guess_model(guess_model, basis, 0, symbols)
        return _generate_set_locked(db, out, entries, metadata, settings, n, pool, progress, log, guess_model)


def _prepare_set(db, entries, settings: SetSettings, log) -> dict:
    """Check the stored settings and molecules against the request; conformers for new molecules."""
    from phisnet.molecules import conformers

    metadata = dict(db.metadata)
    if metadata and metadata.get("format") != SET_FORMAT:
        raise InputError(
            f"{db.filename} is a single-molecule dataset (phisnet generate MOLECULE); "
            "give a new --out file for a molecule set."
        )
    if metadata:
        _check_resumed_settings(db, metadata, settings)
    else:
        metadata = _new_metadata(
            f"molecule set {settings.xc}/{settings.basis} thermal samples of force-field conformers",
            SET_FORMAT,
            settings,
            "RDKit ETKDG conformers relaxed with MMFF94 (UFF where MMFF lacks parameters); classical "
            "harmonic Boltzmann sampling of the force-field normal modes; random orientation",
            sampling={"conformers": settings.conformers},
            molecules={},
            failed={},
        )
    known = metadata["molecules"]
    new = []
    for entry in entries:
        if entry.name in known:
            stored = known[entry.name]
            if stored["spec"] != entry.spec or stored["held_out"] != entry.held_out:
                raise InputError(
                    f"{db.filename} already holds {entry.name} as {stored['spec']} "
                    f"({'ood' if stored['held_out'] else 'seen'}); the list now says {entry.spec} "
                    f"({'ood' if entry.held_out else 'seen'}). Rename it or use a new --out file."
                )
        else:
            new.append(entry)
    if new:
        log(f"Building force-field conformers for {len(new)} molecules ...")
        for entry in tqdm(new, unit="molecule", desc="conformers", disable=len(new) < 10):
            confs = conformers(entry, settings.conformers)
            known[entry.name] = {
                **entry.to_json(),
                "symbols": confs[0].get_chemical_symbols(),
                "conformers": [c.positions.tolist() for c in confs],
            }
        db.metadata = metadata
    return metadata


def _generate_set_locked(
    db, out, entries, metadata, settings: SetSettings, n, pool, progress, log, guess_model=None
) -> Path:
    import zlib

    from phisnet.molecules import rdkit_molecule
    from phisnet.sampling import force_field_modes

    names = [e.name for e in entries]
    by_name = {e.name: e for e in entries}
    info = metadata["molecules"]
    done: dict[str, set[int]] = {name: set() for name in names}
    for row in db.select(include_data=False):
        if row.get("molecule") in done:
            done[row.molecule].add(row.sample_index)
    failed = {name: set(metadata["failed"].get(name, [])) for name in names}
    pending: dict[str, set[int]] = {name: set() for name in names}
    modes: dict[str, list] = {}
    level = _level(settings, guess_model)
    total = n * len(names)
    have = sum(min(n, len(d)) for d in done.values())
    if have >= total:
        log(f"{out} already holds {n} structures of each of the {len(names)} molecules; nothing to do.")
        return out

    def next_task():
        filled = {name: len(done[name]) + len(pending[name]) for name in names}
        name = min(names, key=lambda m: filled[m])  # least filled first: round-robin
        if filled[name] >= n:
            return None
        i = next(k for k in range(10**9) if k not in done[name] and k not in failed[name] and k not in pending[name])
        if name not in modes:
            mol = rdkit_molecule(by_name[name])
            modes[name] = [force_field_modes(mol, np.asarray(p)) for p in info[name]["conformers"]]
        conformer = i % len(modes[name])
        rng = np.random.default_rng([settings.seed, zlib.crc32(name.encode()), i])
        if i < settings.minima:
            positions = _minimum(info[name], conformer, i // len(modes[name]) % 2 == 1, rng)
        else:
            positions = thermal_sample(modes[name][conformer], settings.temperature, rng)
        pending[name].add(i)
        return (name, i, conformer), (list(info[name]["symbols"]), positions, level)

    def record(key, args, ref):
        name, i, conformer = key
        pending[name].discard(i)
        if ref.converged:
            extra = dict(molecule=name, conformer=conformer, held_out=bool(by_name[name].held_out))
            _write_row(db, i, args[1], args[0], ref, **extra)
            done[name].add(i)
        else:
            failed[name].add(i)
            md = dict(db.metadata)
            md["failed"] = {m: sorted(f) for m, f in failed.items() if f}
            db.metadata = md
            log(f"{name} structure {i}: the SCF did not converge; it is skipped and another is drawn.")
        bar.n = sum(min(n, len(d)) for d in done.values())
        bar.refresh()

    bar = tqdm(total=total, initial=have, unit="structure", desc=f"{len(names)} molecules", disable=not progress)
    try:
        pool.run(next_task, record)
    finally:
        bar.close()
    return out


def _minimum(info: dict, conformer: int, xtb: bool, rng: np.random.Generator) -> np.ndarray:
    """A conformer's MMFF94 minimum (as stored) or its GFN2-xTB minimum, centred and randomly oriented."""
    from scipy.spatial.transform import Rotation

    positions = np.asarray(info["conformers"][conformer], dtype=float)
    if xtb:
        from phisnet.md import xtb_minimum

        positions = xtb_minimum(info["symbols"], positions)
    masses = ase.Atoms(info["symbols"]).get_masses()
    positions = positions - masses @ positions / masses.sum()
    return positions @ Rotation.random(random_state=rng).as_matrix().T


# ----------------------------------------------------------------------------- where the calculations run


class Pool:
    """Runs reference calculations here, in local processes, or on a Dask distributed cluster.

    ``scheduler`` None: ``workers`` local processes (inline when 1). ``"local"``: a Dask
    ``LocalCluster`` of ``workers`` single-threaded worker processes on this machine. Anything
    else: the address of a running Dask scheduler (``tcp://host:8786``), whose workers need the
    same phisnet installation. Whatever runs the calculations, only this process writes the
    database, one transaction per structure, so a run killed at any moment resumes cleanly.
    ``threads``: PySCF threads per calculation (default: the cores divided among the local
    workers; 1 on a Dask cluster, whose workers should be started with ``--nthreads 1``).
    """

    def __init__(self, workers: int = 1, scheduler: str | None = None, threads: int | None = None, log=print):
        if workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}.")
        self.workers, self.scheduler, self.log = workers, scheduler, log
        if threads is None:
            threads = max(1, (os.cpu_count() or 1) // workers) if scheduler is None else 1
        self.threads = threads

    def run(self, next_task, record) -> None:
        """Until ``next_task()`` returns None: compute each ``(key, args)`` and ``record(key, args, result)``.

        ``next_task`` is asked again whenever a slot frees, so it can replace a structure whose
        SCF failed; at most as many calculations are in flight as the pool has workers.
        """
        if self.scheduler is None and self.workers == 1:
            while True:
                check_stop()
                task = next_task()
                if task is None:
                    return
                key, args = task
                record(key, args, _compute(*args, self.threads))
        with self._executor() as (executor, capacity):
            pending: dict[cf.Future, tuple] = {}

            def fill():
                while len(pending) < capacity():
                    task = next_task()
                    if task is None:
                        return
                    key, args = task
                    pending[executor.submit(_compute, *args, self.threads)] = (key, args)

            fill()
            while pending:
                finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                check_stop()
                for future in finished:
                    key, args = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # noqa: BLE001 - a worker process died or PySCF raised
                        raise InputError(
                            f"The calculation of structure {key} failed ({type(exc).__name__}: {str(exc)[:300]}). "
                            "Every structure finished before it is saved; run the same command to resume."
                        ) from exc
                    record(key, args, result)
                fill()

    @contextlib.contextmanager
    def _executor(self):
        if self.scheduler is None:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as pool:
                yield pool, lambda: self.workers
            return
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - distributed is a declared dependency
            raise InputError("--scheduler needs the 'distributed' package (pip install distributed).") from None
        with contextlib.ExitStack() as stack:
            if self.scheduler == "local":
                cluster = stack.enter_context(
                    LocalCluster(
                        n_workers=self.workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                        host="127.0.0.1",
                    )
                )
                client = stack.enter_context(Client(cluster))
                self.log(f"Dask LocalCluster with {self.workers} workers at {cluster.scheduler_address}.")
            else:
                try:
                    client = stack.enter_context(Client(self.scheduler, timeout=30))
                except OSError as exc:
                    raise InputError(f"Could not reach the Dask scheduler at {self.scheduler} ({exc}).") from None
                n = sum(client.nthreads().values())
                self.log(f"Dask scheduler {self.scheduler}: {len(client.nthreads())} workers, {n} threads.")

            def capacity() -> int:  # workers may join or leave while the run goes on
                return max(1, sum(client.nthreads().values()))

            yield client.get_executor(pure=False), capacity


# ----------------------------------------------------------------------------- CCSD(T) labels


def label_ccsd_t(path: str | os.PathLike, n: int | None = None, progress: bool = True, log=print) -> int:
    """Add CCSD(T) energies and forces to the rows of an existing database (resumable).

    Each row gets the key ``ccsd_t_energy`` (eV, like ASE's energy column) and
    ``data["ccsd_t_forces"]`` (eV/Angstrom), written in one transaction per row; rows that
    already have them are skipped, so an interrupted run continues where it stopped. The
    basis and charge are the database's own. ``n`` limits the labelling to the first n rows
    by sample index (all rows when None). A structure whose CCSD(T) does not converge is
    reported and left unlabelled. Returns the number of labelled rows among those asked for.
    """
    from phisnet.reference import run_ccsd_t

    path = Path(path)
    if not path.is_file():
        raise InputError(f"There is no dataset file {path}.")
    with _writer_lock(path):
        db = ase.db.connect(path, type="db")
        settings = dict(db.metadata).get("settings", {})
        basis, charge = settings.get("basis", DEFAULT_BASIS), int(settings.get("charge", 0))
        if int(settings.get("spin", 0)) != 0:
            raise InputError(f"{path} holds open-shell structures; CCSD(T) labels need closed shells.")
        rows = sorted(db.select(include_data=False), key=lambda r: r.get("sample_index", r.id))
        if n is not None:
            rows = rows[:n]
        todo = [row for row in rows if "ccsd_t_energy" not in row]
        failed = 0
        bar = tqdm(
            total=len(rows), initial=len(rows) - len(todo), unit="structure", desc="CCSD(T)", disable=not progress
        )
        try:
            for row in todo:
                try:
                    result = run_ccsd_t(row.toatoms(), basis=basis, charge=charge)
                except InputError as exc:  # one hard geometry must not end a long run: it stays unlabelled
                    log(f"Structure {row.get('sample_index', row.id)}: {exc} It is left without CCSD(T) labels.")
                    failed += 1
                    bar.update(1)
                    continue
                db.update(
                    row.id,
                    ccsd_t_energy=result.energy * HARTREE_EV,
                    ccsd_t_seconds=round(result.seconds, 3),
                    data={"ccsd_t_forces": result.forces * HARTREE_EV},
                )
                bar.update(1)
        finally:
            bar.close()
    return len(rows) - failed


# ----------------------------------------------------------------------------- loading


class HamiltonianDataset:
    """Torch-ready samples of a generated database, in Hartree and Angstrom.

    ``dataset[k]`` is a dict of tensors: ``positions`` (n_atoms, 3) Angstrom,
    ``atomic_numbers`` (n_atoms,), ``hamiltonian`` and ``overlap`` (nao, nao)
    Hartree, ``energy`` () Hartree, ``forces`` (n_atoms, 3) Hartree/Angstrom (NaN in
    datasets made without forces, ``has_forces``), plus ``sample_index``. Rows are held in
    memory, ordered by sample index.
    """

    def __init__(self, path: str | os.PathLike):
        import torch

        path = Path(path)
        if not path.is_file():
            raise InputError(f"There is no dataset file {path}.")
        try:
            db = ase.db.connect(path, type="db")
            self.metadata = dict(db.metadata)
            rows = sorted(db.select(), key=lambda r: (r.get("sample_index", r.id), r.get("molecule", "")))
        except Exception as exc:  # noqa: BLE001 - sqlite and ASE raise many types for foreign files
            raise InputError(f"{path} is not a readable ASE database ({exc}).") from None
        self.path = path
        self.samples = []
        for row in rows:
            if "hamiltonian" not in row.data or "overlap" not in row.data:
                raise InputError(f"Row {row.id} of {path} has no Hamiltonian/overlap data.")
            self.samples.append(
                {
                    "positions": torch.tensor(row.positions, dtype=torch.float64),
                    "atomic_numbers": torch.tensor(row.numbers, dtype=torch.long),
                    "hamiltonian": torch.tensor(row.data["hamiltonian"], dtype=torch.float64),
                    "overlap": torch.tensor(row.data["overlap"], dtype=torch.float64),
                    "energy": torch.tensor(row.energy / HARTREE_EV, dtype=torch.float64),
                    "forces": torch.tensor(
                        row.forces / HARTREE_EV if "forces" in row else np.full((row.natoms, 3), np.nan),
                        dtype=torch.float64,
                    ),
                    "sample_index": int(row.get("sample_index", row.id)),
                }
            )
            if "molecule" in row:  # multi-molecule sets (generate_set)
                self.samples[-1]["molecule"] = row.molecule
                self.samples[-1]["held_out"] = bool(row.get("held_out", False))
            if "ccsd_t_energy" in row:
                self.samples[-1]["ccsd_t_energy"] = torch.tensor(row.ccsd_t_energy / HARTREE_EV, dtype=torch.float64)
                self.samples[-1]["ccsd_t_forces"] = torch.tensor(
                    row.data["ccsd_t_forces"] / HARTREE_EV, dtype=torch.float64
                )

    def __len__(self) -> int:
        return len(self.samples)

    def has_forces(self, indices=None) -> bool:
        """Whether every structure (of ``indices``) carries reference forces."""
        import torch

        chosen = range(len(self.samples)) if indices is None else indices
        return all(bool(torch.isfinite(self.samples[k]["forces"]).all()) for k in chosen)

    def __getitem__(self, k: int) -> dict:
        return self.samples[k]

    def held_out(self) -> list[int]:
        """Positions of the structures of held-out (out-of-distribution) molecules."""
        return [k for k, s in enumerate(self.samples) if s.get("held_out")]

    def split_indices(self, seed: int = 0, train: float | int = 0.8, val: float | int = 0.1) -> dict[str, list[int]]:
        """Deterministic train/val/test positions into this dataset; see :func:`split_indices`.

        Structures of held-out molecules are in none of these: they form ``test_ood`` (present
        only when the dataset has any), and ``train``/``val`` fractions count the other structures.
        """
        ood = set(self.held_out())
        if not ood:
            return split_indices(len(self), seed=seed, train=train, val=val)
        seen = [k for k in range(len(self)) if k not in ood]
        parts = split_indices(len(seen), seed=seed, train=train, val=val)
        out = {name: [seen[k] for k in members] for name, members in parts.items()}
        out["test_ood"] = sorted(ood)
        return out

    def n_seen(self) -> int:
        """Structures of molecules that are not held out: what train/val fractions count."""
        return len(self) - len(self.held_out())

    def split(self, name: str, seed: int = 0, train: float | int = 0.8, val: float | int = 0.1):
        """A ``torch.utils.data.Subset`` for ``name`` in {"train", "val", "test"} (and "test_ood")."""
        from torch.utils.data import Subset

        parts = self.split_indices(seed, train, val)
        if name not in parts:
            raise ValueError(f"split must be one of {sorted(parts)}, got {name!r}")
        return Subset(self, parts[name])


def sample_atoms(sample: dict) -> ase.Atoms:
    """The geometry of a :class:`HamiltonianDataset` sample as ``ase.Atoms`` (Angstrom)."""
    return ase.Atoms(sample["atomic_numbers"].numpy(), positions=sample["positions"].numpy())


def split_indices(n: int, seed: int = 0, train: float | int = 0.8, val: float | int = 0.1) -> dict[str, list[int]]:
    """Random disjoint train/val/test index lists, deterministic for a seed.

    ``train`` and ``val`` are fractions when below 1, counts otherwise; the test
    split gets the rest.
    """
    n_train = int(round(train * n)) if isinstance(train, float) and train < 1 else int(train)
    n_val = int(round(val * n)) if isinstance(val, float) and val < 1 else int(val)
    if n_train < 0 or n_val < 0 or n_train + n_val > n:
        raise InputError(f"Cannot split {n} structures into {n_train} for training and {n_val} for validation.")
    order = np.random.default_rng(seed).permutation(n).tolist()
    return {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
