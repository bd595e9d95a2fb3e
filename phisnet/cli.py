"""The ``phisnet`` command line: ``phisnet generate ...``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from phisnet.errors import InputError, stop_requested


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phisnet", description="PhiSNet: equivariant prediction of Kohn-Sham Hamiltonians with PySCF references."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    # Listed here for `phisnet --help`; main() hands `phisnet train ...` to phisnet.train_cli, whose parser it is.
    sub.add_parser("train", help="train or fine-tune a model on a dataset (phisnet train --help; also train.py)")

    gen = sub.add_parser(
        "generate",
        help="make a dataset of thermally sampled structures with PySCF Hamiltonians (resumable)",
        description="Optimise MOLECULE, sample N structures from its normal modes at a temperature, "
        "and store the PySCF Hamiltonian, overlap, energy and forces of each in an ASE database. "
        "Run the same command again after an interruption to resume.",
        formatter_class=fmt,
    )
    gen.add_argument(
        "molecule", nargs="?", help="water, ethanol, malondialdehyde, uracil, an ASE G2 name, a SMILES or a file"
    )
    gen.add_argument(
        "--molecules",
        help="instead of MOLECULE: a set of molecules, 'builtin' (phisnet molecules) or a list file with lines "
        "'NAME SMILES|g2:NAME [seen|ood]'; --n is then per molecule, sampled around force-field conformers",
    )
    gen.add_argument("--n", type=int, required=True, help="number of structures (per molecule with --molecules)")
    gen.add_argument("--out", required=True, help="output ASE database (.db)")
    gen.add_argument("--temperature", type=float, default=500.0, help="sampling temperature in K")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed")
    gen.add_argument("--workers", type=int, default=1, help="parallel PySCF processes (Dask workers with local)")
    gen.add_argument(
        "--scheduler",
        help="run the calculations on Dask: 'local' starts a LocalCluster of --workers processes, or give a "
        "running scheduler's address (tcp://HOST:8786, see docs/data.md); default: local processes without Dask",
    )
    gen.add_argument(
        "--threads", type=int, help="PySCF threads per calculation (default: cores / workers; 1 on a Dask cluster)"
    )
    gen.add_argument(
        "--sampler",
        choices=["normal-modes", "md"],
        default="normal-modes",
        help="normal-modes: harmonic Boltzmann samples around the PBE minimum; md: snapshots of GFN2-xTB Langevin "
        "dynamics at --temperature from several RDKit conformers (as MD17 sampled), which reach torsions and "
        "other rotamers",
    )
    gen.add_argument(
        "--conformers",
        type=int,
        help="force-field conformers per molecule (--molecules), or that start the trajectories (--sampler md); "
        "default 3",
    )
    gen.add_argument(
        "--minima",
        type=int,
        default=0,
        help="with --molecules: the first structures of each molecule are its conformers' minima (MMFF94 and "
        "GFN2-xTB, alternately), what a SMILES or an optimised file looks like; the rest thermal samples",
    )
    gen.add_argument("--md-spacing", type=float, help="fs between kept MD snapshots (--sampler md; default 100)")
    gen.add_argument("--md-block", type=int, help="snapshots per independent trajectory (--sampler md; default 20)")
    gen.add_argument("--xc", default="pbe", help="PySCF functional, or hf for Hartree-Fock")
    gen.add_argument("--basis", default="def2-svp", help="basis set")
    gen.add_argument("--charge", type=int, default=0, help="total charge")
    gen.add_argument("--spin", type=int, default=0, help="number of unpaired electrons")
    gen.add_argument(
        "--no-forces",
        action="store_true",
        help="skip the analytic forces (about 40%% of each calculation): rows hold H, S and the energy, enough for "
        "training H and S (--extra-train data); evaluate --end-to-end and --force-weight need forces",
    )
    gen.add_argument(
        "--guess-model",
        help="a model checkpoint (e.g. pretrained/ethanol.pt) whose predicted density starts every SCF: the same "
        "answers in fewer iterations; it must know the elements and use the same basis",
    )
    gen.add_argument("--quiet", action="store_true", help="no progress bar")

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

    lab = sub.add_parser(
        "ccsdt",
        help="add CCSD(T) energies and analytic forces to the rows of a dataset (resumable)",
        description="Run CCSD(T) (PySCF, all electrons correlated, analytic gradient) on the structures of DATA "
        "and store the energy and forces on each row, for fine-tuning with train.py --energy-weight. Rows "
        "already labelled are skipped, so the same command resumes after an interruption.",
        formatter_class=fmt,
    )
    lab.add_argument("data", help="ASE database from phisnet generate (usually --xc hf)")
    lab.add_argument("--n", type=int, help="label only the first N structures (by sample index); all when absent")
    lab.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser(
        "evaluate",
        help="the paper's metrics (H, eps, psi, S) of a model on a dataset",
        description="Evaluate a model on the test split recorded in its checkpoint (when DATA is the dataset it "
        "was trained on) or on every structure of DATA.",
        formatter_class=fmt,
    )
    ev.add_argument(
        "--model", required=True, action="append", help="checkpoint (.pt); repeat to compare models on the same split"
    )
    ev.add_argument("--data", required=True, help="ASE database from phisnet generate")
    ev.add_argument(
        "--split",
        choices=["test", "val", "train", "test_ood", "all"],
        default="test",
        help="which structures; the split comes from the checkpoint (test_ood: the held-out molecules of a set)",
    )
    ev.add_argument(
        "--split-of",
        metavar="CKPT",
        help="take the split from this checkpoint instead (one trained on DATA), to score a model trained on other "
        "data on that model's test structures",
    )
    ev.add_argument("--json", help="also write the metrics to this JSON file")
    ev.add_argument(
        "--by-molecule",
        action="store_true",
        help="for a molecule set: also one row per molecule (H, eps, psi, S; after the table of all structures)",
    )
    ev.add_argument(
        "--blocks",
        action="store_true",
        help="also the H MAE per kind of atom-pair block (on-site O, O-H, H-H, ...): where the error sits",
    )
    ev.add_argument(
        "--no-energy",
        action="store_true",
        help="skip the energy and forces of the predicted density (PySCF, about 1 s per small molecule)",
    )
    ev.add_argument(
        "--end-to-end",
        action="store_true",
        help="also the energy and forces derived end to end from each predicted Fock matrix, against CCSD(T) when "
        "DATA has CCSD(T) labels (phisnet ccsdt) with the data's own method as a baseline row, else against DATA's "
        "reference",
    )
    ev.add_argument(
        "--target",
        choices=["auto", "ccsd_t", "reference"],
        default="auto",
        help="what --end-to-end compares with: CCSD(T) labels, the data's own reference, or CCSD(T) when present",
    )
    ev.add_argument(
        "--subspace",
        type=float,
        help="solve the predicted orbitals above this overlap eigenvalue instead of the model's own subspace "
        "(0: the full problem, the paper's metric; default: the model's, see phisnet subspace)",
    )
    ev.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = sub.add_parser(
        "subspace",
        help="choose on validation data the overlap eigenvalue below which a model's orbitals are left out",
        description="A predicted H's error along the overlap's near-null combinations of basis functions is "
        "amplified about 1/eigenvalue in the orbitals. For each candidate threshold, solve the predicted H with the "
        "exact S in the span of S's eigenvectors above it, and print how far the density's occupied space is from "
        "the reference's (mean over the structures). --write stores the best threshold in the checkpoint; "
        "predictions, evaluate, the SCF guess and the app then use it.",
        formatter_class=fmt,
    )
    sp.add_argument("--model", required=True, help="checkpoint (.pt)")
    sp.add_argument("--data", required=True, help="the dataset the model was trained on (its splits apply)")
    sp.add_argument(
        "--split", choices=["val", "train", "test", "test_ood"], default="val", help="which structures to compare on"
    )
    sp.add_argument(
        "--candidates", type=float, nargs="+", help="thresholds to try, ascending (default 0 0.001 ... 0.1)"
    )
    sp.add_argument("--max-structures", type=int, default=60, help="at most this many structures (evenly spread)")
    sp.add_argument(
        "--write", action="store_true", help="store the chosen threshold in the checkpoint (only with --split val)"
    )
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    up = sub.add_parser(
        "upgrade",
        help="give a trained checkpoint parts it lacks (pair mixing, fine radial MLPs, layers, channels), as the "
        "same function, for fine-tuning with phisnet train --init",
        description="Write NEW.pt: the checkpoint with the named parts added where it lacks them, each starting so "
        "that the model predicts what it did (identity maps, zero output layers, copied channels); then fine-tune "
        "it with phisnet train --init NEW.pt. --exact-overlap and --add-two-center-overlap, which change how S is "
        "made, stay with phisnet train --init.",
        formatter_class=fmt,
    )
    up.add_argument("checkpoint", help="the trained model (.pt)")
    up.add_argument("--out", required=True, help="the upgraded checkpoint to write")
    up.add_argument(
        "--add-pair-mixing", action="store_true", help="own linear maps on each side of the pair products (identity)"
    )
    up.add_argument(
        "--add-pair-radial-scalars",
        action="store_true",
        help="radial weights of the pair stage also from both atoms' scalar features (an MLP starting at zero)",
    )
    up.add_argument(
        "--add-fine-radial",
        type=int,
        default=0,
        metavar="N",
        help="a pair radial MLP of N narrow Gaussians over the model's fine range (starting at zero)",
    )
    up.add_argument(
        "--add-fine-radial-interactions",
        action="store_true",
        help="the interaction layers get MLPs of the fine Gaussians too (starting at zero)",
    )
    up.add_argument(
        "--add-interactions", type=int, default=0, metavar="N", help="N interaction layers after the last (identity)"
    )
    up.add_argument(
        "--widen-channels",
        type=int,
        default=0,
        metavar="N",
        help="N channels per order, a multiple of the model's (copies whose weights differ by noise that cancels)",
    )
    up.add_argument("--seed", type=int, default=0, help="seed of the widening noise")

    pr = sub.add_parser(
        "predict",
        help="orbital energies, gap, dipole and charges of a molecule from a model; molden and cube files",
        description="Predict the Hamiltonian of MOLECULE, solve for its orbitals (with the exact overlap) and "
        "print orbital energies, HOMO-LUMO gap, dipole moment, Mulliken charges and timing. Optionally write "
        "JSON, a molden file and cube files, and compare with a PySCF reference calculation.",
        formatter_class=fmt,
    )
    pr.add_argument("molecule", help="a file (XYZ or any format ASE reads), a SMILES, or a name such as water")
    pr.add_argument("--model", default="pretrained/water.pt", help="checkpoint (.pt)")
    pr.add_argument("--format", help="input format when it cannot be guessed (xyz, smiles, name, any ASE format)")
    pr.add_argument("--frame", type=int, help="only this frame (from 0) of a multi-frame file")
    pr.add_argument("--charge", type=int, default=0, help="total charge")
    pr.add_argument("--reference", action="store_true", help="also run PySCF at the model's level and compare")
    pr.add_argument(
        "--no-assess",
        action="store_true",
        help="skip the reliability check (one PySCF Fock build at the predicted density: how self-consistent the "
        "prediction is, and whether the molecule is one the model knows)",
    )
    pr.add_argument(
        "--json", help="write the results to this JSON file (a .jsonl name: one JSON record per line, one per frame)"
    )
    pr.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="frames of a multi-frame input (a trajectory) predicted together in one pass of the network (on "
        "this CPU 4 was fastest for ethanol: 60 ms a frame against 78 one by one and 95 in batches of 16)",
    )
    pr.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network's tensor products first: up to half a minute once, then 3-8 %% faster a "
        "frame on this project's CPU (benchmarks/compile.py); off by default",
    )
    pr.add_argument("--quiet", action="store_true", help="no progress bar for multi-frame input")
    pr.add_argument("--molden", help="write the predicted orbitals to this molden file")
    pr.add_argument(
        "--cube",
        help="comma-separated cube files to write: homo, lumo, homo-N, lumo+N, an orbital number from 1, "
        "density, difference (predicted minus reference density; needs --reference)",
    )
    pr.add_argument("--cube-dir", default=".", help="folder for the cube files")
    pr.add_argument("--cube-points", type=int, default=80, help="grid points per axis of the cube files")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.command == "generate":
        return generate_command(args)
    if args.command == "molecules":
        return molecules_command(args)
    if args.command == "ccsdt":
        from phisnet.labels import label_ccsd_t

        if args.n is not None and args.n < 1:
            raise InputError(f"--n must be at least 1, got {args.n}.")
        count = label_ccsd_t(
            args.data, n=args.n, progress=not args.quiet, log=lambda message: print(message, file=sys.stderr)
        )
        print(f"{count} structures of {args.data} carry CCSD(T) energies and forces.")
        return 0
    if args.command == "evaluate":
        return evaluate_command(args)
    if args.command == "predict":
        return predict_command(args)
    if args.command == "subspace":
        return subspace_command(args)
    if args.command == "upgrade":
        from phisnet.upgrade import command

        return command(args)
    raise AssertionError(f"unhandled command {args.command}")


def subspace_command(args: argparse.Namespace) -> int:
    from phisnet.dataset import HamiltonianDataset
    from phisnet.metrics import SUBSPACE_CANDIDATES, choose_subspace, model_split, store_subspace
    from phisnet.predictor import load

    if args.write and args.split != "val":
        raise InputError(
            f"--write stores a choice the model is then reported with; make it on --split val, not {args.split}."
        )
    if args.max_structures < 1:
        raise InputError(f"--max-structures must be at least 1, got {args.max_structures}.")
    predictor = load(args.model)
    dataset = HamiltonianDataset(args.data)
    indices = model_split(predictor, dataset, args.split, args.model)
    if len(indices) > args.max_structures:
        indices = [indices[k] for k in np.linspace(0, len(indices) - 1, args.max_structures).round().astype(int)]
    choice = choose_subspace(
        predictor, dataset, indices, args.candidates or SUBSPACE_CANDIDATES, progress=not args.quiet
    )
    choice.split = args.split
    print(f"model {args.model} on {args.data} ({args.split}, {choice.n_structures} structures):")
    print(choice.format_table())
    print(f"current setting: {predictor.subspace:g}")
    if args.write:
        store_subspace(args.model, choice)
        print(f"wrote subspace {choice.threshold:g} into {args.model}")
    return 0


def generate_command(args: argparse.Namespace) -> int:
    from phisnet.data import generate
    from phisnet.set_generation import generate_set

    if (args.molecule is None) == (args.molecules is None):
        raise InputError("Give either one MOLECULE or --molecules FILE (or --molecules builtin), not both or neither.")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}.")
    md = None
    md_only = [f for f, v in (("--md-spacing", args.md_spacing), ("--md-block", args.md_block)) if v is not None]
    if args.sampler != "md" and (md_only or (args.conformers is not None and args.molecules is None)):
        flags = " and ".join(md_only + (["--conformers"] if args.conformers is not None else []))
        raise InputError(f"{flags} set the MD sampler (--sampler md); the normal-mode sampler has no such setting.")
    if args.sampler == "md":
        from phisnet.md import MDSettings

        if args.molecules is not None:
            raise InputError("--sampler md samples one MOLECULE; a set (--molecules) is sampled around conformers.")
        given = {"spacing_fs": args.md_spacing, "block": args.md_block, "conformers": args.conformers}
        md = MDSettings(**{name: value for name, value in given.items() if value is not None})
    common = dict(
        temperature=args.temperature,
        seed=args.seed,
        xc=args.xc,
        basis=args.basis,
        workers=args.workers,
        scheduler=args.scheduler,
        threads=args.threads,
        forces=not args.no_forces,
        guess_model=args.guess_model,
        progress=not args.quiet,
        log=lambda message: print(message, file=sys.stderr),
    )
    if args.minima and args.molecules is None:
        raise InputError("--minima is for a molecule set (--molecules); one MOLECULE is sampled by --sampler.")
    if args.molecules is not None:
        if args.charge or args.spin:
            raise InputError("A molecule set is neutral and closed shell; --charge and --spin apply to one MOLECULE.")
        conformers = 3 if args.conformers is None else args.conformers
        out = generate_set(args.molecules, args.n, args.out, conformers=conformers, minima=args.minima, **common)
    else:
        out = generate(
            args.molecule, args.n, args.out, charge=args.charge, spin=args.spin, sampler=args.sampler, md=md, **common
        )
    print(f"Wrote {out}; list it with: ase db {out}")
    return 0


def molecules_command(args: argparse.Namespace) -> int:
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


def evaluate_command(args: argparse.Namespace) -> int:

    from phisnet.dataset import HamiltonianDataset
    from phisnet.metrics import (
        end_to_end_errors,
        evaluate,
        format_block_table,
        format_energy_table,
        format_table,
        model_split,
        reference_errors,
    )
    from phisnet.predictor import load

    dataset = HamiltonianDataset(args.data)
    predictors = [load(path) for path in args.model]
    indices, label = None, "all"
    if args.split_of is not None:  # another checkpoint's split of this dataset, for models trained elsewhere
        if args.split == "all":
            raise InputError("--split-of names whose split to use; give the split too (--split test).")
        indices = model_split(load(args.split_of), dataset, args.split, args.split_of)
        label = f"{args.split} of {Path(args.split_of).stem}"
    elif args.split != "all":
        chosen = None
        for path, predictor in zip(args.model, predictors, strict=True):
            these = model_split(predictor, dataset, args.split, path)
            if chosen is not None and these != chosen:
                raise InputError(
                    f"{path} has another {args.split} split than {args.model[0]}; compare them with --split all."
                )
            chosen = these
        indices, label = chosen, args.split
    report: dict = {"data": str(args.data), "split": label, "models": []}
    rows = []
    for path, predictor in zip(args.model, predictors, strict=True):
        metrics = evaluate(
            predictor, dataset, indices, progress=not args.quiet, energies=not args.no_energy, subspace=args.subspace
        )
        name = f"{Path(args.data).stem} ({label})" if len(args.model) == 1 else Path(path).stem
        rows.append((name, metrics))
        report["models"].append({"model": str(path), **metrics.to_json()})
    print(
        ", ".join(f"model {path}: {p.info.xc}/{p.info.basis}" for path, p in zip(args.model, predictors, strict=True))
    )
    print(format_table(rows))
    if args.blocks:
        print()
        print(format_block_table(rows))
    if args.by_molecule:
        by_molecule = _by_molecule(dataset, list(range(len(dataset))) if indices is None else list(indices))
        if by_molecule is None:
            raise InputError(
                f"{args.data} holds one molecule; --by-molecule is for a set (phisnet generate --molecules)."
            )
        for path, predictor, entry in zip(args.model, predictors, report["models"], strict=True):
            molecule_rows = [
                (name, evaluate(predictor, dataset, group, subspace=args.subspace))
                for name, group in by_molecule.items()
            ]
            print(f"\nper molecule, model {path}:")
            print(format_table(molecule_rows))
            entry["by_molecule"] = {name: m.to_json() for name, m in molecule_rows}
    if args.end_to_end:
        chosen = list(range(len(dataset))) if indices is None else list(indices)
        labelled = [k for k in chosen if "ccsd_t_energy" in dataset[k]]
        if args.target == "ccsd_t" and not labelled:
            raise InputError(f"{args.data} has no CCSD(T) labels on these structures; add them with phisnet ccsdt.")
        if labelled and args.target != "reference":
            target, target_name, chosen = (
                "ccsd_t",
                f"CCSD(T) ({len(labelled)} {label} structures with labels)",
                labelled,
            )
            method = str(dataset.metadata.get("level_of_theory", "reference")).upper()
            energy_rows = [reference_errors(dataset, chosen, target, f"{method} (PySCF, the data's own)")]
        else:
            target, target_name = "reference", f"the data's {dataset.metadata.get('level_of_theory', 'reference')}"
            energy_rows = []
        for path, predictor in zip(args.model, predictors, strict=True):
            energy_rows.append(
                end_to_end_errors(
                    predictor, dataset, chosen, target, f"model {Path(path).name}", progress=not args.quiet
                )
            )
        print()
        print(format_energy_table(energy_rows, target_name))
        report["end_to_end"] = {
            "target": target,
            "target_name": target_name,
            "rows": [r.to_json() for r in energy_rows],
        }
    if args.json:
        from phisnet.files import json_text, write_text_atomic

        write_text_atomic(args.json, json_text(report, indent=2))
    return 0


def _by_molecule(dataset, indices: list[int]) -> dict[str, list[int]] | None:
    """Dataset positions grouped by molecule name (sorted by name), or None for a single-molecule dataset."""
    groups: dict[str, list[int]] = {}
    for k in indices:
        name = dataset[k].get("molecule")
        if name is None:
            return None
        groups.setdefault(name, []).append(k)
    return dict(sorted(groups.items()))


def predict_command(args: argparse.Namespace) -> int:
    from phisnet.io import read_molecules
    from phisnet.predictor import load
    from phisnet.viz import write_cube, write_molden

    predictor = load(args.model)
    if args.compile:
        predictor.compile()
    frames = read_molecules(args.molecule, args.format, charge=args.charge, basis=predictor.info.basis)
    if args.frame is not None:
        if not 0 <= args.frame < len(frames):
            raise InputError(f"--frame {args.frame}: the input has frames 0 to {len(frames) - 1}.")
        frames = [frames[args.frame]]
    cubes = [c.strip() for c in (args.cube or "").split(",") if c.strip()]
    if (args.molden or cubes) and len(frames) > 1:
        raise InputError(f"the input has {len(frames)} frames; choose one with --frame to write molden or cube files.")
    if "difference" in [c.lower() for c in cubes] and not args.reference:
        raise InputError("the 'difference' cube needs --reference.")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}.")
    predictor.warm_up()
    if len(frames) > 1:
        return predict_frames(args, predictor, frames)
    atoms = frames[0]
    result, wavefunction, reference = predict_one(predictor, atoms, args.reference, not args.no_assess)
    print(format_prediction(result, args.model))
    if args.molden:
        print(f"wrote {write_molden(args.molden, wavefunction.mol, wavefunction.orbitals)}")
    ref_dm = None if reference is None else reference.density_matrix
    for what in cubes:
        path = Path(args.cube_dir) / f"{atoms.get_chemical_formula()}_{what.lower().replace('+', 'p')}.cube"
        write_cube(
            path, wavefunction.mol, what, wavefunction.orbitals, reference_density=ref_dm, points=args.cube_points
        )
        print(f"wrote {path}")
    if args.json:
        _write_results(args.json, [result])
    return 0


def predict_frames(args: argparse.Namespace, predictor, frames: list) -> int:
    """Every frame of a multi-frame input: the network in batches, then one line (and JSON record) per frame."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    predictions = predictor.predict_many(frames, batch_size=args.batch_size)
    results, verdicts = [], {}
    print(f"{len(frames)} frames, model {args.model}" + ("" if args.no_assess else "; reliability checked per frame"))
    print(f"{'frame':>6}  {'formula':<12}{'gap / eV':>10}{'dipole / D':>12}{'ms':>8}  verdict")
    for k, (atoms, prediction) in enumerate(
        zip(tqdm(frames, unit="frame", desc="solve", disable=args.quiet), predictions, strict=True)
    ):
        result, _, _ = predict_one(predictor, atoms, args.reference, not args.no_assess, prediction=prediction)
        result["frame"] = k
        results.append(result)
        verdict = result.get("assessment", {}).get("verdict", "-")
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        ms = (result["predict_seconds"] + result["solve_seconds"]) * 1000
        gap, dipole = result["gap_ev"], result["dipole_norm_debye"]
        tqdm.write(f"{k:>6}  {result['formula']:<12}{gap:>10.3f}{dipole:>12.3f}{ms:>8.1f}  {verdict}")
    seconds = time.perf_counter() - t0
    network = sum(r["predict_seconds"] for r in results)
    counts = ", ".join(f"{n} {word}" for word, n in sorted(verdicts.items()) if word != "-")
    print(
        f"{len(frames)} frames in {seconds:.2f} s (network {network:.3f} s, {network / len(frames) * 1000:.1f} ms a "
        f"frame in batches of {args.batch_size})" + (f"; verdicts: {counts}" if counts else "")
    )
    if args.json:
        _write_results(args.json, results)
    return 0


