"""Starting structures of the paper's molecules (water, ethanol, malondialdehyde, uracil).

Nothing is downloaded: water and ethanol come from ASE's G2 collection,
uracil from ASE's S22 collection (the first monomer of the hydrogen-bonded
uracil dimer), and malondialdehyde is written below. These are starting
points; ``phisnet generate`` optimises them at the chosen level of theory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ase
import numpy as np
from ase.build import molecule
from ase.collections import g2, s22

from phisnet.errors import InputError
from phisnet.files import write_text_atomic

# Malondialdehyde in its intramolecularly hydrogen-bonded enol form (as in MD17).
# Source: RDKit 2026.9.1, SMILES O=C/C=C\O, EmbedMultipleConfs(numConfs=20,
# randomSeed=0x5EED), MMFF94 relaxation, lowest-energy conformer, centred.
_MALONDIALDEHYDE = [
    ("O", (-1.383842, 1.160306, -0.167051)),
    ("C", (-1.205764, -0.002800, -0.512949)),
    ("C", (0.053906, -0.727453, -0.240740)),
    ("C", (1.071868, -0.145347, 0.402412)),
    ("O", (1.088340, 1.139846, 0.875155)),
    ("H", (-1.972395, -0.585351, -1.049553)),
    ("H", (0.116212, -1.751600, -0.585433)),
    ("H", (2.008078, -0.645702, 0.618576)),
    ("H", (0.223599, 1.558103, 0.659584)),
]

#: The paper's molecules, by the names the CLI and the app accept.
PAPER_MOLECULES = ("water", "ethanol", "malondialdehyde", "uracil")


def paper_molecule(name: str) -> ase.Atoms:
    """Starting structure of one of the paper's molecules (case-insensitive name)."""
    key = name.strip().lower()
    if key == "water":
        atoms = molecule("H2O")
    elif key == "ethanol":
        atoms = molecule("CH3CH2OH")
    elif key == "uracil":
        atoms = s22["Uracil_dimer_h-bonded"][:12]
    elif key == "malondialdehyde":
        atoms = ase.Atoms(symbols=[s for s, _ in _MALONDIALDEHYDE], positions=[p for _, p in _MALONDIALDEHYDE])
    else:
        raise KeyError(name)
    atoms = ase.Atoms(atoms.numbers, positions=atoms.positions)
    atoms.info["name"] = key
    return atoms


def is_named(name: str) -> bool:
    """Whether ``name`` is a paper molecule (any case) or an ASE G2 name (exact case)."""
    return name.strip().lower() in PAPER_MOLECULES or name.strip() in g2.names


def named_molecule(name: str) -> ase.Atoms:
    """A paper molecule or any molecule of ASE's G2 collection by its ASE name."""
    if name.strip().lower() in PAPER_MOLECULES:
        return paper_molecule(name)
    atoms = molecule(name.strip())
    atoms = ase.Atoms(atoms.numbers, positions=atoms.positions)
    atoms.info["name"] = name.strip()
    return atoms


def bond_signature(atoms: ase.Atoms) -> tuple[tuple, tuple]:
    """The molecule's skeleton: its heavy-atom bonds as sorted (Z, Z) pairs, and each heavy atom as
    (Z, number of hydrogens on it), sorted.

    Two geometries with the same signature are, for the app's purposes, the same molecule (ethanol
    and dimethyl ether share a formula, not a signature). Heavy atoms are bonded below 1.2 times the
    sum of ASE's covalent radii; each hydrogen belongs to its nearest heavy atom, which survives the
    stretched X-H bonds of 500 K normal-mode samples (whose rectilinear torsions lengthen them).
    """
    from ase.neighborlist import natural_cutoffs, neighbor_list

    numbers = atoms.numbers
    heavy = np.flatnonzero(numbers > 1)
    if len(heavy) == 0:
        return (), ()
    skeleton = atoms[heavy]
    first, second = neighbor_list("ij", skeleton, natural_cutoffs(skeleton, mult=1.2))
    bonds = [
        tuple(sorted((int(skeleton.numbers[i]), int(skeleton.numbers[j]))))
        for i, j in zip(first, second, strict=True)
        if i < j
    ]
    hydrogens = np.flatnonzero(numbers == 1)
    distances = np.linalg.norm(atoms.positions[hydrogens, None] - atoms.positions[None, heavy], axis=-1)
    owner = np.bincount(distances.argmin(axis=1), minlength=len(heavy)) if len(hydrogens) else np.zeros(len(heavy), int)
    attached = [(int(z), int(h)) for z, h in zip(skeleton.numbers, owner, strict=True)]
    return tuple(sorted(bonds)), tuple(sorted(attached))


def same_molecule(a: ase.Atoms, b: ase.Atoms) -> bool:
    """Whether two geometries have the same formula and the same bonds (see :func:`bond_signature`)."""
    return a.get_chemical_formula() == b.get_chemical_formula() and bond_signature(a) == bond_signature(b)


