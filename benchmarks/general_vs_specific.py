"""The general (molecule-set) model beside the per-molecule models, on the per-molecule models' test geometries.

    python benchmarks/general_vs_specific.py [--general pretrained/general.pt] [--models pretrained/water.pt ...]

For every per-molecule model (default: the shipped PBE models trained on one molecule), the
test split recorded in its checkpoint, on its own dataset (``data/<molecule>.db``; make it
with the command in its model card), is predicted by that model and by the general model:
geometries neither trained on. Prints the paper's metrics side by side (H MAE, S MAE,
occupied orbital energies, orbital similarity) and the general model's H MAE as a multiple
of the per-molecule model's. A per-molecule model whose dataset is missing is listed as
skipped, with the command that makes it. Note that the general model saw its molecules only
around force-field minima (see its model card), the per-molecule models around DFT minima.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

from phisnet.dataset import HamiltonianDataset
from phisnet.metrics import evaluate, model_split
from phisnet.predictor import load


def per_molecule_models(general_xc: str) -> list[str]:
    """Shipped models trained on one molecule at the general model's level of theory."""
    out = []
    for path in sorted(glob.glob("pretrained/*.pt")):
        meta = load(path).metadata
        if not meta.get("molecules") and meta.get("xc") == general_xc and not meta.get("end_to_end_energy"):
            out.append(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--general", default="pretrained/general.pt")
    parser.add_argument("--models", nargs="+", help="per-molecule models (default: the shipped ones at its level)")
    parser.add_argument("--n", type=int, default=0, help="first N test geometries per molecule (0: all)")
    args = parser.parse_args()
    general = load(args.general)
    models = args.models or per_molecule_models(general.metadata.get("xc"))
    header = (
        f"{'molecule':<17}{'model':<21}{'n':>5}{'H / uHa':>11}{'S / 1e-6':>11}{'eps / uHa':>11}{'psi / %':>9}"
        f"{'H general/own':>15}"
    )
    lines = [header, "-" * len(header)]
    skipped = []
    for path in models:
        own = load(path)
        data = Path(own.metadata.get("data", {}).get("path", ""))
        molecule = (own.metadata.get("data", {}).get("settings") or {}).get("molecule", Path(path).stem)
        if not data.is_file():
            skipped.append(f"{path}: {data} missing; make it with the command in pretrained/{Path(path).stem}.md")
            continue
        dataset = HamiltonianDataset(data)
        test = model_split(own, dataset, "test", path)
        if args.n:
            test = test[: args.n]
        if not set(dataset[test[0]]["atomic_numbers"].tolist()) <= set(general.elements):
            skipped.append(f"{path}: the general model does not know every element of {molecule}")
            continue
        results = [
            (Path(p).name, evaluate(m, dataset, test, progress=True)) for p, m in ((path, own), (args.general, general))
        ]
        for name, m in results:
            ratio = f"{m.h_mae_uha / results[0][1].h_mae_uha:>15.2f}" if name != results[0][0] else ""
            lines.append(
                f"{molecule:<17}{name:<21}{m.n_structures:>5}{m.h_mae_uha:>11.1f}{m.s_mae_1e6:>11.2f}"
                f"{m.eps_mae_uha:>11.1f}{m.psi_percent:>9.2f}{ratio}"
            )
    print(f"General model {args.general}: {general.metadata.get('xc', '?')}/{general.metadata.get('basis', '?')}")
    print("Each per-molecule model's own test split, in its own dataset (data: the path in its checkpoint).")
    print("\n".join(lines))
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
