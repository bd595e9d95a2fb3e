"""CCSD(T) energies and forces added to the rows of an existing dataset (``phisnet ccsdt``)."""

from __future__ import annotations

import os
from pathlib import Path

import ase
import ase.db
from tqdm.auto import tqdm

from phisnet.basis import DEFAULT_BASIS
from phisnet.data import _writer_lock
from phisnet.errors import InputError
from phisnet.reference import HARTREE_EV

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
