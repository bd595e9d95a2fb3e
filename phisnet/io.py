"""Reading and validating molecules: files, text, SMILES and names.

Every problem with the input becomes one :class:`phisnet.InputError` whose
message says what is wrong, where (line, atom) and what is allowed.
"""

from __future__ import annotations

import io as _io
import math
import os
import tempfile
from pathlib import Path

import ase
import ase.io
import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from phisnet.basis import DEFAULT_BASIS, element_shells
from phisnet.errors import InputError
from phisnet.molecules import is_named, named_molecule

DEFAULT_MAX_ATOMS = 60
MIN_DISTANCE = 0.5  # Angstrom
MAX_INPUT_BYTES = 20_000_000

_EXTENSION_FORMATS = {
    ".xyz": "extxyz",
    ".extxyz": "extxyz",
    ".pdb": "proteindatabank",
    ".sdf": "sdf",
    ".mol": "sdf",
    ".cif": "cif",
}


def format_for_filename(name: str) -> str | None:
    """The reader format for a file name by its extension (.xyz, .pdb, .sdf, .mol, .cif), or None to guess."""
    return _EXTENSION_FORMATS.get(Path(name).suffix.lower())


def read_molecules(
    source: str | os.PathLike | bytes,
    format: str | None = None,
    *,
    charge: int | None = None,
    spin: int = 0,
    basis: str = DEFAULT_BASIS,
    max_atoms: int = DEFAULT_MAX_ATOMS,
) -> list[ase.Atoms]:
    """Read one or more molecules and validate them for a calculation.

    Parameters
    ----------
    source : a path; the bytes or text of a file; a SMILES string; or a name
        (``water``, ``ethanol``, ``malondialdehyde``, ``uracil`` in any case, or
        an ASE G2 name such as ``CH4``). A single token is looked up as a name
        first, then parsed as SMILES: ``CO`` is carbon monoxide, pass
        ``format="smiles"`` for methanol.
    format : ``"xyz"``, ``"smiles"``, ``"name"`` or any ASE format name; guessed
        when None (from the file extension or the content).
    charge : total charge; None takes it from the input (SMILES formal charge,
        ``charge=`` in an extended-XYZ comment) or 0.
    spin : number of unpaired electrons (2S), 0 for closed shell.
    basis : basis set whose elements are allowed.
    max_atoms : largest molecule accepted.

    Returns
    -------
    list of ``ase.Atoms`` (positions in Angstrom, no periodicity) with
    ``info["charge"]`` and ``info["spin"]`` set.

    Raises
    ------
    InputError
        For anything invalid, with a one-sentence message.
    """
    frames = _parse(source, format)
    if not frames:
        raise InputError("The input contains no molecules.")
    out = []
    for k, atoms in enumerate(frames):
        where = f"Frame {k + 1}: " if len(frames) > 1 else ""
        q = charge if charge is not None else int(atoms.info.get("charge", 0))
        try:
            validate(atoms, charge=q, spin=spin, basis=basis, max_atoms=max_atoms)
        except InputError as exc:
            raise InputError(where + str(exc)) from None
        clean = ase.Atoms(atoms.numbers, positions=atoms.positions)
        clean.info.update({"charge": q, "spin": spin})
        if "name" in atoms.info:
            clean.info["name"] = atoms.info["name"]
        out.append(clean)
    return out


def validate(
    atoms: ase.Atoms,
    *,
    charge: int = 0,
    spin: int = 0,
    basis: str = DEFAULT_BASIS,
    max_atoms: int = DEFAULT_MAX_ATOMS,
) -> None:
    """Check that a molecule can go into a calculation; raise InputError if not."""
    n = len(atoms)
    if n == 0:
        raise InputError("The molecule has no atoms.")
    if n > max_atoms:
        raise InputError(f"The molecule has {n} atoms, more than the limit of {max_atoms}.")
    symbols = atoms.get_chemical_symbols()
    for i, (z, s) in enumerate(zip(atoms.numbers, symbols, strict=True)):
        if z <= 0:
            raise InputError(f"Atom {i + 1} has no known chemical element (symbol '{s}').")
    pos = np.asarray(atoms.positions, dtype=float)
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"Atom {i + 1} ({symbols[i]}) has a non-finite coordinate {pos[i].tolist()}.")
    for i, s in enumerate(symbols):
        try:
            element_shells(s, basis)
        except InputError:
            raise InputError(f"Atom {i + 1} is {s}, an element the basis set {basis} does not cover.") from None
    if n > 1:
        d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
        d[np.diag_indices(n)] = np.inf
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        i, j = sorted((int(i), int(j)))
        if d[i, j] < MIN_DISTANCE:
            raise InputError(
                f"Atoms {i + 1} ({symbols[i]}) and {j + 1} ({symbols[j]}) are only "
                f"{d[i, j]:.3f} Angstrom apart; the minimum is {MIN_DISTANCE} Angstrom."
            )
    if spin < 0:
        raise InputError(f"The spin (number of unpaired electrons) must be >= 0, got {spin}.")
    n_electrons = int(atoms.numbers.sum()) - charge
    if n_electrons <= 0:
        raise InputError(f"With charge {charge} the molecule has {n_electrons} electrons; it needs at least one.")
    if spin > n_electrons or (n_electrons - spin) % 2:
        if spin == 0:
            raise InputError(
                f"The molecule has {n_electrons} electrons, an odd number, which a closed-shell "
                "calculation cannot hold; give the total charge (e.g. 1 for a cation; the app's charge field, "
                "charge= or --charge), or for a reference calculation the spin (spin=1)."
            )
        raise InputError(
            f"{n_electrons} electrons cannot have {spin} unpaired electrons; "
            "electrons minus spin must be even and non-negative."
        )


