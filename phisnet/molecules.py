"""Starting structures of the paper's molecules (water, ethanol, malondialdehyde, uracil).

Nothing is downloaded: water and ethanol come from ASE's G2 collection,
uracil from ASE's S22 collection (the first monomer of the hydrogen-bonded
uracil dimer), and malondialdehyde is written below. These are starting
points; ``phisnet generate`` optimises them at the chosen level of theory.
"""

from __future__ import annotations

import ase
from ase.build import molecule
from ase.collections import g2, s22

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
