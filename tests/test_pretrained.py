"""Every shipped checkpoint predicts what it did when tests/data/pretrained_outputs.npz was written (issue 44:
code moves must not change a shipped model's answers)."""

from pathlib import Path

import numpy as np
import pytest
from pretrained_outputs import OUT, predict, sha256

from phisnet.predictor import list_pretrained

ROOT = Path(__file__).resolve().parents[1]
STORED = np.load(OUT)


@pytest.mark.parametrize("path", list_pretrained(ROOT / "pretrained"), ids=lambda p: p.stem)
def test_a_shipped_model_predicts_what_it_did(path):
    name = path.stem
    assert f"{name}/sha256" in STORED, f"{name} is new: run python tests/pretrained_outputs.py and commit its output"
    if str(STORED[f"{name}/sha256"]) != sha256(path):
        pytest.fail(f"pretrained/{name}.pt changed; if on purpose, run python tests/pretrained_outputs.py")
    prediction = predict(path)
    for key in ("hamiltonian", "overlap"):  # float32 rounding of a reordered sum (a few ulp), nothing more
        np.testing.assert_allclose(getattr(prediction, key), STORED[f"{name}/{key}"], rtol=5e-7, atol=1e-6)