def is_paper_molecule(atoms: ase.Atoms, name: str | None) -> bool:
    """Whether ``name`` is one of the paper's molecules and ``atoms`` is that molecule (formula and bonds)."""
    return name in PAPER_MOLECULES and same_molecule(atoms, paper_molecule(name))


# ----------------------------------------------------------------------------- the general molecule set

#: Elements of the general molecule set.
SET_ELEMENTS = ("H", "C", "N", "O", "F")
#: Largest number of heavy (non-hydrogen) atoms in the general set ("about 9", as QH9; adenine has 10).
SET_MAX_HEAVY_ATOMS = 10
_CURATED_SET = Path(__file__).with_name("molecule_set.txt")


@dataclass(frozen=True)
class MoleculeEntry:
    """One molecule of a set: a name, how to build it, and whether it is held out of training.

    ``spec`` is a SMILES string, or ``g2:NAME`` for a structure of ASE's G2 collection.
    ``held_out`` molecules form the out-of-distribution test set: no geometry of them is trained on.
    """

    name: str
    spec: str
    held_out: bool = False

    def to_json(self) -> dict:
        return {"name": self.name, "spec": self.spec, "held_out": self.held_out}


def read_molecule_list(path: str | Path) -> list[MoleculeEntry]:
    """A molecule list file: one molecule per line, ``NAME SPEC [seen|ood]`` (tabs or spaces).

    SPEC is a SMILES string or ``g2:NAME``; ``ood`` holds the molecule out of training. Blank
    lines and lines starting with ``#`` are skipped. InputError names the line of any problem.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"There is no molecule list {path}.")
    entries: list[MoleculeEntry] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) not in (2, 3):
            raise InputError(f"{path.name} line {number}: expected 'NAME SPEC [seen|ood]', got {text!r}.")
        split = fields[2].lower() if len(fields) == 3 else "seen"
        if split not in ("seen", "ood"):
            raise InputError(f"{path.name} line {number}: the split must be 'seen' or 'ood', got {fields[2]!r}.")
        name = fields[0]
        if name in seen:
            raise InputError(f"{path.name} line {number}: the name {name!r} is already used on line {seen[name]}.")
        seen[name] = number
        entries.append(MoleculeEntry(name=name, spec=fields[1], held_out=split == "ood"))
    if not entries:
        raise InputError(f"{path.name} lists no molecules.")
    return entries


def g2_molecule_set() -> list[MoleculeEntry]:
    """ASE's G2 molecules made of H, C, N, O and F, closed shell, two atoms or more."""
    entries = []
    for name in g2.names:
        atoms = g2[name]
        if len(atoms) < 2 or not set(atoms.get_chemical_symbols()) <= set(SET_ELEMENTS):
            continue
        if atoms.get_initial_magnetic_moments().any() or int(atoms.numbers.sum()) % 2:
            continue  # radicals and triplets: the set is closed shell
        entries.append(MoleculeEntry(name=name, spec=f"g2:{name}"))
    return entries


def builtin_molecule_set() -> list[MoleculeEntry]:
    """The general set: filtered G2 plus the curated SMILES of ``molecule_set.txt``, without duplicates.

    A curated molecule that G2 already holds (same canonical SMILES) keeps the curated entry,
    whose split is chosen by hand.
    """
    curated = read_molecule_list(_CURATED_SET)
    keys = {canonical_smiles(e) for e in curated}
    return [e for e in g2_molecule_set() if canonical_smiles(e) not in keys] + curated


def write_molecule_list(entries: list[MoleculeEntry], path: str | Path) -> None:
    """Write entries in the format ``read_molecule_list`` reads (atomically)."""
    lines = ["# name\tspec\tsplit (written by phisnet)"]
    lines += [f"{e.name}\t{e.spec}\t{'ood' if e.held_out else 'seen'}" for e in entries]
    write_text_atomic(path, "\n".join(lines) + "\n")


def rdkit_molecule(entry: MoleculeEntry):
    """RDKit molecule with hydrogens for an entry (bonds from the SMILES, or perceived from G2 coordinates)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    if entry.spec.startswith("g2:"):
        name = entry.spec[3:]
        if name not in g2.names:
            raise InputError(f"{entry.name}: {name!r} is not a molecule of ASE's G2 collection.")
        try:
            return rdkit_from_atoms(g2[name])
        except InputError as exc:
            raise InputError(f"{entry.name}: {exc}") from None
    mol = Chem.MolFromSmiles(entry.spec)
    if mol is None or mol.GetNumAtoms() == 0:
        raise InputError(f"{entry.name}: {entry.spec!r} is not a valid SMILES string.")
    return Chem.AddHs(mol)


def rdkit_from_atoms(atoms: ase.Atoms, charge: int = 0):
    """RDKit molecule of a structure, atom order and coordinates kept, bonds perceived from the geometry."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds

    RDLogger.DisableLog("rdApp.*")
    xyz = f"{len(atoms)}\n\n" + "\n".join(
        f"{s} {x:.8f} {y:.8f} {z:.8f}"
        for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
    )
    mol = Chem.MolFromXYZBlock(xyz)
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=charge)
    except ValueError as exc:
        raise InputError(f"RDKit could not assign bonds to {atoms.get_chemical_formula()} ({exc}).") from None
    return mol


