"""Write tests/data/pretrained_outputs.npz: what every shipped checkpoint predicts for one fixed molecule.

    python tests/pretrained_outputs.py        # after a checkpoint in pretrained/ changed on purpose

``tests/test_pretrained.py`` compares each shipped model's prediction with these, so that moving code around
(issue 44) cannot change a shipped model's answers unnoticed. Each entry records the checkpoint's SHA-256: a
retrained model is a deliberate change, and the test says to rerun this script rather than report a difference.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "pretrained_outputs.npz"
MOLECULE = {  # the molecule each shipped model predicts here; any other (the general model): uracil
    "water": "water",
    "water-hf": "water",
    "water-ccsdt": "water",
    "ethanol": "ethanol",
    "malondialdehyde": "malondialdehyde",
    "uracil": "uracil",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def molecule_for(name: str) -> str:
    return MOLECULE.get(name, "uracil")


def predict(path: Path):
    from phisnet.io import read_molecules
    from phisnet.predictor import load

    atoms = read_molecules(molecule_for(path.stem))[0]
    return load(path).predict(atoms)


def main() -> None:
    from phisnet.files import atomic_path
    from phisnet.predictor import list_pretrained

    arrays = {}
    for path in list_pretrained(ROOT / "pretrained"):
        prediction = predict(path)
        arrays[f"{path.stem}/sha256"] = np.array(sha256(path))
        arrays[f"{path.stem}/hamiltonian"] = prediction.hamiltonian
        arrays[f"{path.stem}/overlap"] = prediction.overlap
        print(f"{path.stem}: {molecule_for(path.stem)}, H {prediction.hamiltonian.shape}")
    with atomic_path(OUT) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
