"""The phisnet command line: predict (generate and evaluate are tested with data and training)."""

import json

import numpy as np
import pytest

from phisnet.cli import main
from phisnet.reference import HARTREE_EV, run_dft

WATER = "pretrained/water.pt"


def test_predict_water_with_reference_and_exports(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            "water",
            "--model",
            WATER,
            "--reference",
            "--json",
            str(out / "water.json"),
            "--molden",
            str(out / "water.molden"),
            "--cube",
            "homo,lumo+1,density,difference",
            "--cube-dir",
            str(out / "cubes"),
            "--cube-points",
            "12",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "HOMO-LUMO gap / eV" in text and "dipole / D" in text and "Mulliken charges: O1" in text
    result = json.loads((out / "water.json").read_text())
    assert result["formula"] == "H2O" and result["n_occupied"] == 5
    # The reference block is PySCF's own calculation of this geometry.
    ref = run_dft(read_water(), forces=False)
    assert result["reference"]["energy_hartree"] == pytest.approx(ref.energy, abs=1e-7)
    assert result["reference"]["gap_ev"] == pytest.approx((ref.mo_energy[5] - ref.mo_energy[4]) * HARTREE_EV, abs=1e-4)
    # The pretrained model is far from perfect but not far off: orbital gap within 0.5 eV, energy within 50 meV.
    assert abs(result["gap_ev"] - result["reference"]["gap_ev"]) < 0.5
    assert abs(result["reference"]["energy_error_mev"]) < 50
    assert np.linalg.norm(result["dipole_debye"]) == pytest.approx(result["dipole_norm_debye"])
    names = sorted(p.name for p in (out / "cubes").iterdir())
    assert names == ["H2O_density.cube", "H2O_difference.cube", "H2O_homo.cube", "H2O_lumop1.cube"]
    assert (out / "water.molden").read_text().startswith("[Molden Format]")


def read_water():
    from phisnet.io import read_molecules

    return read_molecules("water")[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["water", "--cube", "difference"], "needs --reference"),
        (["water", "--cube", "sigma*"], "is not an orbital"),
        (["ethanol"], "not trained on C"),
        (["water", "--model", "README.md"], "README.md"),
        (["[OH]"], "odd number"),
    ],
)
def test_predict_errors_are_one_line(args, message, capsys, tmp_path):
    args = [*args, "--cube-dir", str(tmp_path)]
    if "--model" not in args:
        args += ["--model", WATER]
    assert main(["predict", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("phisnet: error:") and message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_predict_multi_frame_file(tmp_path, capsys):
    xyz = tmp_path / "two.xyz"
    frame = "3\n\nO 0 0 0.119\nH 0 0.763 -0.477\nH 0 -0.763 -0.477\n"
    xyz.write_text(frame + frame.replace("0.763", "0.780"))
    assert main(["predict", str(xyz), "--model", WATER, "--json", str(tmp_path / "r.json")]) == 0
    assert len(json.loads((tmp_path / "r.json").read_text())) == 2
    out = capsys.readouterr().out
    assert "2 frames in" in out and "verdicts: 2 ok" in out
    assert main(["predict", str(xyz), "--model", WATER, "--molden", str(tmp_path / "m.molden")]) == 2
    assert "choose one with --frame" in capsys.readouterr().err
    assert main(["predict", str(xyz), "--model", WATER, "--frame", "1", "--molden", str(tmp_path / "m.molden")]) == 0


def test_predict_a_trajectory_in_batches_writes_one_record_a_frame(tmp_path, capsys):
    from ase.io import write

    from phisnet.molecules import paper_molecule
    from phisnet.observables import predict_wavefunction
    from phisnet.predictor import load

    rng = np.random.default_rng(1)
    frames = []
    for _ in range(5):
        atoms = paper_molecule("water")
        atoms.positions += rng.normal(scale=0.03, size=(3, 3))
        frames.append(atoms)
    write(tmp_path / "traj.xyz", frames)
    records = tmp_path / "traj.jsonl"
    args = ["predict", str(tmp_path / "traj.xyz"), "--model", WATER, "--batch-size", "2", "--no-assess"]
    assert main([*args, "--quiet", "--json", str(records)]) == 0
    lines = records.read_text().splitlines()
    assert len(lines) == 5
    predictor = load(WATER)
    for k, line in enumerate(lines):
        record = json.loads(line)
        assert record["frame"] == k and "assessment" not in record
        one = predict_wavefunction(predictor, frames[k]).orbitals
        assert record["gap_ev"] == pytest.approx(one.gap * HARTREE_EV, abs=1e-4)
    assert main([*args, "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err


def test_phisnet_train_is_train_py(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing.db"), "--out", str(tmp_path / "run")]) == 2
    assert "phisnet train: error: There is no dataset file" in capsys.readouterr().err
    import train

    assert train.main is __import__("phisnet.commands.train", fromlist=["main"]).main
