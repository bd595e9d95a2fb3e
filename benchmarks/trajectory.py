"""A trajectory of one molecule predicted frame by frame and in batches, against PySCF's SCF per frame.

    python benchmarks/trajectory.py [--model pretrained/ethanol.pt] [--frames 100] [--scf-frames 5]
        [--batch-sizes 1 4 16]

--frames geometries of the model's molecule (thermal displacements of 0.03 A RMS, seed 0; the time of a
prediction does not depend on the geometry) are predicted by ``Predictor.predict`` one by one and by
``Predictor.predict_many`` in each batch size, network and eigenproblem (``predict_wavefunction``) timed
apart, all in one run. PySCF's SCF (default guess and tolerance, the model's level) runs on the first
--scf-frames of them: the SCF time of the trajectory is their mean times --frames (stated in the table).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from pyscf import lib

from phisnet.molecules import paper_molecule
from phisnet.observables import predict_wavefunction
from phisnet.predictor import load
from phisnet.reference import run_dft


def frames_of(name: str, n: int) -> list:
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n):
        atoms = paper_molecule(name)
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        frames.append(atoms)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained/ethanol.pt")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--scf-frames", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    predictor = load(args.model, threads=torch.get_num_threads())
    name = predictor.info.molecule
    frames = frames_of(name, args.frames)
    predictor.warm_up()
    predictor.predict_many(frames[:16], batch_size=16)  # one-time set-up of the batched shapes
    rows = []
    t0 = time.perf_counter()
    singles = [predictor.predict(atoms) for atoms in frames]
    rows.append(("predict, one by one", time.perf_counter() - t0))
    for size in args.batch_sizes:
        t0 = time.perf_counter()
        predictor.predict_many(frames, batch_size=size)
        rows.append((f"predict_many, batches of {size}", time.perf_counter() - t0))
    t0 = time.perf_counter()
    for atoms, prediction in zip(frames, singles, strict=True):
        predict_wavefunction(predictor, atoms, prediction=prediction)
    solve = time.perf_counter() - t0
    xc, basis = predictor.info.xc, predictor.info.basis
    stock = {"xc": xc, "basis": basis, "forces": False, "keep_ao": False}  # PySCF as it ships
    scf = [run_dft(atoms, **stock).seconds for atoms in frames[: args.scf_frames]]
    scf_total = float(np.mean(scf)) * args.frames
    print(
        f"{name}, {args.frames} frames, model {args.model}; torch {torch.get_num_threads()} threads, "
        f"PySCF {lib.num_threads()} threads"
    )
    print(f"PySCF SCF ({xc}/{basis}): {np.mean(scf):.3f} s a frame (mean of {len(scf)}), {scf_total:.1f} s for all")
    print(f"eigenproblem and density (predict_wavefunction beyond the network): {solve:.3f} s for all")
    header = f"{'network':<32}{'total / s':>11}{'ms a frame':>12}{'speed-up':>10}{'with orbitals':>15}"
    print(header)
    print("-" * len(header))
    for label, seconds in rows:
        print(
            f"{label:<32}{seconds:>11.3f}{seconds / args.frames * 1000:>12.1f}{scf_total / seconds:>9.0f}x"
            f"{scf_total / (seconds + solve):>14.0f}x"
        )
    print("speed-up: the SCF time of all frames over the network's; with orbitals: over network plus eigenproblem.")


if __name__ == "__main__":
    main()