def _write_results(path: str, results: list[dict]) -> None:
    """JSON (one object, or a list for several frames), or JSON lines (one record a frame) for a .jsonl name."""
    from phisnet.files import json_text, write_text_atomic

    if str(path).endswith(".jsonl"):
        text = "".join(json_text(result) + "\n" for result in results)
    else:
        text = json_text(results[0] if len(results) == 1 else results, indent=2)
    write_text_atomic(path, text)
    print(f"wrote {path}")


def predict_one(predictor, atoms, with_reference: bool, with_assessment: bool = True, prediction=None):
    """Prediction (optionally its reliability check and the PySCF reference) of one molecule as a JSON-able dict.

    ``prediction``: the network's ``Prediction`` for ``atoms`` when already made (``Predictor.predict_many``).
    """
    from phisnet.metrics import MICRO
    from phisnet.observables import dipole_moment, energy_and_forces, predict_wavefunction, solve
    from phisnet.reference import HARTREE_EV, run_dft

    charge = int(atoms.info.get("charge", 0))
    wf = predict_wavefunction(predictor, atoms, charge=charge, prediction=prediction)
    orb = wf.orbitals
    dipole = wf.dipole()
    result = {
        "formula": atoms.get_chemical_formula(),
        "symbols": atoms.get_chemical_symbols(),
        "positions_angstrom": atoms.positions.tolist(),
        "charge": charge,
        "xc": wf.xc,
        "basis": wf.basis,
        "predict_seconds": wf.predict_seconds,
        "solve_seconds": wf.solve_seconds,
        "subspace": wf.subspace,
        "n_occupied": orb.n_occupied,
        "orbital_energies_hartree": orb.energies.tolist(),
        "homo_hartree": orb.homo,
        "lumo_hartree": orb.lumo,
        "gap_ev": orb.gap * HARTREE_EV,
        "dipole_debye": dipole.tolist(),
        "dipole_norm_debye": float(np.linalg.norm(dipole)),
        "mulliken_charges": wf.charges().tolist(),
    }
    if with_assessment:
        from phisnet.trust import assess

        result["assessment"] = assess(predictor, atoms, wavefunction=wf).to_json()
    reference_orbitals = None
    if with_reference:
        ref = run_dft(atoms, xc=wf.xc, basis=wf.basis, charge=charge, forces=True)
        reference_orbitals = solve(ref.hamiltonian, ref.overlap, int(atoms.numbers.sum()) - charge)
        energy, forces = energy_and_forces(wf.mol, orb, wf.xc)
        result["reference"] = {
            "scf_seconds": ref.seconds,
            "scf_iterations": ref.n_iterations,
            "converged": ref.converged,
            "energy_hartree": ref.energy,
            "orbital_energies_hartree": ref.mo_energy.tolist(),
            "homo_hartree": reference_orbitals.homo,
            "lumo_hartree": reference_orbitals.lumo,
            "gap_ev": reference_orbitals.gap * HARTREE_EV,
            "dipole_debye": dipole_moment(wf.mol, reference_orbitals.density_matrix).tolist(),
            "H_MAE_uHa": float(np.abs(wf.hamiltonian - ref.hamiltonian).mean() * MICRO),
            "predicted_density_energy_hartree": energy,
            "energy_error_mev": (energy - ref.energy) * HARTREE_EV * 1000,
            "force_mae_mev_per_angstrom": float(np.abs(forces - ref.forces).mean() * HARTREE_EV * 1000),
        }
    return result, wf, reference_orbitals


