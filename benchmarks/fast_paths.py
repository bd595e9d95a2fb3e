"""The shortcuts of a prediction and of a reference calculation against the code they replace, side by side.

    python benchmarks/fast_paths.py [--n 10] [--rounds 6] [--scf 2]

1. The baseline's integrals: a PySCF molecule built afresh for every geometry against the one built once per thread
   and moved (``phisnet.baseline._placed``), on --n new geometries of each paper molecule (0.02 A displacements),
   alternating geometry by geometry; the largest difference of the matrices.
2. The network with e3nn's own ``o3.Linear`` and ``Gate`` against ``phisnet.linear.Linear`` and ``GatedLinear``'s
   written-out gate, on the same --n geometries predicted again (their integrals kept, so the network alone),
   alternating by rounds; the largest difference in H (Hartree).
3. A prediction (integrals included, a new geometry each time) with the network op by op against its recorded graph
   (``phisnet.traced``, ``Predictor.trace``), alternating by rounds over --n geometries; the largest difference in H
   and the recording's cost (the second and third predictions, recording and the graph's first optimised run).
4. A dataset's reference calculation (PBE/def2-SVP, minao guess, the datasets' SCF tolerance, no forces) with
   PySCF's integrator as it ships and ``mf.get_fock()`` after the SCF, against ``run_dft``'s kept orbital values
   (``phisnet.ao_values``) and the Fock matrix of the driver's last potential; --scf geometries of each molecule,
   alternating; seconds per calculation (molecule to H), the SCF iterations and the largest difference in H.

Medians per geometry, milliseconds, the thread count of torch and PySCF as set (e.g. ``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from e3nn import o3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile import geometries  # noqa: E402 - the benchmark scripts share the rattled geometries

from phisnet import baseline, layers, linear  # noqa: E402
from phisnet.data import DATASET_CONV_TOL  # noqa: E402
from phisnet.predictor import load  # noqa: E402
from phisnet.reference import build_mol, make_mf, run_dft  # noqa: E402

MOLECULES = ("water", "ethanol", "malondialdehyde", "uracil")
SCREENING = (0.1, 0.3, 1.0, 3.0, 10.0)  # the shipped models' baseline_screening


def built_afresh(numbers, positions) -> np.ndarray:
    """The integrals as before the shortcut: a new PySCF molecule and charge clouds for this geometry."""
    mol = baseline._mol(numbers, positions, "def2-svp")
    nuclear = mol.intor("int1e_nuc")
    screened = [nuclear - w for w in baseline._smeared_attractions(mol, *baseline._clouds(mol, SCREENING))]
    return np.stack([mol.intor("int1e_ovlp"), mol.intor("int1e_kin"), nuclear, *screened])


def integrals(name: str, n: int) -> tuple[float, float, float]:
    times, diff = {"fresh": [], "moved": []}, 0.0
    for k, frame in enumerate(geometries(name, n + 1)):
        results = {}
        for way in ("fresh", "moved") if k % 2 else ("moved", "fresh"):
            t0 = time.perf_counter()
            if way == "fresh":
                results[way] = built_afresh(frame.numbers, frame.positions)
            else:
                results[way] = baseline.one_electron_integrals(frame.numbers, frame.positions, "def2-svp", SCREENING)
            if k:  # the first geometry builds the kept molecule: not timed
                times[way].append(time.perf_counter() - t0)
        diff = max(diff, float(np.abs(results["fresh"] - results["moved"]).max()))
    return 1e3 * np.median(times["fresh"]), 1e3 * np.median(times["moved"]), diff


def e3nn_linear(self, features, weight=None, bias=None):
    return o3.Linear.forward(self, features, weight, bias)


def e3nn_gate(self, x):
    return self.gate(self.linear(x))


def network(name: str, n: int, rounds: int) -> tuple[float, float, float]:
    predictor, frames = load(f"pretrained/{name}.pt", trace=False), list(geometries(name, n))
    for frame in frames:  # integrals computed and kept: the rounds below time the network
        predictor.predict(frame)
    ours = {"linear": linear.Linear.forward, "gate": layers.GatedLinear.forward}
    times, H = {"e3nn": [], "ours": []}, {}
    try:
        for r in range(rounds):
            for way in ("e3nn", "ours") if r % 2 else ("ours", "e3nn"):
                linear.Linear.forward = ours["linear"] if way == "ours" else e3nn_linear
                layers.GatedLinear.forward = ours["gate"] if way == "ours" else e3nn_gate
                t0 = time.perf_counter()
                H[way] = [predictor.predict(frame).hamiltonian for frame in frames]
                times[way].append((time.perf_counter() - t0) / len(frames))
    finally:
        linear.Linear.forward, layers.GatedLinear.forward = ours["linear"], ours["gate"]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(H["e3nn"], H["ours"], strict=True))
    return 1e3 * np.median(times["e3nn"]), 1e3 * np.median(times["ours"]), diff


def traced(name: str, n: int, rounds: int) -> tuple[float, float, float, float]:
    predictors = {
        "op by op": load(f"pretrained/{name}.pt", trace=False),
        "traced": load(f"pretrained/{name}.pt").trace(record_after=2),
    }
    warm, record = list(geometries(name, 3, seed=2)), []
    for predictor in predictors.values():  # the second prediction records the graph: its time is printed
        for frame in warm:
            t0 = time.perf_counter()
            predictor.predict(frame)
            record.append(time.perf_counter() - t0)
    times, H = {way: [] for way in predictors}, {}
    for r in range(rounds):
        frames = list(geometries(name, n, seed=10 + r))  # new geometries: their integrals are computed as well
        for way in predictors if r % 2 else reversed(list(predictors)):
            t0 = time.perf_counter()
            H[way] = [predictors[way].predict(frame).hamiltonian for frame in frames]
            times[way].append((time.perf_counter() - t0) / len(frames))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(H["op by op"], H["traced"], strict=True))
    return 1e3 * np.median(times["op by op"]), 1e3 * np.median(times["traced"]), diff, record[4] + record[5]


def stock_scf(atoms) -> tuple[np.ndarray, int]:
    """H as before the shortcuts: PySCF's RKS as it ships, then ``mf.get_fock()``."""
    mf = make_mf(build_mol(atoms), "pbe")
    mf.conv_tol = DATASET_CONV_TOL
    mf.kernel()
    return mf.get_fock(), mf.cycles


