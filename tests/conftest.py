"""Shared test settings."""

import e3nn
import pytest

# opt_einsum path optimisation makes each e3nn module take seconds to build and
# changes no result; tests build many small models, so skip it here.
e3nn.set_optimization_defaults(optimize_einsums=False)


# Two small datasets that the training tests share (test_training, test_losses, test_train_step); a module may
# define its own fixture of the same name (test_data does).
@pytest.fixture(scope="session")
def set_db(tmp_path_factory):
    """Three molecules (methane held out), HF/STO-3G: cheap, and every batch mixes compositions."""
    from phisnet.molecules import MoleculeEntry
    from phisnet.set_generation import generate_set

    path = tmp_path_factory.mktemp("train") / "set.db"
    entries = [
        MoleculeEntry("water", "g2:H2O"),
        MoleculeEntry("ammonia", "g2:NH3"),
        MoleculeEntry("methane", "g2:CH4", held_out=True),
    ]
    generate_set(entries, 4, path, xc="hf", basis="sto-3g", progress=False, log=lambda m: None)
    return path


@pytest.fixture(scope="session")
def water_db(tmp_path_factory):
    from phisnet.data import generate

    path = tmp_path_factory.mktemp("train") / "water.db"
    generate("water", 8, path, progress=False, log=lambda m: None)
    return path


class Oracle:
    """A 'model' that returns the reference matrices: every error must vanish."""

    metadata = {"basis": "def2-svp", "xc": "pbe"}
    subspace = 0.0

    def __init__(self, ref):
        from phisnet.checkpoint import ModelInfo

        self.ref = ref
        self.info = ModelInfo.from_metadata(self.metadata)

    def predict(self, atoms):
        from phisnet.predictor import Prediction

        return Prediction(self.ref.hamiltonian, self.ref.overlap, 0.0)
