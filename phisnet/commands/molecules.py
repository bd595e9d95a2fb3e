"""``phisnet molecules``: the built-in molecule set of the general model, or a checked list file."""

from __future__ import annotations

import argparse


def add_parser(sub, fmt) -> None:
    mols = sub.add_parser(
        "molecules",
        help="list the built-in molecule set of the general model (or check a list file)",
        description="Print the molecules of the built-in set (ASE's G2 filtered to closed-shell H/C/N/O/F "
        "molecules plus phisnet's curated SMILES) or of a list file: name, formula, atoms and split (ood: held "
        "out of training). --out writes the list in the format generate --molecules reads.",
        formatter_class=fmt,
    )
    mols.add_argument("source", nargs="?", default="builtin", help="'builtin' or a molecule list file")
    mols.add_argument("--out", help="write the list to this file")
    mols.add_argument("--check", action="store_true", help="also build every molecule's conformers (slower)")


def run(args: argparse.Namespace) -> int:
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    from phisnet.molecules import check_entry, conformers, rdkit_molecule, write_molecule_list
    from phisnet.set_generation import resolve_molecule_set

    entries = resolve_molecule_set(args.source)
    print(f"{'name':28s} {'formula':12s} {'atoms':>5s}  split  spec")
    for entry in entries:
        mol = rdkit_molecule(entry)
        check_entry(entry, mol)
        if args.check:
            conformers(entry)
        split = "ood" if entry.held_out else "seen"
        print(f"{entry.name:28s} {CalcMolFormula(mol):12s} {mol.GetNumAtoms():5d}  {split:5s}  {entry.spec}")
    held = sum(e.held_out for e in entries)
    print(f"{len(entries)} molecules, {held} held out (ood).")
    if args.out:
        write_molecule_list(entries, args.out)
        print(f"Wrote {args.out}")
    return 0