# ----------------------------------------------------------------------------- parsing


def _parse(source, format: str | None) -> list[ase.Atoms]:
    fmt = format.lower() if format else None
    if fmt == "xyz":
        fmt = "extxyz"
    if isinstance(source, os.PathLike):
        return _read_path(Path(source), fmt)
    if isinstance(source, (bytes, bytearray)):
        if len(source) > MAX_INPUT_BYTES:
            raise InputError(f"The input is {len(source)} bytes, more than the limit of {MAX_INPUT_BYTES}.")
        try:
            text = bytes(source).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"The input is not UTF-8 text (byte {exc.start} cannot be decoded).") from None
        return _read_text(text, fmt)
    if not isinstance(source, str):
        raise InputError(f"Cannot read a molecule from a {type(source).__name__}; give a path, bytes or text.")
    stripped = source.strip()
    if not stripped:
        raise InputError("The input is empty.")
    if "\n" not in stripped and fmt not in ("smiles", "name"):
        path = Path(stripped)
        try:
            is_file = path.is_file()
        except OSError:
            is_file = False
        if is_file:
            return _read_path(path, fmt)
    return _read_text(source, fmt)


def _read_path(path: Path, fmt: str | None) -> list[ase.Atoms]:
    if not path.is_file():
        raise InputError(f"There is no file {path}.")
    size = path.stat().st_size
    if size > MAX_INPUT_BYTES:
        raise InputError(f"{path.name} is {size} bytes, more than the limit of {MAX_INPUT_BYTES}.")
    if fmt is None:
        fmt = format_for_filename(path.name)
    if fmt is None:
        try:
            fmt = ase.io.formats.filetype(str(path), guess=True)
        except Exception:  # noqa: BLE001 - ASE raises many types for unknown files
            raise InputError(
                f"Cannot tell the format of {path.name}; give it a known extension (.xyz, .pdb, .sdf, .cif, ...)."
            ) from None
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _read_ase_bytes(data, fmt, path.suffix)
    return _read_text(text, fmt)


def _read_text(text: str, fmt: str | None) -> list[ase.Atoms]:
    if not text.strip():
        raise InputError("The input is empty.")
    if fmt is None:
        fmt = _guess_format(text)
    if fmt == "name":
        if not is_named(text):
            raise InputError(f"'{text.strip()}' is not a known molecule name.")
        return [named_molecule(text)]
    if fmt == "smiles":
        return [smiles_to_atoms(text.strip())]
    if fmt == "extxyz":
        _check_xyz(text)
    frames = _read_ase_bytes(text.encode("utf-8"), fmt, "")
    if fmt == "sdf":  # ASE's SDF reader drops the charges: read them from the molecule block
        charge = sdf_charge(text)
        if charge is not None:
            frames[0].info["charge"] = charge
    return frames


#: V2000 atom-block charge codes (columns 37-39) and the charge each means.
_SDF_CHARGE_CODES = {1: 3, 2: 2, 3: 1, 5: -1, 6: -2, 7: -3}


def sdf_charge(text: str) -> int | None:
    """Total formal charge of the first molecule of a V2000 SDF/MOL text, None when it cannot be told.

    ``M  CHG`` lines, when present, supersede the atom block's charge codes (as the format defines);
    written by hand because ASE's reader ignores both and RDKit would also re-perceive the molecule.
    """
    lines = text.split("$$$$")[0].splitlines()
    try:
        n_atoms = int(lines[3][0:3])
    except (IndexError, ValueError):
        return None
    charge_lines = [line for line in lines if line.startswith("M  CHG")]
    try:
        if charge_lines:
            return sum(sum(int(v) for v in line.split()[4::2]) for line in charge_lines)
        codes = [line[36:39].strip() for line in lines[4 : 4 + n_atoms]]
        return sum(_SDF_CHARGE_CODES.get(int(code), 0) for code in codes if code)
    except ValueError:
        return None


