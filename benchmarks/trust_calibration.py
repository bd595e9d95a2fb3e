"""Calibration of the reliability check (``phisnet.trust``) against the true errors.

    python benchmarks/trust_calibration.py --pairs pretrained/water.pt:data/water-md.db \
        pretrained/ethanol.pt:data/ethanol-md.db [--n 40] [--variants] [--scf] [--out runs/trust.json]

For each MODEL:DATA pair, on --n structures of DATA (the model's test split when DATA is the model's own
dataset, else rows spread over the whole file: geometries it never trained on either way; a file's held-out
molecules, where it marks some, get their own line), predict,
assess (``phisnet.trust.assess``) and compare with the dataset's PySCF Hamiltonian: H MAE, occupied
orbital-energy MAE, HOMO-LUMO gap error. Prints per pair and over all: the Spearman rank correlation of
the orbital-gradient residual with each error, how many bad predictions (H MAE over 200 uHa or gap off by
more than 0.5 eV) are flagged (target: all), and how many good ones (H MAE under 50 uHa) are (target: at
most 10 %). ``--variants`` also times the Fock build with PySCF's default grid and exact J beside the
assessment's (coarse grid, density-fitted J) and prints their rank correlation; ``--scf`` counts the SCF
iterations from the predicted guess (PySCF, the model's level, conv_tol 1e-9) beside minao's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from phisnet.dataset import HamiltonianDataset, sample_atoms
from phisnet.errors import InputError
from phisnet.metrics import model_split
from phisnet.observables import predict_wavefunction, solve
from phisnet.predictor import load
from phisnet.reference import HARTREE_EV, run_dft
from phisnet.trust import GRID_LEVEL, assess, self_consistency

BAD_H_UHA, BAD_GAP_EV, GOOD_H_UHA = 200.0, 0.5, 50.0


def structures(predictor, dataset, n: int, split_of=None) -> tuple[str, list[int]]:
    """The split used and n row positions in it (evenly spread). ``split_of``: another checkpoint (one trained on
    DATA, e.g. the model a fine-tune started from) whose test split to take."""
    try:
        indices, split = model_split(split_of or predictor, dataset, "test"), "test" if split_of is None else "test of"
    except InputError:
        indices, split = list(range(len(dataset))), "all"
    take = np.linspace(0, len(indices) - 1, min(n, len(indices))).round().astype(int)
    return split, [indices[k] for k in sorted(set(take.tolist()))]


def one(predictor, sample, variants: bool, scf: bool) -> dict:
    atoms = sample_atoms(sample)
    wf = predict_wavefunction(predictor, atoms)
    t0 = time.perf_counter()
    result = assess(predictor, atoms, wavefunction=wf)
    row = {"verdict": result.verdict, **result.to_json(), "assess_seconds": time.perf_counter() - t0}
    H_ref, S_ref = sample["hamiltonian"].numpy(), sample["overlap"].numpy()
    ref = solve(H_ref, S_ref, wf.orbitals.n_occupied * 2)
    occ = slice(0, wf.orbitals.n_occupied)
    row["H_MAE_uHa"] = float(np.abs(wf.hamiltonian - H_ref).mean() * 1e6)
    row["eps_occ_MAE_uHa"] = float(np.abs(wf.orbitals.energies[occ] - ref.energies[occ]).mean() * 1e6)
    gap_error = abs(wf.orbitals.gap - ref.gap) * HARTREE_EV  # NaN when either has no virtual orbital
    row["gap_error_eV"] = float(gap_error) if np.isfinite(gap_error) else 0.0
    row["atoms"] = len(atoms)
    if variants:
        t0 = time.perf_counter()
        exact = self_consistency(wf, grid_level=3, density_fit=False)
        row["exact_gradient_rms"], row["exact_seconds"] = exact["gradient_rms"], time.perf_counter() - t0
    if scf:
        kwargs = dict(xc=wf.xc, basis=wf.basis, conv_tol=1e-9, forces=False)
        row["scf_iterations_predicted"] = run_dft(atoms, dm0=wf.orbitals.density_matrix, **kwargs).n_iterations
        row["scf_iterations_minao"] = run_dft(atoms, **kwargs).n_iterations
    return row


def summary(rows: list[dict], label: str) -> str:
    g = np.array([r["gradient_rms"] for r in rows])
    h = np.array([r["H_MAE_uHa"] for r in rows])
    eps = np.array([r["eps_occ_MAE_uHa"] for r in rows])
    flagged = np.array([r["verdict"] != "ok" for r in rows])
    bad = (h > BAD_H_UHA) | (np.array([r["gap_error_eV"] for r in rows]) > BAD_GAP_EV)
    good = h < GOOD_H_UHA

    def rho(a, b) -> str:
        return f"{spearmanr(a, b).statistic:6.2f}" if len(set(a)) > 1 and len(set(b)) > 1 else "   n/a"

    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("ok", "doubtful", "unreliable")}
    return (
        f"{label:42s} {len(rows):4d} {np.median(h):9.1f} {np.median(g) * 1e6:10.1f} {rho(g, h)} {rho(g, eps)} "
        f"{counts['ok']:4d} {counts['doubtful']:4d} {counts['unreliable']:4d} "
        f"{f'{flagged[bad].sum()}/{bad.sum()}':>9s} {f'{flagged[good].sum()}/{good.sum()}':>9s} "
        f"{np.median([r['assess_seconds'] for r in rows]):7.3f}"
    )


def groups(rows: list[dict], indices: list[int], dataset, label: str) -> list[tuple[str, list[dict]]]:
    """The pair's rows as one group or, where DATA (not the model's own) marks held-out molecules
    (``phisnet generate --molecules`` with ``ood`` lines), its held-out molecules' rows and the others apart."""
    held = set(dataset.held_out()) if label.endswith("(all)") else set()
    if not held or held.issuperset(indices):
        return [(label, rows)]
    base = label.removesuffix(" (all)")
    out = [r for r, k in zip(rows, indices, strict=True) if k in held]
    other = [r for r, k in zip(rows, indices, strict=True) if k not in held]
    return [(f"{base} (held-out molecules)", out), (f"{base} (other molecules)", other)]


