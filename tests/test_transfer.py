"""HF data with CCSD(T) labels, and fine-tuning on end-to-end energies and forces (issue: transfer learning)."""

import ase.db
import numpy as np
import pytest
from tiny import TINY

from phisnet.cli import main as cli_main
from phisnet.config import PhiSNetConfig
from phisnet.data import generate
from phisnet.dataset import HamiltonianDataset
from phisnet.errors import InputError
from phisnet.labels import label_ccsd_t
from phisnet.predictor import load
from phisnet.reference import HARTREE_EV, build_mol
from phisnet.run_log import read_metrics
from phisnet.train_config import TrainConfig
from phisnet.training import run


@pytest.fixture(scope="module")
def hf_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "water-hf.db"
    generate("water", 6, path, xc="hf", progress=False, log=lambda m: None)
    return path


@pytest.fixture(scope="module")
def labelled_db(hf_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("ccsdt") / "water-hf.db"
    path.write_bytes(hf_db.read_bytes())
    assert cli_main(["ccsdt", str(path), "--n", "5", "--quiet"]) == 0
    return path


def test_ccsd_t_labels_are_pyscfs_and_resume(labelled_db):
    from pyscf import cc, scf

    rows = sorted(ase.db.connect(labelled_db).select(), key=lambda r: r.sample_index)
    assert ["ccsd_t_energy" in r for r in rows] == [True] * 5 + [False]
    row = rows[0]
    mol = build_mol(row.toatoms())
    mf = scf.RHF(mol).run(conv_tol=1e-11)
    mycc = cc.CCSD(mf).run(conv_tol=1e-10)
    assert row.ccsd_t_energy / HARTREE_EV == pytest.approx(mycc.e_tot + mycc.ccsd_t(), abs=1e-7)
    # correlation lowers the energy; forces have no net component
    assert row.ccsd_t_energy < row.energy
    assert np.abs(row.data["ccsd_t_forces"].sum(0)).max() < 1e-4
    # resume: a second run computes nothing new for the labelled rows and finishes the rest
    assert label_ccsd_t(labelled_db, n=5, progress=False) == 5
    after = sorted(ase.db.connect(labelled_db).select(), key=lambda r: r.sample_index)
    assert [r.ccsd_t_energy for r in after[:5]] == [r.ccsd_t_energy for r in rows[:5]]
    dataset = HamiltonianDataset(labelled_db)
    assert float(dataset[0]["ccsd_t_energy"]) == pytest.approx(row.ccsd_t_energy / HARTREE_EV)
    assert "ccsd_t_energy" not in dataset[5]


def test_ccsd_t_force_is_the_derivative_of_its_energy(labelled_db):
    from phisnet.reference import run_ccsd_t

    atoms = next(ase.db.connect(labelled_db).select(sample_index=0)).toatoms()
    result = run_ccsd_t(atoms)
    step = 1e-3
    energies = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[0, 2] += sign * step
        energies.append(run_ccsd_t(moved).energy)
    assert -(energies[0] - energies[1]) / (2 * step) == pytest.approx(result.forces[0, 2], abs=2e-6)


def test_fine_tuning_on_ccsd_t_energies_and_forces(hf_db, labelled_db, tmp_path, capsys):
    base = TrainConfig(
        data=str(hf_db),
        out=str(tmp_path / "hf"),
        train=4,
        val=1,
        batch_size=2,
        val_every=4,
        max_steps=4,
        model=PhiSNetConfig(**TINY),
    )
    hf_model = run(base, progress=False, log=lambda m: None)
    assert load(hf_model).metadata["end_to_end_energy"] is True  # HF: 1/2 Tr[P(h+F)] is its energy
    tuned = TrainConfig(
        data=str(labelled_db),
        out=str(tmp_path / "ft"),
        train=4,
        val=1,
        batch_size=2,
        val_every=3,
        max_steps=6,
        lr=1e-2,
        matrix_weight=0.0,
        energy_weight=1.0,
        force_weight=10.0,
        init=str(hf_model),
    )
    best = run(tuned, progress=False, log=lambda m: None)
    metrics = read_metrics(tmp_path / "ft")
    assert [m["step"] for m in metrics] == [3, 6]
    assert all(m["val_E_MAE_meV"] > 0 and m["val_F_MAE_meV/A"] > 0 for m in metrics)
    predictor = load(best)
    assert predictor.metadata["init"] == str(hf_model)
    assert predictor.metadata["energy_target"] == "ccsd_t"
    assert predictor.model.config.channels == 4  # the configuration comes from the initial checkpoint
    # Fitting moved the weights away from the HF model's.
    start = load(hf_model).model.state_dict()
    moved = predictor.model.state_dict()
    assert any(not np.allclose(start[k].numpy(), moved[k].numpy()) for k in start)

    capsys.readouterr()
    code = cli_main(
        [
            "evaluate",
            "--model",
            str(hf_model),
            "--model",
            str(best),
            "--data",
            str(labelled_db),
            "--split",
            "all",
            "--end-to-end",
            "--quiet",
            "--no-energy",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "against CCSD(T) (5 all structures with labels)" in out
    assert "HF (PySCF, the data's own)" in out and f"model {best.name}" in out


def test_fine_tuning_needs_labels(hf_db, tmp_path):
    config = TrainConfig(
        data=str(hf_db),
        out=str(tmp_path / "x"),
        train=4,
        val=1,
        energy_weight=1.0,
        energy_target="ccsd_t",
        model=PhiSNetConfig(**TINY),
    )
    with pytest.raises(InputError, match="phisnet ccsdt"):
        run(config, progress=False, log=lambda m: None)


def test_ccsdt_cli_errors(tmp_path, capsys):
    assert cli_main(["ccsdt", str(tmp_path / "none.db")]) == 2
    assert "no dataset file" in capsys.readouterr().err