def canonical_smiles(entry: MoleculeEntry) -> str:
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.RemoveHs(rdkit_molecule(entry)))


def check_entry(entry: MoleculeEntry, mol=None) -> None:
    """InputError unless the molecule is neutral, closed shell, H/C/N/O/F, with at most 10 heavy atoms."""
    from rdkit import Chem

    mol = mol if mol is not None else rdkit_molecule(entry)
    symbols = {a.GetSymbol() for a in mol.GetAtoms()}
    other = sorted(symbols - set(SET_ELEMENTS))
    if other:
        raise InputError(f"{entry.name}: contains {', '.join(other)}; the set allows {', '.join(SET_ELEMENTS)}.")
    heavy = sum(a.GetAtomicNum() > 1 for a in mol.GetAtoms())
    if heavy > SET_MAX_HEAVY_ATOMS:
        raise InputError(f"{entry.name}: {heavy} heavy atoms; the set allows at most {SET_MAX_HEAVY_ATOMS}.")
    if Chem.GetFormalCharge(mol) != 0:
        raise InputError(f"{entry.name}: has net charge {Chem.GetFormalCharge(mol)}; the set is neutral molecules.")
    if sum(a.GetAtomicNum() for a in mol.GetAtoms()) % 2:
        raise InputError(f"{entry.name}: has an odd number of electrons; the set is closed-shell molecules.")


def conformers(entry: MoleculeEntry, n: int = 3, seed: int = 0x5EED) -> list[ase.Atoms]:
    """Up to ``n`` distinct force-field conformers of an entry, lowest force-field energy first.

    RDKit ETKDG embeddings (20 tries, seeded) relaxed with MMFF94 (UFF when MMFF lacks parameters),
    pruned at 0.3 A heavy-atom RMSD. A G2 entry starts from its own structure; it is relaxed too, so
    that the force-field Hessian of ``phisnet.sampling.force_field_modes`` is taken at a minimum.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdMolAlign

    mol = rdkit_molecule(entry)
    check_entry(entry, mol)
    if entry.spec.startswith("g2:") or mol.GetNumAtoms() < 4:
        if mol.GetNumConformers() == 0:
            AllChem.EmbedMolecule(mol, randomSeed=seed)
        ids = [c.GetId() for c in mol.GetConformers()]
    else:
        ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=20, randomSeed=seed))
        if not ids:
            ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=20, randomSeed=seed, useRandomCoords=True))
    if not ids:
        raise InputError(f"{entry.name}: RDKit could not build a 3D structure.")
    energies = force_field_relax(mol, ids)
    kept: list[int] = []
    heavy = Chem.RemoveHs(mol, sanitize=False)
    for cid in sorted(ids, key=lambda c: energies[c]):
        if all(rdMolAlign.GetBestRMS(heavy, heavy, prbId=cid, refId=k) > 0.3 for k in kept):
            kept.append(cid)
        if len(kept) == n:
            break
    out = []
    for cid in kept:
        atoms = ase.Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer(cid).GetPositions())
        atoms.info.update({"name": entry.name, "charge": 0, "spin": 0})
        out.append(atoms)
    return out


def force_field(mol, conf_id: int = -1):
    """RDKit MMFF94 force field of a conformer, or UFF when MMFF has no parameters (H2, CO, O3, HF)."""
    from rdkit.Chem import AllChem

    if AllChem.MMFFHasAllMoleculeParams(mol):
        props = AllChem.MMFFGetMoleculeProperties(mol)
        return AllChem.MMFFGetMoleculeForceField(mol, props, confId=conf_id)
    if AllChem.UFFHasAllMoleculeParams(mol):
        return AllChem.UFFGetMoleculeForceField(mol, confId=conf_id)
    raise InputError("Neither MMFF94 nor UFF has parameters for this molecule.")


def force_field_relax(mol, conf_ids: list[int]) -> dict[int, float]:
    """Relax conformers in place (tight convergence); returns their force-field energies (kcal/mol)."""
    energies = {}
    for cid in conf_ids:
        ff = force_field(mol, cid)
        ff.Initialize()
        ff.Minimize(maxIts=5000, forceTol=1e-6, energyTol=1e-10)
        energies[cid] = ff.CalcEnergy()
    return energies