def variants_line(rows: list[dict]) -> str:
    """The exact Fock build beside the assessment's: time, and how the two gradients agree."""
    exact, cheap = [r["exact_gradient_rms"] for r in rows], [r["gradient_rms"] for r in rows]
    rho = spearmanr(exact, cheap).statistic if len(rows) > 2 else float("nan")
    exact_s, cheap_s = np.median([r["exact_seconds"] for r in rows]), np.median([r["assess_seconds"] for r in rows])
    return (
        f"    exact Fock build (grid 3, exact J): median {exact_s:.3f} s against {cheap_s:.3f} s; rank correlation "
        f"of the two gradients {rho:.3f}; ratio of medians {np.median(exact) / np.median(cheap):.3f}"
    )


def scf_line(rows: list[dict]) -> str:
    predicted = [r["scf_iterations_predicted"] for r in rows]
    rho = spearmanr([r["gradient_rms"] for r in rows], predicted).statistic
    minao = np.mean([r["scf_iterations_minao"] for r in rows])
    return (
        f"    SCF iterations: predicted guess {np.mean(predicted):.2f}, minao {minao:.2f}; rank correlation with "
        f"the gradient {rho:.2f}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pairs",
        nargs="+",
        required=True,
        help="MODEL.pt:DATA.db pairs; MODEL.pt:DATA.db:OTHER.pt takes the test split of OTHER.pt (trained on DATA)",
    )
    parser.add_argument("--n", type=int, default=40, help="structures per pair")
    parser.add_argument("--variants", action="store_true", help="also the exact Fock build (grid 3, exact J)")
    parser.add_argument("--scf", action="store_true", help="also SCF iterations from the predicted guess and minao")
    parser.add_argument("--out", help="JSON file of every structure's row")
    args = parser.parse_args(argv)
    all_rows, lines = [], []
    for pair in args.pairs:
        model_path, data_path, *split_of = pair.split(":")
        predictor, dataset = load(model_path), HamiltonianDataset(data_path)
        split, indices = structures(predictor, dataset, args.n, load(split_of[0]) if split_of else None)
        if split == "test of":
            split = f"test of {Path(split_of[0]).stem}"
        label = f"{Path(model_path).stem} on {Path(data_path).stem} ({split})"
        rows = [one(predictor, dataset[k], args.variants, args.scf) for k in tqdm(indices, desc=label, leave=False)]
        for r, k in zip(rows, indices, strict=True):
            r.update(model=model_path, data=data_path, index=k)
        all_rows += rows
        lines += [summary(group, name) for name, group in groups(rows, indices, dataset, label)]
        if args.variants:
            lines.append(variants_line(rows))
        if args.scf:
            lines.append(scf_line(rows))
    header = (
        f"{'model on data (split)':42s} {'n':>4s} {'H uHa':>9s} {'grad uHa':>10s} {'rho H':>6s} {'rho eps':>6s} "
        f"{'ok':>4s} {'doub':>4s} {'unre':>4s} {'bad flag':>9s} {'good flag':>9s} {'sec':>7s}"
    )
    print(
        f"Fock build: grid level {GRID_LEVEL}, density-fitted J. Medians per pair; bad: H > {BAD_H_UHA:g} uHa or "
        f"gap off > {BAD_GAP_EV:g} eV; good: H < {GOOD_H_UHA:g} uHa"
    )
    print(header)
    print("\n".join(lines))
    if len(args.pairs) > 1:
        print(summary(all_rows, "all pairs"))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(all_rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