def kept_scf(atoms) -> tuple[np.ndarray, int]:
    ref = run_dft(atoms, conv_tol=DATASET_CONV_TOL, forces=False)
    return ref.hamiltonian, ref.n_iterations


def reference(name: str, n: int) -> tuple[float, float, float, float]:
    times, iterations, diff = {"stock": [], "kept": []}, {"stock": [], "kept": []}, 0.0
    for k, frame in enumerate(geometries(name, n, seed=1)):
        H = {}
        for way in ("stock", "kept") if k % 2 else ("kept", "stock"):
            t0 = time.perf_counter()
            H[way], cycles = stock_scf(frame) if way == "stock" else kept_scf(frame)
            times[way].append(time.perf_counter() - t0)
            iterations[way].append(cycles)
        diff = max(diff, float(np.abs(H["stock"] - H["kept"]).max()))
    if iterations["stock"] != iterations["kept"]:
        raise RuntimeError(f"{name}: the SCF took other iterations ({iterations})")
    return np.median(times["stock"]), np.median(times["kept"]), np.mean(iterations["kept"]), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="geometries per molecule")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of the network comparison")
    parser.add_argument("--scf", type=int, default=2, help="geometries per molecule of the reference comparison")
    args = parser.parse_args()
    print("baseline integrals, ms       built afresh     moved   ratio  max |dM|")
    for name in MOLECULES:
        a, b, d = integrals(name, args.n)
        print(f"{name:24s} {a:14.2f} {b:9.2f} {b / a:7.2f}  {d:.1e}")
    print("network, ms                  e3nn's maps      ours   ratio  max |dH| / Ha")
    for name in MOLECULES:
        a, b, d = network(name, args.n, args.rounds)
        print(f"{name:24s} {a:14.2f} {b:9.2f} {b / a:7.2f}  {d:.1e}")
    print("prediction, ms                 op by op    traced   ratio  max |dH| / Ha  recording / s")
    for name in MOLECULES:
        a, b, d, r = traced(name, args.n, args.rounds)
        print(f"{name:24s} {a:14.2f} {b:9.2f} {b / a:7.2f}  {d:.1e}  {r:13.2f}")
    if args.scf:
        print("reference SCF, s            PySCF as shipped   kept   ratio  max |dH| / Ha  iterations")
    for name in MOLECULES if args.scf else ():
        a, b, cycles, d = reference(name, args.scf)
        print(f"{name:24s} {a:14.2f} {b:9.2f} {b / a:7.2f}  {d:.1e}  {cycles:10.1f}")


if __name__ == "__main__":
    main()
