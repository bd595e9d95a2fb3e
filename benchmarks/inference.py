"""Prediction time and memory of each pretrained model against the PySCF SCF it replaces.

    python benchmarks/inference.py [--models pretrained/*.pt] [--repeat 20] [--untrained uracil ...]
        [--set-smiles CCCCCCCCCO ...]

For every model, on slightly displaced structures of its molecule (a new one for every timed call, as in a
trajectory: the baseline's PySCF integrals are part of each prediction), measured side by side in one run: the
model's prediction time (median of --repeat calls after 5 warm-up calls),
the growth of the process's peak resident memory from loading the model and predicting,
and PySCF's SCF time (default guess and tolerance) and peak-memory growth for the same
geometry, with the time ratio. The column "e3nn / s" is the same prediction with every tensor product, linear
map and gate evaluated by e3nn's own code (``phisnet.tensor_product.e3nn_reference``), timed alternating with the
default batched evaluation, so "gain" shows what the batched products buy. "1 thread / s" is the default
evaluation on one torch thread, also timed alternating ("predict / s" uses torch's thread count). "recorded / s"
is the same prediction once the network runs as a recorded graph (``phisnet.traced``, what a molecule predicted
1000 times gets: an MD run), timed after the recording, and "long run" its speed-up over the SCF.
``--untrained`` molecules (default: uracil, the paper's largest) are timed with random weights in the
configuration of the largest model given: the time of a prediction does not depend on the weights, so this
measures the speed-up a trained model will have.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from pyscf import lib

from phisnet.config import PhiSNetConfig
from phisnet.io import read_molecules
from phisnet.model import PhiSNet
from phisnet.predictor import Predictor, load
from phisnet.reference import run_dft
from phisnet.tensor_product import e3nn_reference


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=sorted(glob.glob("pretrained/*.pt")))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--untrained",
        nargs="*",
        default=[] if Path("pretrained/uracil.pt").is_file() else ["uracil"],
        help="molecules timed with a randomly initialised model of the shipped size (speed needs no training); "
        "default: uracil while no uracil model ships",
    )
    parser.add_argument(
        "--set-smiles",
        nargs="*",
        default=["CCCCCCCCCO"],
        help="extra molecules (SMILES) timed with every model trained on a molecule set; the default, nonan-1-ol, "
        "has 30 atoms, the size the general model is meant to answer in under a second",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not args.models and not args.untrained:
        raise SystemExit("no models found in pretrained/")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), PySCF with {lib.num_threads()} threads")
    header = (
        f"{'model':<28}{'atoms':>6}{'predict / s':>13}{'MB':>6}{'e3nn / s':>10}{'gain':>6}{'1 thread / s':>14}"
        f"{'PySCF SCF / s':>15}{'iter':>6}{'MB':>6}{'speed-up':>10}{'recorded / s':>14}{'long run':>10}"
    )
    print(header)
    print("-" * len(header))
    shipped = None
    for path in args.models:
        rss0 = peak_rss_mb()
        predictor = load(path)
        size = sum(p.numel() for p in predictor.model.parameters())
        if shipped is None or size > shipped[0]:
            shipped = (size, predictor.model.config)
        measure(path, predictor, benchmark_molecule(predictor), args.repeat, rss0)
        if predictor.info.is_set_model:
            for smiles in args.set_smiles:
                atoms = read_molecules(smiles, format="smiles")[0]
                label = f"{Path(path).name} on {atoms.get_chemical_formula()}"
                measure(label, predictor, atoms, args.repeat, peak_rss_mb())
    shipped = shipped[1] if shipped else PhiSNetConfig()
    for name in args.untrained:
        rss0 = peak_rss_mb()
        atoms = read_molecules(name)[0]
        config = PhiSNetConfig(**{**shipped.to_json(), "elements": sorted(set(atoms.numbers.tolist()))})
        predictor = Predictor(PhiSNet(config).eval(), {"xc": "pbe", "basis": config.basis})
        measure(f"{name} (untrained)", predictor, atoms, args.repeat, rss0)
    print_notes(args, shipped)


def print_notes(args: argparse.Namespace, shipped: PhiSNetConfig) -> None:
    """What the table's columns mean."""
    print("MB: growth of the process's peak resident memory (ru_maxrss) during that step.")
    if args.untrained:
        print(
            f"untrained: random weights in the configuration of the largest model (channels {shipped.channels}, "
            f"{shipped.n_interactions} interactions); time only."
        )
    print(
        "A model trained on a molecule set is timed on the largest molecule of the set it has seen, then on each "
        "--set-smiles molecule."
    )


