"""``phisnet generate``: a dataset of sampled structures with their PySCF Hamiltonians (resumable)."""

from __future__ import annotations

import argparse
import sys

from phisnet.errors import InputError

#: The arguments that decide a dataset's rows (besides --out): --split-of takes them from the model.
ROW_SETTINGS = (
    "molecule", "molecules", "n", "temperature", "seed", "xc", "basis", "charge", "spin", "no_forces", "sampler",
    "conformers", "minima", "md_spacing", "md_block",
)  # fmt: skip


def add_parser(sub, fmt) -> None:
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
    gen.add_argument("--n", type=int, help="number of structures (per molecule with --molecules)")
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
        "--split-of",
        metavar="MODEL",
        help="instead of MOLECULE and --n: make again the --split structures of the dataset MODEL was trained on, "
        "with the settings its checkpoint records (each structure depends on its seed and index alone): its test "
        "split for phisnet evaluate in minutes, without the rest of a lost dataset",
    )
    gen.add_argument("--split", default="test", choices=["train", "val", "test"], help="with --split-of: which split")
    _sampler_flags(gen)
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
    # What --split-of takes from the model: these must stay at the parser's own defaults.
    gen.set_defaults(row_setting_defaults={name: gen.get_default(name) for name in ROW_SETTINGS})


def _sampler_flags(gen: argparse.ArgumentParser) -> None:
    """How the structures are drawn: normal modes or MD, conformers, minima, MD spacing."""
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


def run(args: argparse.Namespace) -> int:
    from phisnet.data import generate
    from phisnet.set_generation import generate_set

    if args.split_of is not None:
        return _rebuild(args)
    if args.n is None:
        raise InputError("Give --n, the number of structures (per molecule with --molecules).")
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


def _rebuild(args: argparse.Namespace) -> int:
    """``--split-of``: one split of a model's dataset; every setting that decides the rows comes from the model."""
    from phisnet.split_rebuild import rebuild_split

    given = [name for name, default in args.row_setting_defaults.items() if getattr(args, name) != default]
    if given:
        flags = ", ".join("MOLECULE" if name == "molecule" else "--" + name.replace("_", "-") for name in given)
        raise InputError(
            f"--split-of takes the molecule, size and every sampling setting from the model; leave out {flags}."
        )
    out = rebuild_split(
        args.split_of,
        args.split,
        args.out,
        workers=args.workers,
        scheduler=args.scheduler,
        threads=args.threads,
        guess_model=args.guess_model,
        progress=not args.quiet,
        log=lambda message: print(message, file=sys.stderr),
    )
    print(f"Wrote {out}; score a model on it with: phisnet evaluate --model {args.split_of} --data {out}")
    return 0