def format_prediction(result: dict, model: str) -> str:
    """A human-readable block for one predicted molecule."""
    from phisnet.reference import HARTREE_EV

    ref = result.get("reference")
    lines = [
        f"{result['formula']} ({len(result['symbols'])} atoms, charge {result['charge']}), model {model}, "
        f"{result['xc']}/{result['basis']}",
        f"prediction {result['predict_seconds'] + result['solve_seconds']:.3f} s "
        f"(network {result['predict_seconds']:.3f} s, eigenproblem {result['solve_seconds']:.3f} s)"
        + (f"; PySCF SCF {ref['scf_seconds']:.2f} s, {ref['scf_iterations']} iterations" if ref else ""),
    ]
    if "assessment" in result:
        from phisnet.trust import Assessment

        lines.insert(0, "reliability: " + Assessment(**result["assessment"]).summary())
    if result.get("subspace"):
        lines.append(
            f"orbitals solved above overlap eigenvalue {result['subspace']:g} "
            f"({len(result['orbital_energies_hartree'])} orbitals; the model's "
            "subspace, chosen on its validation data)"
        )
    lines += [
        "",
        f"{'':<24}{'predicted':>12}" + (f"{'reference':>12}{'error':>12}" if ref else ""),
    ]

    def row(label, key, scale=1.0, fmt="{:12.3f}"):
        value = result[key] * scale
        text = f"{label:<24}" + fmt.format(value)
        if ref:
            text += fmt.format(ref[key] * scale) + fmt.format(value - ref[key] * scale)
        return text

    lines += [
        row("HOMO / eV", "homo_hartree", HARTREE_EV),
        row("LUMO / eV", "lumo_hartree", HARTREE_EV),
        row("HOMO-LUMO gap / eV", "gap_ev"),
    ]
    norm = result["dipole_norm_debye"]
    dipole_line = f"{'dipole / D':<24}{norm:12.3f}"
    if ref:
        ref_norm = float(np.linalg.norm(ref["dipole_debye"]))
        dipole_line += f"{ref_norm:12.3f}{norm - ref_norm:12.3f}"
    lines.append(dipole_line)
    if ref:
        lines += [
            f"{'H MAE / uHa':<24}{ref['H_MAE_uHa']:12.1f}",
            f"{'energy / Ha':<24}{ref['predicted_density_energy_hartree']:12.6f}{ref['energy_hartree']:12.6f}"
            f"{ref['energy_error_mev']:10.2f} meV",
            f"{'force MAE / meV/A':<24}{ref['force_mae_mev_per_angstrom']:12.2f}",
            "(energy and forces of the predicted density in the PySCF functional, no SCF; see phisnet.observables)",
        ]
    occupied = result["orbital_energies_hartree"][: result["n_occupied"]]
    virtual = result["orbital_energies_hartree"][result["n_occupied"] : result["n_occupied"] + 5]
    charges = zip(result["symbols"], result["mulliken_charges"], strict=True)
    lines += [
        "",
        "occupied orbital energies / eV: " + " ".join(f"{e * HARTREE_EV:.3f}" for e in occupied),
        "lowest virtual energies / eV:   " + " ".join(f"{e * HARTREE_EV:.3f}" for e in virtual),
        "Mulliken charges: " + "  ".join(f"{s}{k + 1} {q:+.3f}" for k, (s, q) in enumerate(charges)),
    ]
    return "\n".join(lines)


def _interrupt(signum, frame):
    stop_requested.set()  # checked between steps too: the exception below is lost if it lands in a __del__
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from phisnet.train_cli import main as train_main

        return train_main(argv[1:], prog="phisnet train")
    args = build_parser().parse_args(argv)
    # SIGTERM (kill, pkill) stops a run like Ctrl-C: the worker processes of `generate` are shut down with it
    # instead of computing on as orphans, and what was saved stays saved.
    main_thread = threading.current_thread() is threading.main_thread()
    stop_requested.clear()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return run(args)
    except InputError as exc:
        print(f"phisnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("phisnet: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