def benchmark_molecule(predictor):
    """The model's own molecule; for a model of a molecule set, the largest seen molecule of the built-in set."""
    seen = (predictor.metadata.get("molecules") or {}).get("seen")
    if not seen:
        name = predictor.info.molecule
        return read_molecules(name)[0]
    from phisnet.molecules import builtin_molecule_set, conformers

    candidates = [conformers(e, n=1)[0] for e in builtin_molecule_set() if e.name in set(seen)]
    return max(candidates, key=len)


def measure(label: str, predictor, atoms, repeat: int, rss0: float) -> None:
    """Print one row: prediction time and memory against PySCF's SCF for a displaced geometry."""
    atoms = atoms.copy()
    atoms.positions += np.random.default_rng(0).normal(scale=0.02, size=atoms.positions.shape)
    # Fixed thread counts, not the predictor's "auto" choice: this loop's own load would sway it.
    predictor.threads = torch.get_num_threads()
    for _ in range(5):  # warm-up: the first calls in a process pay one-time set-up (measured: up to 3x slower)
        predictor.predict(atoms)
        with e3nn_reference():
            predictor.predict(atoms)
    times, e3nn_times, one_thread_times = [], [], []
    rng = np.random.default_rng(1)
    for _ in range(repeat):
        # Each timed call sees a geometry of its own: a model's baseline keeps the PySCF integrals of geometries it
        # has seen, so one geometry over and over would leave them out (20-50 % of a new geometry's time,
        # benchmarks/profile_predict.py).
        for times_of, reference, threads in (
            (times, False, torch.get_num_threads()),
            (e3nn_times, True, torch.get_num_threads()),
            (one_thread_times, False, 1),
        ):
            moved = atoms.copy()
            moved.positions += rng.normal(scale=0.005, size=moved.positions.shape)
            predictor.threads = threads
            with e3nn_reference() if reference else contextlib.nullcontext():
                t0 = time.perf_counter()
                predictor.predict(moved)
                times_of.append(time.perf_counter() - t0)
    predictor.threads = torch.get_num_threads()
    t_recorded = recorded_seconds(predictor, atoms, repeat, rng)
    model_mb = peak_rss_mb() - rss0
    rss1 = peak_rss_mb()
    ref = run_dft(
        atoms,
        xc=predictor.info.xc,
        basis=predictor.info.basis,
        forces=False,
        keep_ao=False,  # PySCF as it ships: what a user of plain PySCF would run
    )
    pyscf_mb = peak_rss_mb() - rss1
    t, t_e3nn, t_one = (statistics.median(x) for x in (times, e3nn_times, one_thread_times))
    print(
        f"{label:<28}{len(atoms):>6}{t:>13.4f}{model_mb:>6.0f}{t_e3nn:>10.4f}{t_e3nn / t:>5.1f}x{t_one:>14.4f}"
        f"{ref.seconds:>15.2f}{ref.n_iterations:>6}{pyscf_mb:>6.0f}{ref.seconds / t:>9.0f}x"
        f"{t_recorded:>14.4f}{ref.seconds / t_recorded:>9.0f}x"
    )


def recorded_seconds(predictor, atoms, repeat: int, rng) -> float:
    """Median time of a prediction through the recorded graph (recorded at once here, then warmed up)."""
    predictor.trace(record_after=1)
    try:
        for _ in range(4):  # the recording, then TorchScript's first optimised runs
            predictor.predict(atoms)
        times = []
        for _ in range(repeat):
            moved = atoms.copy()
            moved.positions += rng.normal(scale=0.005, size=moved.positions.shape)
            t0 = time.perf_counter()
            predictor.predict(moved)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        predictor.trace()  # back to the default count


if __name__ == "__main__":
    main()
