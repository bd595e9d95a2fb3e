"""``phisnet evaluate``: the paper's metrics (H, eps, psi, S) of models on a dataset's split."""

from __future__ import annotations

import argparse
from pathlib import Path

from phisnet.errors import InputError


def add_parser(sub, fmt) -> None:
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
    _report_options(ev)


def _report_options(ev) -> None:
    """What ``phisnet evaluate`` reports besides the table: JSON, per-molecule and per-block rows, energies."""
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


def run(args: argparse.Namespace) -> int:
    from phisnet.dataset import HamiltonianDataset
    from phisnet.metrics import evaluate, format_block_table, format_table
    from phisnet.predictor import load

    dataset = HamiltonianDataset(args.data)
    predictors = [load(path) for path in args.model]
    indices, label = _split(args, dataset, predictors)
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
    chosen = list(range(len(dataset))) if indices is None else list(indices)
    if args.by_molecule:
        _per_molecule(args, dataset, predictors, chosen, report)
    if args.end_to_end:
        report["end_to_end"] = _end_to_end(args, dataset, predictors, chosen, label)
    if args.json:
        from phisnet.files import json_text, write_text_atomic

        write_text_atomic(args.json, json_text(report, indent=2))
    return 0


def _split(args: argparse.Namespace, dataset, predictors) -> tuple[list[int] | None, str]:
    """The structures to score (None: all) and their label: the models' own split, or --split-of's."""
    from phisnet.metrics import model_split
    from phisnet.predictor import load

    if args.split_of is not None:  # another checkpoint's split of this dataset, for models trained elsewhere
        if args.split == "all":
            raise InputError("--split-of names whose split to use; give the split too (--split test).")
        indices = model_split(load(args.split_of), dataset, args.split, args.split_of)
        return indices, f"{args.split} of {Path(args.split_of).stem}"
    if args.split == "all":
        return None, "all"
    chosen = None
    for path, predictor in zip(args.model, predictors, strict=True):
        these = model_split(predictor, dataset, args.split, path)
        if chosen is not None and these != chosen:
            raise InputError(
                f"{path} has another {args.split} split than {args.model[0]}; compare them with --split all."
            )
        chosen = these
    return chosen, args.split


def _per_molecule(args: argparse.Namespace, dataset, predictors, chosen: list[int], report: dict) -> None:
    """--by-molecule: print one table row per molecule of a set for each model, and add them to the report."""
    from phisnet.metrics import evaluate, format_table

    by_molecule = _by_molecule(dataset, chosen)
    if by_molecule is None:
        raise InputError(f"{args.data} holds one molecule; --by-molecule is for a set (phisnet generate --molecules).")
    for path, predictor, entry in zip(args.model, predictors, report["models"], strict=True):
        molecule_rows = [
            (name, evaluate(predictor, dataset, group, subspace=args.subspace)) for name, group in by_molecule.items()
        ]
        print(f"\nper molecule, model {path}:")
        print(format_table(molecule_rows))
        entry["by_molecule"] = {name: m.to_json() for name, m in molecule_rows}


def _end_to_end(args: argparse.Namespace, dataset, predictors, chosen: list[int], label: str) -> dict:
    """--end-to-end: print the table of end-to-end energy and force errors; return it for the report."""
    from phisnet.metrics import end_to_end_errors, format_energy_table, reference_errors

    labelled = [k for k in chosen if "ccsd_t_energy" in dataset[k]]
    if args.target == "ccsd_t" and not labelled:
        raise InputError(f"{args.data} has no CCSD(T) labels on these structures; add them with phisnet ccsdt.")
    if labelled and args.target != "reference":
        target, target_name, chosen = "ccsd_t", f"CCSD(T) ({len(labelled)} {label} structures with labels)", labelled
        method = str(dataset.metadata.get("level_of_theory", "reference")).upper()
        energy_rows = [reference_errors(dataset, chosen, target, f"{method} (PySCF, the data's own)")]
    else:
        target, target_name = "reference", f"the data's {dataset.metadata.get('level_of_theory', 'reference')}"
        energy_rows = []
    for path, predictor in zip(args.model, predictors, strict=True):
        energy_rows.append(
            end_to_end_errors(predictor, dataset, chosen, target, f"model {Path(path).name}", progress=not args.quiet)
        )
    print()
    print(format_energy_table(energy_rows, target_name))
    return {"target": target, "target_name": target_name, "rows": [r.to_json() for r in energy_rows]}


def _by_molecule(dataset, indices: list[int]) -> dict[str, list[int]] | None:
    """Dataset positions grouped by molecule name (sorted by name), or None for a single-molecule dataset."""
    groups: dict[str, list[int]] = {}
    for k in indices:
        name = dataset[k].get("molecule")
        if name is None:
            return None
        groups.setdefault(name, []).append(k)
    return dict(sorted(groups.items()))