def _guess_format(text: str) -> str:
    stripped = text.strip()
    if "\n" not in stripped and len(stripped.split()) == 1:
        return "name" if is_named(stripped) else "smiles"
    first = stripped.splitlines()[0].strip()
    if first.isdigit():
        return "extxyz"
    if "V2000" in text or "V3000" in text or "M  END" in text:
        return "sdf"
    if any(line.startswith(("ATOM  ", "HETATM")) for line in text.splitlines()):
        return "proteindatabank"
    if stripped.startswith("data_") or "_atom_site" in text:
        return "cif"
    raise InputError(
        "Cannot tell the format of the input; it should start with the atom count (XYZ), "
        "be a PDB, SDF/MOL or CIF file, a SMILES string or a molecule name."
    )


def _check_xyz(text: str) -> None:
    """Walk an XYZ file frame by frame so a bad line is reported by its number.

    ASE's reader raises on such lines without saying where; this pass only
    checks structure, ASE still does the parsing.
    """
    lines = text.splitlines()
    i = 0
    n_lines = len(lines)
    while i < n_lines:
        if not lines[i].strip():
            i += 1
            continue
        count_line = lines[i].strip()
        try:
            n = int(count_line)
        except ValueError:
            raise InputError(
                f"Line {i + 1}: expected the number of atoms of an XYZ frame, found '{count_line[:40]}'."
            ) from None
        if n < 0:
            raise InputError(f"Line {i + 1}: the number of atoms cannot be negative ({n}).")
        comment = lines[i + 1] if i + 1 < n_lines else ""
        custom_columns = "properties=" in comment.lower()
        for k in range(n):
            j = i + 2 + k
            if j >= n_lines:
                raise InputError(f"Line {i + 1} announces {n} atoms but the file ends after {k} atom lines.")
            parts = lines[j].split()
            if len(parts) < 4:
                raise InputError(
                    f"Line {j + 1}: expected an element symbol and three coordinates, found '{lines[j].strip()[:60]}'."
                )
            if custom_columns:
                continue
            symbol = parts[0]
            if symbol.isdigit():
                z = int(symbol)
                if not 0 < z < len(chemical_symbols):
                    raise InputError(f"Line {j + 1}: {z} is not an atomic number.")
            elif symbol.capitalize() not in atomic_numbers or symbol.capitalize() == "X":
                raise InputError(f"Line {j + 1}: '{symbol}' is not a chemical element symbol.")
            for value in parts[1:4]:
                try:
                    x = float(value)
                except ValueError:
                    raise InputError(f"Line {j + 1}: '{value}' is not a number.") from None
                if not math.isfinite(x):
                    raise InputError(f"Line {j + 1}: coordinate '{value}' is not a finite number.")
        i += 2 + n


def _read_ase_bytes(data: bytes, fmt: str, suffix: str) -> list[ase.Atoms]:
    try:
        if fmt == "extxyz":
            frames = ase.io.read(_io.StringIO(data.decode("utf-8")), index=":", format="extxyz")
        else:
            # Several ASE readers need a real file name, so go through a temporary file.
            with tempfile.NamedTemporaryFile(suffix=suffix or ".tmp") as tmp:
                tmp.write(data)
                tmp.flush()
                frames = ase.io.read(tmp.name, index=":", format=fmt)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - ASE readers raise many exception types
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"Could not read the input as {fmt}: {message}.") from None
    if isinstance(frames, ase.Atoms):
        frames = [frames]
    out = []
    for atoms in frames:
        charge = atoms.info.get("charge")
        clean = ase.Atoms(atoms.numbers, positions=atoms.positions)
        if charge is not None:
            clean.info["charge"] = int(charge)
        out.append(clean)
    return out


def smiles_to_atoms(smiles: str, seed: int = 0xF00D) -> ase.Atoms:
    """3D structure from SMILES with RDKit: add hydrogens, embed, force-field relax.

    The formal charge of the SMILES goes to ``info["charge"]``.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        raise InputError(f"'{smiles}' is not a valid SMILES string (nor a known molecule name).")
    fragments = len(Chem.GetMolFrags(mol))
    if fragments > 1:  # RDKit embeds the parts on top of each other
        raise InputError(
            f"The SMILES '{smiles}' holds {fragments} separate molecules (parts joined by '.'); the models "
            "predict one molecule at a time: give one of them, or a file with the complex's geometry."
        )
    mol = Chem.AddHs(mol)
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        if AllChem.EmbedMolecule(mol, randomSeed=seed, useRandomCoords=True) != 0:
            raise InputError(f"RDKit could not build a 3D structure for the SMILES '{smiles}'.")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    elif AllChem.UFFHasAllMoleculeParams(mol):
        AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
    positions = mol.GetConformer().GetPositions()
    atoms = ase.Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], positions=positions)
    atoms.info["charge"] = int(Chem.GetFormalCharge(mol))
    atoms.info["smiles"] = smiles
    return atoms
