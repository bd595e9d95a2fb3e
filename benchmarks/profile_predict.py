"""Where the milliseconds of one prediction go, by stage of the network.

    python benchmarks/profile_predict.py [--repeat 30] [--threads 1]

For water, ethanol and uracil (their shipped models; uracil with random weights in the ethanol model's configuration
where none ships: time does not depend on the weights), each stage is timed with wall-clock wrappers around the
modules and methods that make it, over --repeat predictions after a warm-up, and printed as milliseconds per
prediction (mean) and share of ``Predictor.predict``. Stages: graph (pairs, distances, spherical harmonics), radial
basis, embedding, interaction layers, pair and self features (the rest of the network), output heads, block assembly
into H, the baseline's PySCF integrals and its combination, and the rest of ``predict`` (conversions, thread
setting, Python). Every prediction is of a new geometry (0.02 A random displacements), as in a trajectory. The
wrappers cost a little themselves; compare stages, not totals, with benchmarks/inference.py.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from phisnet.config import PhiSNetConfig
from phisnet.model import PhiSNet
from phisnet.molecules import paper_molecule
from phisnet.predictor import Predictor, load

URACIL = "pretrained/uracil.pt" if Path("pretrained/uracil.pt").is_file() else None  # None: random weights
CASES = (("water", "pretrained/water.pt"), ("ethanol", "pretrained/ethanol.pt"), ("uracil", URACIL))


def timed(totals: dict, stage: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[stage] += time.perf_counter() - t0

    return wrapper


def instrument(model: PhiSNet, totals: dict) -> None:
    """Wrap the stages of ``model`` (instance attributes shadow the class's methods; modules get hooks)."""
    model._graph = timed(totals, "graph", model._graph)
    model.gaussians = timed(totals, "radial basis", model.gaussians)
    model._assemble = timed(totals, "block assembly", model._assemble)
    if model.baseline is not None:
        model.baseline.integrals = timed(totals, "baseline integrals (PySCF)", model.baseline.integrals)
        model.baseline.forward = timed(totals, "baseline combination", model.baseline.forward)
    groups = {"embedding": [model.embedding, model.embed_linear], "interaction layers": list(model.interactions)}
    groups["output heads"] = list(model.heads.values())
    for stage, modules in groups.items():
        for module in modules:
            module.forward = timed(totals, stage, module.forward)
    model.forward = timed(totals, "network", model.forward)


def profile(predictor: Predictor, atoms, repeat: int) -> dict:
    """Stage times over ``repeat`` predictions, each of a new geometry (the baseline keeps its integrals of
    geometries it has seen: one geometry over and over would time them once)."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(repeat + 5):
        moved = atoms.copy()
        moved.positions += rng.normal(scale=0.02, size=moved.positions.shape)
        frames.append(moved)
    totals = defaultdict(float)
    instrument(predictor.model, totals)
    for moved in frames[:5]:
        predictor.predict(moved)
    totals.clear()
    t0 = time.perf_counter()
    for moved in frames[5:]:
        predictor.predict(moved)
    total = (time.perf_counter() - t0) / repeat
    ms = {stage: seconds / repeat * 1000 for stage, seconds in totals.items()}
    named = sum(v for k, v in ms.items() if k != "network")
    ms["pair and self features"] = ms.pop("network") - named
    ms["rest of predict"] = total * 1000 - named - ms["pair and self features"]
    ms["predict"] = total * 1000
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    results = {}
    for name, path in CASES:
        atoms = paper_molecule(name)
        if path is None:
            config = load("pretrained/ethanol.pt").model.config.to_json()
            config["elements"] = sorted(set(atoms.numbers.tolist()))
            predictor = Predictor(PhiSNet(PhiSNetConfig(**config)).eval(), {}, threads=args.threads, trace=False)
            name += " (untrained)"
        else:
            predictor = load(path, threads=args.threads, trace=False)  # op by op: the stages are timed
        results[name] = profile(predictor, atoms, args.repeat)
    print(f"torch {torch.__version__}, {args.threads} thread(s); ms per prediction (share of predict)")
    header = f"{'stage':<28}" + "".join(f"{name:>22}" for name in results)
    print(header)
    print("-" * len(header))
    for stage in next(iter(results.values())):
        cells = ""
        for ms in results.values():
            value = ms.get(stage, 0.0)
            cells += (
                f"{value:>12.2f} ({100 * value / ms['predict']:>4.0f} %)" if stage != "predict" else f"{value:>22.2f}"
            )
        print(f"{stage:<28}{cells}")


if __name__ == "__main__":
    main()
