"""Datasets of many molecules (``phisnet generate --molecules``): conformers, minima, thermal samples.

The row format and crash safety are those of :mod:`phisnet.data`; each row also carries its molecule's name.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import ase
import ase.db
import numpy as np
from tqdm.auto import tqdm

from phisnet.basis import DEFAULT_BASIS
from phisnet.data import (
    DATASET_CONV_TOL,
    _check_resumed_settings,
    _level,
    _new_metadata,
    _output_database,
    _without_default_forces,
    _write_row,
    _writer_lock,
    check_guess_model,
)
from phisnet.errors import InputError
from phisnet.pool import Pool
from phisnet.sampling import thermal_sample

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
    fill = _SetFill(db, entries, metadata, settings, n, _level(settings, guess_model), log)
    total = n * len(fill.names)
    if fill.count() >= total:
        log(f"{out} already holds {n} structures of each of the {len(fill.names)} molecules; nothing to do.")
        return out
    fill.bar = tqdm(
        total=total, initial=fill.count(), unit="structure", desc=f"{len(fill.names)} molecules", disable=not progress
    )
    try:
        pool.run(fill.next_task, fill.record)
    finally:
        fill.bar.close()
    return out


class _SetFill:
    """Which structure of which molecule a molecule set computes next, and what came back.

    Molecules fill round-robin (the least filled first); a structure index is drawn once: done rows
    (from the database), failed ones (in its metadata) and those in flight are never drawn again, and
    every structure is a function of (seed, molecule, index), so a resumed run adds the same rows.
    """

    def __init__(self, db, entries, metadata, settings: SetSettings, n: int, level, log):
        self.db, self.settings, self.n, self.level, self.log = db, settings, n, level, log
        self.names = [e.name for e in entries]
        self.by_name = {e.name: e for e in entries}
        self.info = metadata["molecules"]
        self.done: dict[str, set[int]] = {name: set() for name in self.names}
        for row in db.select(include_data=False):
            if row.get("molecule") in self.done:
                self.done[row.molecule].add(row.sample_index)
        self.failed = {name: set(metadata["failed"].get(name, [])) for name in self.names}
        self.pending: dict[str, set[int]] = {name: set() for name in self.names}
        self.modes: dict[str, list] = {}
        self.bar = None

    def count(self) -> int:
        return sum(min(self.n, len(d)) for d in self.done.values())

    def next_task(self):
        filled = {name: len(self.done[name]) + len(self.pending[name]) for name in self.names}
        name = min(self.names, key=lambda m: filled[m])
        if filled[name] >= self.n:
            return None
        taken = self.done[name] | self.failed[name] | self.pending[name]
        i = next(k for k in range(10**9) if k not in taken)
        conformer = i % len(self._modes(name))
        self.pending[name].add(i)
        return (name, i, conformer), (list(self.info[name]["symbols"]), self._positions(name, i, conformer), self.level)

    def _modes(self, name: str) -> list:
        from phisnet.molecules import rdkit_molecule
        from phisnet.sampling import force_field_modes

        if name not in self.modes:
            mol = rdkit_molecule(self.by_name[name])
            self.modes[name] = [force_field_modes(mol, np.asarray(p)) for p in self.info[name]["conformers"]]
        return self.modes[name]

    def _positions(self, name: str, i: int, conformer: int) -> np.ndarray:
        import zlib

        rng = np.random.default_rng([self.settings.seed, zlib.crc32(name.encode()), i])
        if i < self.settings.minima:
            return _minimum(self.info[name], conformer, i // len(self._modes(name)) % 2 == 1, rng)
        return thermal_sample(self._modes(name)[conformer], self.settings.temperature, rng)

    def record(self, key, args, ref) -> None:
        name, i, conformer = key
        self.pending[name].discard(i)
        if ref.converged:
            extra = dict(molecule=name, conformer=conformer, held_out=bool(self.by_name[name].held_out))
            _write_row(self.db, i, args[1], args[0], ref, **extra)
            self.done[name].add(i)
        else:
            self.failed[name].add(i)
            md = dict(self.db.metadata)
            md["failed"] = {m: sorted(f) for m, f in self.failed.items() if f}
            self.db.metadata = md
            self.log(f"{name} structure {i}: the SCF did not converge; it is skipped and another is drawn.")
        self.bar.n = self.count()
        self.bar.refresh()


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
