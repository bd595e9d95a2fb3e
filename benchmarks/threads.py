"""Prediction time on one and on several torch threads, with the cores idle and with them busy.

    python benchmarks/threads.py [--repeat 7] [--busy N]

For each pretrained molecule model (water on water, ethanol on ethanol, the general model on
nonan-1-ol, 30 atoms), the median time of ``--repeat`` predictions at torch's thread count and at one
thread, first with nothing else running, then while ``--busy`` processes (default: one per core) spin
on the CPU, as a training or a dataset generation would. This is what ``Predictor(threads="auto")``
(``phisnet.predictor.auto_threads``) is built on: one thread for small molecules and on a busy machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import torch

from phisnet.io import read_molecules
from phisnet.predictor import load

CASES = [("water.pt", "water", None), ("ethanol.pt", "ethanol", None), ("general.pt", "CCCCCCCCCO", "smiles")]


def spin(stop) -> None:
    """Keep one core busy until ``stop`` is set."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def median_seconds(predictor, atoms, threads: int, repeat: int) -> float:
    predictor.threads = threads
    predictor.predict(atoms)  # first call at this thread count: OpenMP starts its threads
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        predictor.predict(atoms)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="spinning processes in the busy runs")
    parser.add_argument("--pretrained", default="pretrained")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    if threads < 2:
        raise SystemExit(f"torch has {threads} thread here; nothing to compare (unset OMP_NUM_THREADS)")
    cases = []
    for checkpoint, molecule, fmt in CASES:
        path = Path(args.pretrained) / checkpoint
        if path.is_file():
            predictor = load(path)
            atoms = read_molecules(molecule, format=fmt)[0]
            for _ in range(3):  # warm-up: one-time set-up of the first calls
                predictor.predict(atoms)
            cases.append((checkpoint, atoms, predictor))
    if not cases:
        raise SystemExit(f"no models of {[c[0] for c in CASES]} in {args.pretrained}/")
    idle = {name: [median_seconds(p, a, n, args.repeat) for n in (threads, 1)] for name, a, p in cases}
    stop = multiprocessing.Event()
    workers = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)
        busy = {name: [median_seconds(p, a, n, args.repeat) for n in (threads, 1)] for name, a, p in cases}
    finally:
        stop.set()
        for w in workers:
            w.join()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores; busy: {args.busy} spinning processes", end="")
    print(f"; median of {args.repeat} predictions")
    header = f"{'model':<14}{'atoms':>6}{f'idle {threads}t / s':>14}{'idle 1t / s':>13}{f'busy {threads}t / s':>14}"
    header += f"{'busy 1t / s':>13}{'busy gain of 1t':>17}"
    print(header)
    print("-" * len(header))
    for name, atoms, _ in cases:
        (i_n, i_1), (b_n, b_1) = idle[name], busy[name]
        print(f"{name:<14}{len(atoms):>6}{i_n:>14.4f}{i_1:>13.4f}{b_n:>14.4f}{b_1:>13.4f}{b_n / b_1:>16.1f}x")


if __name__ == "__main__":
    main()
