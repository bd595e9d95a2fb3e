"""phisnet.split_rebuild: a model's test split made again holds its dataset's rows and scores the same."""

import dataclasses

import ase.db
import numpy as np
import pytest
from tiny import TINY_ARGS

from phisnet.cli import main as cli_main
from phisnet.data import generate
from phisnet.dataset import HamiltonianDataset
from phisnet.errors import InputError
from phisnet.md import MDSettings
from phisnet.metrics import evaluate, model_split
from phisnet.predictor import load
from phisnet.split_rebuild import model_test_data, rebuild_split

QUIET = dict(progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 9-row MD dataset of water (HF/STO-3G, short blocks), a tiny model trained on it, its rebuilt test split."""
    folder = tmp_path_factory.mktemp("rebuild")
    full = folder / "full.db"
    md = MDSettings(block=4, spacing_fs=20, equilibration_fs=100)
    generate("water", 9, full, xc="hf", basis="sto-3g", sampler="md", md=md, **QUIET)
    train = ["train", "--data", str(full), "--out", str(folder / "run"), "--train", "5", "--val", "1"]
    assert cli_main([*train, "--batch-size", "2", "--max-steps", "2", "--val-every", "2", *TINY_ARGS]) == 0
    model = folder / "run" / "best.pt"
    rebuilt = rebuild_split(model, "test", folder / "test.db", **QUIET)
    return full, model, rebuilt


def test_the_rebuilt_rows_are_the_datasets_rows(trained):
    full, model, rebuilt = trained
    whole = {r.sample_index: r for r in ase.db.connect(full).select()}
    rows = {r.sample_index: r for r in ase.db.connect(rebuilt).select()}
    predictor, dataset = load(model), HamiltonianDataset(full)
    test = sorted(dataset[k]["sample_index"] for k in model_split(predictor, dataset))
    assert sorted(rows) == test and len(test) == 3
    for i, row in rows.items():
        np.testing.assert_array_equal(row.positions, whole[i].positions)
        np.testing.assert_allclose(row.data["hamiltonian"], whole[i].data["hamiltonian"], atol=1e-8)
    subset = ase.db.connect(rebuilt).metadata["subset"]
    assert subset["split"] == "test" and subset["n_structures"] == 9 and subset["positions"] == test


def test_a_model_scores_the_same_on_the_rebuilt_split(trained):
    full, model, rebuilt = trained
    predictor = load(model)
    a, b = HamiltonianDataset(full), HamiltonianDataset(rebuilt)
    on_full = evaluate(predictor, a, model_split(predictor, a))
    on_rebuilt = evaluate(predictor, b, model_split(predictor, b))
    assert on_rebuilt.n_structures == on_full.n_structures == 3
    assert on_rebuilt.h_mae_uha == pytest.approx(on_full.h_mae_uha, rel=1e-6)
    with pytest.raises(InputError, match="rows present"):
        model_split(predictor, b, "val")  # only the test rows are there


def test_a_rebuilt_test_split_is_never_training_data(trained, tmp_path, capsys):
    full, _, rebuilt = trained
    train = ["train", "--out", str(tmp_path / "r"), "--train", "1", "--val", "1", "--max-steps", "1", *TINY_ARGS]
    assert cli_main([*train, "--data", str(rebuilt)]) == 2
    assert "holds only the rebuilt test split" in capsys.readouterr().err
    assert cli_main([*train, "--data", str(full), "--extra-train", str(rebuilt)]) == 2
    assert "would spoil that model's test figures" in capsys.readouterr().err


def test_rebuilding_resumes_and_refuses_what_it_cannot_rebuild(trained, tmp_path, capsys):
    full, model, rebuilt = trained
    messages = []
    rebuild_split(model, "test", rebuilt, progress=False, log=messages.append)
    assert any("already holds 3 structures" in m for m in messages)
    with pytest.raises(InputError, match="holds other rows"):
        rebuild_split(model, "val", rebuilt, **QUIET)  # the same settings, another split: a new file
    generate_cli = ["generate", "--split-of", str(model), "--out", str(tmp_path / "x.db")]
    assert cli_main([*generate_cli, "water", "--temperature", "300"]) == 2
    assert "leave out MOLECULE, --temperature" in capsys.readouterr().err
    assert cli_main(["generate", "--split-of", "pretrained/general.pt", "--out", str(tmp_path / "y.db")]) == 2
    assert "only a one-molecule dataset's split is rebuilt" in capsys.readouterr().err
    assert cli_main(["generate", "water", "--out", str(tmp_path / "z.db")]) == 2
    assert "Give --n" in capsys.readouterr().err


def test_the_app_finds_a_models_test_geometries_in_its_rebuilt_split(trained, tmp_path):
    full, model, rebuilt = trained
    info = dataclasses.replace(load(model).info, data_path="data/full.db")  # as training records it, relative
    root = tmp_path / "project"
    assert model_test_data(info, model, root) is None
    (root / "data").mkdir(parents=True)
    (root / "data" / "best-test.db").write_bytes(rebuilt.read_bytes())
    assert model_test_data(info, model, root) == root / "data" / "best-test.db"
    (root / "data" / "full.db").write_bytes(full.read_bytes())
    assert model_test_data(info, model, root) == root / "data" / "full.db"  # its own dataset first
