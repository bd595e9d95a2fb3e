"""Eager against ``torch.compile``d prediction (``Predictor.compile``), side by side in one run.

    python benchmarks/compile.py [--n 20] [--threads 1]

For each model and molecule: one eager and one compiled predictor of the same checkpoint; the compiled one's first
call (the compilation) is timed alone, then both predict the same --n new geometries (the molecule rattled by
0.02 A, a new geometry each call as in a trajectory), alternating call by call so that the machine's load falls on
both alike. Prints the median time per prediction, the ratio, and the largest |H_compiled - H_eager| over all
geometries (Hartree). The compilation is cached on disk by torch (``/tmp/torchinductor_$USER``), so a second run
compiles faster.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from phisnet import load, read_molecules

CASES = [("pretrained/water.pt", "water"), ("pretrained/ethanol.pt", "ethanol"), ("pretrained/general.pt", "uracil")]


def geometries(name: str, n: int, seed: int = 0):
    atoms = read_molecules(name)[0]
    rng = np.random.default_rng(seed)
    for _ in range(n):
        frame = atoms.copy()
        frame.positions += rng.normal(0.0, 0.02, frame.positions.shape)
        yield frame


def one(path: str, name: str, n: int, threads) -> dict:
    eager = load(path, threads=threads, trace=False)
    compiled = load(path, threads=threads).compile()
    frames = list(geometries(name, n + 1))
    eager.warm_up()
    t0 = time.perf_counter()
    compiled.predict(frames[0])
    compile_seconds = time.perf_counter() - t0
    times = {"eager": [], "compiled": []}
    diff = 0.0
    for frame in frames[1:]:
        a, b = eager.predict(frame), compiled.predict(frame)
        times["eager"].append(a.seconds)
        times["compiled"].append(b.seconds)
        diff = max(diff, float(np.abs(a.hamiltonian - b.hamiltonian).max()))
    eager_ms, compiled_ms = (1e3 * float(np.median(times[k])) for k in ("eager", "compiled"))
    return {
        "case": f"{path.split('/')[-1]} on {name}",
        "atoms": len(frames[0]),
        "compile_s": compile_seconds,
        "eager_ms": eager_ms,
        "compiled_ms": compiled_ms,
        "ratio": eager_ms / compiled_ms,
        "max_dH": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="new geometries per case")
    parser.add_argument("--threads", default="auto", help="torch threads per prediction, or auto")
    args = parser.parse_args()
    threads = args.threads if args.threads == "auto" else int(args.threads)
    print(
        f"{'model on molecule':28s} {'atoms':>5s} {'compile/s':>9s} {'eager/ms':>9s} {'compiled/ms':>11s} "
        f"{'speed-up':>8s} {'max |dH|/Ha':>12s}"
    )
    for path, name in CASES:
        r = one(path, name, args.n, threads)
        print(
            f"{r['case']:28s} {r['atoms']:5d} {r['compile_s']:9.1f} {r['eager_ms']:9.1f} {r['compiled_ms']:11.1f} "
            f"{r['ratio']:7.2f}x {r['max_dH']:12.1e}"
        )


if __name__ == "__main__":
    main()
