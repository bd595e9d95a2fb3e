"""phisnet.training and train.py: a tiny real run, resume, determinism, evaluation."""

import json
import shutil

import ase.db
import numpy as np
import pytest
import tiny
import torch
from tiny import TINY_ARGS

from phisnet.checkpoint import ModelInfo
from phisnet.cli import main as cli_main
from phisnet.config import PhiSNetConfig
from phisnet.data import generate
from phisnet.dataset import HamiltonianDataset, sample_atoms
from phisnet.errors import InputError
from phisnet.predictor import load
from phisnet.reference import build_mol
from phisnet.run_log import read_metrics
from phisnet.train_config import TrainConfig
from phisnet.training import run
from phisnet.training_data import composition_groups, mini_batches

TINY = PhiSNetConfig(**tiny.TINY)


def config(water_db, out, **kwargs):
    base = dict(
        data=str(water_db),
        out=str(out),
        train=5,
        val=2,
        batch_size=2,
        val_every=4,
        max_steps=8,
        model=PhiSNetConfig(**TINY.to_json()),
    )
    base.update(kwargs)
    return TrainConfig(**base)


def test_run_writes_checkpoints_and_log_and_resumes(water_db, tmp_path):
    best = run(config(water_db, tmp_path / "a"), progress=False, log=lambda m: None)
    assert best.is_file() and (tmp_path / "a" / "last.pt").is_file()
    metrics = read_metrics(tmp_path / "a")
    assert [m["step"] for m in metrics] == [4, 8]
    assert all(m["val_H_MAE_uHa"] > 0 for m in metrics)
    predictor = load(best)
    assert predictor.metadata["splits"] == {"seed": 0, "train": 5, "val": 2, "test": 1}
    assert predictor.metadata["elements"] == [1, 8] and predictor.metadata["basis"] == "def2-svp"
    # The metadata is written through ModelInfo: reading it back and writing it again gives the same dict.
    written = {key: value for key, value in predictor.metadata.items() if key != "training"}
    assert ModelInfo.from_metadata(written).to_metadata() == written
    assert predictor.info.data_path == str(water_db) and predictor.info.n_structures == 8

    run(config(water_db, tmp_path / "a", max_steps=12, resume=True), progress=False, log=lambda m: None)
    assert [m["step"] for m in read_metrics(tmp_path / "a")] == [4, 8, 12]

    # The same seed from scratch gives the same numbers: training is deterministic.
    run(config(water_db, tmp_path / "b", max_steps=12), progress=False, log=lambda m: None)
    again = read_metrics(tmp_path / "b")
    assert [m["train_loss"] for m in again] == pytest.approx(
        [m["train_loss"] for m in read_metrics(tmp_path / "a")], rel=1e-5
    )


def test_run_chooses_the_subspace_on_validation_when_asked(water_db, tmp_path):
    messages = []
    best = run(config(water_db, tmp_path / "s", max_steps=4, choose_subspace=True), progress=False, log=messages.append)
    chosen = load(best).metadata["subspace_choice"]
    assert chosen["split"] == "val" and chosen["n_structures"] == 2 and len(chosen["occupied_space_errors"]) == 8
    assert load(best).subspace == chosen["threshold"] and any("stored in" in m for m in messages)
    plain = run(config(water_db, tmp_path / "p", max_steps=4), progress=False, log=lambda m: None)
    assert "subspace" not in load(plain).metadata


def test_train_cli_and_evaluate_cli(water_db, tmp_path, capsys):
    import train

    out = tmp_path / "cli"
    code = train.main(
        [
            "--data",
            str(water_db),
            "--out",
            str(out),
            "--train",
            "5",
            "--val",
            "2",
            "--batch-size",
            "2",
            "--max-steps",
            "4",
            "--val-every",
            "4",
            *TINY_ARGS,
        ]
    )
    assert code == 0
    assert json.loads((out / "config.json").read_text())["model"]["channels"] == 4
    capsys.readouterr()
    assert (
        cli_main(
            [
                "evaluate",
                "--model",
                str(out / "best.pt"),
                "--data",
                str(water_db),
                "--quiet",
                "--json",
                str(tmp_path / "m.json"),
                "--blocks",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "H [uHa]" in table and "eps [uHa]" in table and "psi [%]" in table and "E [meV]" in table
    assert "H MAE [uHa] by block" in table and "O-H" in table
    saved = json.loads((tmp_path / "m.json").read_text())["models"][0]
    assert set(saved["H_MAE_uHa_by_block"]) == {"O", "H", "O-H", "H-H"}
    assert saved["n_structures"] == 1 and saved["H_MAE_uHa"] > 0 and saved["energy_MAE_meV"] > 0
    evaluate = ["evaluate", "--model", str(out / "best.pt"), "--quiet", "--no-energy", "--data"]
    assert cli_main([*evaluate, str(water_db), "--split", "test_ood"]) == 2  # one molecule: nothing held out
    assert "no held-out molecules, so no test_ood split" in capsys.readouterr().err
    other = tmp_path / "other.db"
    shutil.copy(water_db, other)
    with ase.db.connect(other) as db:
        db.delete([1])
    assert cli_main([*evaluate, str(other)]) == 2  # another dataset: the checkpoint's split would not apply
    assert "is not the dataset" in capsys.readouterr().err
    # --split-of: score a model on the test split another checkpoint recorded for this dataset.
    assert cli_main([*evaluate, str(water_db), "--split-of", str(out / "best.pt")]) == 0
    assert "(test of best)" in capsys.readouterr().out
    assert cli_main([*evaluate, str(other), "--split-of", str(out / "best.pt")]) == 2  # that split is not this file's
    assert "is not the dataset" in capsys.readouterr().err

    # phisnet subspace: chosen on validation only; --write stores it (weights untouched), evaluate then uses it.
    model = out / "best.pt"
    weights = load(model).model.state_dict()
    subspace = ["subspace", "--model", str(model), "--data", str(water_db), "--quiet", "--write"]
    assert cli_main([*subspace, "--split", "test"]) == 2
    assert "make it on --split val" in capsys.readouterr().err
    assert cli_main([*subspace, "--candidates", "0.05"]) == 0
    printed = capsys.readouterr().out
    assert "<- chosen" in printed and "wrote subspace 0.05 into" in printed
    chosen = load(model)
    assert chosen.subspace == 0.05 and chosen.metadata["subspace_choice"]["split"] == "val"
    assert all(torch.equal(value, chosen.model.state_dict()[key]) for key, value in weights.items())
    assert cli_main([*evaluate, str(water_db)]) == 0
    assert "eigenvalues above 0.05 (the model's subspace" in capsys.readouterr().out
    assert cli_main([*evaluate, str(water_db), "--subspace", "0"]) == 0
    assert "the model's subspace" not in capsys.readouterr().out


def test_train_cli_resume_takes_the_runs_own_settings(water_db, tmp_path):
    import train
    from phisnet.checkpoint import read_checkpoint

    out = tmp_path / "run"
    first = ["--data", str(water_db), "--out", str(out), "--train", "5", "--val", "2", "--batch-size", "2"]
    assert train.main([*first, "--max-steps", "4", "--val-every", "2", *TINY_ARGS]) == 0
    # Only --out, --resume and a longer run: data, splits and the tiny model come from out/config.json.
    assert train.main(["--out", str(out), "--resume", "--max-steps", "6", "--quiet"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"] == str(water_db) and saved["max_steps"] == 6 and saved["model"]["channels"] == 4
    last = read_checkpoint(out / "last.pt")
    assert last["metadata"]["training"]["step"] == 6 and last["config"]["channels"] == 4
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_upgrade_adds_the_parts_an_older_model_lacks_and_train_fine_tunes_it(water_db, tmp_path, capsys):
    import train
    from phisnet.checkpoint import read_checkpoint
    from phisnet.cli import main as phisnet
    from phisnet.io import read_molecules

    data = ["--data", str(water_db), "--train", "5", "--val", "2", "--batch-size", "2", "--val-every", "2", "--quiet"]
    old = tmp_path / "old"
    plain = ["--no-pair-mixing", "--no-pair-radial-scalars"]
    assert train.main([*data, "--out", str(old), "--max-steps", "2", *TINY_ARGS, *plain]) == 0
    assert not read_checkpoint(old / "best.pt")["config"]["fine_radial"]
    capsys.readouterr()
    upgraded = tmp_path / "upgraded.pt"
    adds = [
        "--add-pair-mixing",
        "--add-pair-radial-scalars",
        "--add-fine-radial",
        "4",
        "--add-fine-radial-interactions",
        "--add-interactions",
        "1",
        "--widen-channels",
        "8",
    ]
    assert phisnet(["upgrade", str(old / "best.pt"), *adds, "--out", str(upgraded)]) == 0
    printed = capsys.readouterr().out
    assert "pair-mixing maps" in printed and "atom scalars" in printed and "4 narrow Gaussians" in printed
    assert "interaction layers" in printed and "Added 1 interaction layer(s)" in printed
    assert "channels: 4 -> 8 per order" in printed
    (atoms,) = read_molecules("water")
    before, after = load(old / "best.pt").predict(atoms), load(upgraded).predict(atoms)
    assert np.allclose(after.hamiltonian, before.hamiltonian, atol=1e-6)  # the same function, more parts
    assert load(upgraded).metadata["upgrades"][0]["from"] == str(old / "best.pt")
    new = tmp_path / "new"  # then a plain fine-tune, with the one S change that needs the data
    fit_s = ["--add-two-center-overlap", "--overlap-fit-steps", "5"]
    assert train.main([*data, "--out", str(new), "--max-steps", "2", "--init", str(upgraded), *fit_s]) == 0
    assert "Two-centre overlap fitted in 5 steps" in capsys.readouterr().out
    config = read_checkpoint(new / "best.pt")["config"]
    assert config["pair_mixing"] and config["pair_radial_scalars"] and config["fine_radial"] == 4
    assert config["fine_radial_interactions"] and config["two_center_overlap"]
    assert config["n_interactions"] == read_checkpoint(old / "best.pt")["config"]["n_interactions"] + 1
    assert config["channels"] == 8  # the checkpoint's own size widened, not the defaults

    def refused(*flags):
        assert phisnet(["upgrade", str(old / "best.pt"), *flags, "--out", str(tmp_path / "bad.pt")]) == 2
        return capsys.readouterr().err

    assert "fine radial Gaussians" in refused("--add-fine-radial", "-1")
    assert "has no fine radial Gaussians" in refused("--add-fine-radial-interactions")
    assert "widens to a multiple of them (e.g. 8), not 6" in refused("--widen-channels", "6")
    assert "nothing to upgrade" in refused()
    assert not (tmp_path / "bad.pt").exists()
    with pytest.raises(SystemExit) as stop:  # train.py's old surgery flags say where they went
        train.main([*data, "--out", str(tmp_path / "alone"), "--init", str(old / "best.pt"), "--widen-channels", "8"])
    assert stop.value.code == 2
    assert "--widen-channels moved to its own command: phisnet upgrade CHECKPOINT --widen-channels 8" in (
        capsys.readouterr().err
    )


def test_train_cli_zero_steps_fits_the_new_overlap_and_keeps_h(water_db, tmp_path, capsys):
    """--add-two-center-overlap --max-steps 0: S is fitted alone and saved as best.pt, H is the checkpoint's."""
    import train
    from phisnet.io import read_molecules

    data = ["--data", str(water_db), "--train", "5", "--val", "2", "--batch-size", "2", "--quiet"]
    assert train.main([*data, "--out", str(tmp_path / "old"), "--max-steps", "2", "--val-every", "2", *TINY_ARGS]) == 0
    old = tmp_path / "old" / "best.pt"
    zero = ["--out", str(tmp_path / "s"), "--init", str(old), "--add-two-center-overlap", "--overlap-fit-steps", "30"]
    assert train.main([*data, *zero, "--max-steps", "0"]) == 0
    printed = capsys.readouterr().out
    assert "Two-centre overlap fitted in 30 steps" in printed and "No training steps" in printed
    assert not (tmp_path / "s" / "last.pt").exists()
    (atoms,) = read_molecules("water")
    before, after = load(old).predict(atoms), load(tmp_path / "s" / "best.pt").predict(atoms)
    assert np.array_equal(after.hamiltonian, before.hamiltonian)
    assert not np.allclose(after.overlap, before.overlap)


def test_train_cli_bad_data(tmp_path, capsys):
    import train

    assert train.main(["--data", str(tmp_path / "none.db"), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "no dataset file" in capsys.readouterr().err


def test_torchrun_two_processes(set_db, tmp_path):
    """DistributedDataParallel with the gloo backend, 2 processes on this machine, mini-batches that mix
    molecules (each process accumulates its molecules' gradients before the one all-reduce); then --max-steps 0
    with a new S part under torchrun: both processes fit it, rank 0 writes best.pt, all leave together."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def torchrun(*args):
        with socket.socket() as sock:  # a free loopback port for the rendezvous
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
        data = ["--data", str(set_db), "--train", "5", "--val", "2", "--batch-size", "3"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        run = [*command, str(root / "train.py"), *data, *args]
        subprocess.run(run, check=True, env=env, cwd=tmp_path, timeout=300, capture_output=True)

    out = tmp_path / "ddp"
    torchrun("--out", str(out), "--max-steps", "4", "--val-every", "2", *TINY_ARGS)
    assert [m["step"] for m in read_metrics(out)] == [2, 4]
    splits = load(out / "best.pt").metadata["splits"]
    assert splits["train"] == 5 and splits["test_ood"] == 4
    fitted = tmp_path / "ddp-s"
    init = ["--init", str(out / "best.pt"), "--add-two-center-overlap", "--overlap-fit-steps", "3"]
    torchrun("--out", str(fitted), *init, "--max-steps", "0", "--quiet")
    assert (fitted / "best.pt").is_file() and not (fitted / "last.pt").exists()
    assert load(fitted / "best.pt").model.config.two_center_overlap
    assert [m["step"] for m in read_metrics(fitted)] == [0]


def test_multi_molecule_batches_and_held_out_molecules(set_db, tmp_path, capsys):
    ds = HamiltonianDataset(set_db)
    rng = np.random.default_rng(0)
    batches = mini_batches(ds, list(range(len(ds))), 4, rng)
    mixed = [b for b in batches if len(composition_groups(ds, b)) > 1]
    assert mixed, "no mini-batch mixes molecules"
    for b in mixed:
        groups = composition_groups(ds, b)
        assert sorted(i for g in groups for i in g) == sorted(b)
        assert all(len({tuple(ds[i]["atomic_numbers"].tolist()) for i in g}) == 1 for g in groups)

    out = tmp_path / "set"
    run(config(set_db, out, train=5, val=2, batch_size=4, max_steps=4, val_every=2), progress=False, log=print)
    predictor = load(out / "best.pt")
    assert predictor.metadata["splits"] == {"seed": 0, "train": 5, "val": 2, "test": 1, "test_ood": 4}
    assert predictor.metadata["elements"] == [1, 6, 7, 8] and predictor.metadata["basis"] == "sto-3g"
    assert predictor.metadata["molecules"] == {"seen": ["ammonia", "water"], "held_out": ["methane"]}
    capsys.readouterr()
    code = cli_main(
        ["evaluate", "--model", str(out / "best.pt"), "--data", str(set_db), "--split", "test_ood", "--by-molecule"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "(test_ood)" in printed and "per molecule" in printed
    assert [line.split()[1] for line in printed.splitlines() if line.startswith("methane ")] == ["4"]


def test_integral_baseline_is_fitted_first_and_leaves_the_network_less_to_learn(set_db, tmp_path):
    messages = []
    maes = {}
    for name, options in (
        ("none", {}),
        ("plain", {"integral_baseline": True}),
        ("screened", {"integral_baseline": True, "baseline_screening": [0.3, 1.0, 3.0]}),
    ):
        model = PhiSNetConfig(**{**TINY.to_json(), **options})
        out = tmp_path / f"baseline-{name}"
        settings = dict(train=5, val=2, batch_size=4, max_steps=2, val_every=2, model=model)
        run(config(set_db, out, **settings), progress=False, log=messages.append)
        maes[name] = read_metrics(out)[-1]["val_H_MAE_uHa"]
    fitted = [m for m in messages if m.startswith("One-electron baseline fitted to the 5 training structures")]
    assert len(fitted) == 2
    assert maes["plain"] < 0.5 * maes["none"]
    assert maes["screened"] < maes["plain"], maes  # the screened attractions carry what bare V_nuc cannot
    assert load(tmp_path / "baseline-plain" / "best.pt").model.config.integral_baseline
    assert load(tmp_path / "baseline-screened" / "best.pt").model.config.baseline_screening == [0.3, 1.0, 3.0]
    # A baseline changes what the network learns: it does not go onto an older model's weights.
    with pytest.raises(InputError, match="train it from the start"):
        late = PhiSNetConfig(**{**TINY.to_json(), "integral_baseline": True})
        init = str(tmp_path / "baseline-none" / "best.pt")
        run(config(set_db, tmp_path / "late", init=init, model=late), progress=False, log=lambda m: None)
    with pytest.raises(InputError, match="train it from the start"):  # nor does another screening
        late = PhiSNetConfig(**{**TINY.to_json(), "integral_baseline": True, "baseline_screening": [1.0]})
        init = str(tmp_path / "baseline-plain" / "best.pt")
        run(config(set_db, tmp_path / "late", init=init, model=late), progress=False, log=lambda m: None)
    # A baseline model can take S from its integrals afterwards: H stays the same function, S is PySCF's.
    screened = tmp_path / "baseline-screened" / "best.pt"
    exact = PhiSNetConfig(**{**TINY.to_json(), "exact_overlap": True})
    run(
        config(set_db, tmp_path / "exact", init=str(screened), max_steps=0, model=exact),
        progress=False,
        log=messages.append,
    )
    assert any("S as the baseline's exact overlap integral" in m for m in messages)
    before, after = load(screened), load(tmp_path / "exact" / "best.pt")
    assert after.model.config.exact_overlap and "s_offdiagonal" not in after.model.heads
    atoms = sample_atoms(HamiltonianDataset(set_db)[0])
    np.testing.assert_array_equal(after.predict(atoms).hamiltonian, before.predict(atoms).hamiltonian)
    S = build_mol(atoms, basis=after.model.config.basis).intor("int1e_ovlp")
    np.testing.assert_allclose(after.predict(atoms).overlap, S, atol=1e-14)
    with pytest.raises(InputError, match="has no one-electron baseline"):
        init = str(tmp_path / "baseline-none" / "best.pt")
        run(config(set_db, tmp_path / "late", init=init, model=exact), progress=False, log=lambda m: None)
    with pytest.raises(InputError, match="give --integral-baseline"):
        bare = PhiSNetConfig(**{**TINY.to_json(), "baseline_screening": [1.0]})
        run(config(set_db, tmp_path / "bare", model=bare), progress=False, log=lambda m: None)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(water_db, tmp_path):

    with pytest.raises(InputError, match="sees no GPU"):
        run(config(water_db, tmp_path / "gpu", device="cuda"), progress=False, log=lambda m: None)
    with pytest.raises(InputError, match="cpu, cuda or auto"):
        run(config(water_db, tmp_path / "gpu", device="tpu"), progress=False, log=lambda m: None)


def test_moving_average_and_cosine_schedule(water_db, tmp_path):
    from phisnet.checkpoint import build_from_checkpoint, read_checkpoint
    from phisnet.train_step import validate

    quiet = dict(progress=False, log=lambda m: None)
    best = run(config(water_db, tmp_path / "c", schedule="cosine", lr=1e-2, lr_min=1e-4, ema=0.9), **quiet)
    metrics = read_metrics(tmp_path / "c")
    # Halfway the learning rate is the mean of start and end; at max_steps it is lr_min.
    assert [m["lr"] for m in metrics] == pytest.approx([(1e-2 + 1e-4) / 2, 1e-4])

    # best.pt holds the averaged weights that were validated, last.pt the raw ones (and the average, to resume).
    dataset = HamiltonianDataset(water_db)
    val = dataset.split_indices(0, 5, 2)["val"]
    model = build_from_checkpoint(read_checkpoint(best))
    again = validate(model, dataset, val, 4, next(model.parameters()).dtype)["val_H_MAE_uHa"]
    assert again == pytest.approx(min(m["val_H_MAE_uHa"] for m in metrics), rel=1e-6)
    last = read_checkpoint(tmp_path / "c" / "last.pt")
    assert "ema" in last["training"]
    raw = build_from_checkpoint(last)
    assert validate(raw, dataset, val, 4, next(raw.parameters()).dtype)["val_H_MAE_uHa"] != pytest.approx(again)

    # A resume restores the average: 8 + 4 steps validate exactly like 12 steps in one go.
    run(config(water_db, tmp_path / "d", ema=0.9), **quiet)
    run(config(water_db, tmp_path / "d", ema=0.9, max_steps=12, resume=True), **quiet)
    run(config(water_db, tmp_path / "e", ema=0.9, max_steps=12), **quiet)
    resumed, straight = read_metrics(tmp_path / "d"), read_metrics(tmp_path / "e")
    assert [m["val_H_MAE_uHa"] for m in resumed] == pytest.approx([m["val_H_MAE_uHa"] for m in straight], rel=1e-5)

    # A warm-up scales the cosine by (step + 1) / warmup_steps until it reaches 1.
    run(config(water_db, tmp_path / "w", schedule="cosine", lr=1e-2, lr_min=1e-4, warmup_steps=8), **quiet)
    warmed = [m["lr"] for m in read_metrics(tmp_path / "w")]
    assert warmed == pytest.approx([5 / 8 * (1e-2 + 1e-4) / 2, 1e-4])
    with pytest.raises(InputError, match="works with --schedule cosine"):
        run(config(water_db, tmp_path / "w2", warmup_steps=8), **quiet)

    with pytest.raises(InputError, match="resume it with --schedule plateau"):
        run(config(water_db, tmp_path / "d", schedule="cosine", max_steps=16, resume=True), **quiet)
    with pytest.raises(InputError, match="ema"):
        run(config(water_db, tmp_path / "f", ema=1.5), **quiet)
    with pytest.raises(InputError, match="schedule"):
        run(config(water_db, tmp_path / "f", schedule="step"), **quiet)


def test_extra_training_data_joins_the_training_split_only(water_db, set_db, tmp_path):
    from phisnet.metrics import model_split
    from phisnet.training_data import add_training_data

    extra = tmp_path / "water-seed1.db"
    generate("water", 3, extra, seed=1, progress=False, log=lambda m: None)
    dataset = HamiltonianDataset(water_db)
    splits = dataset.split_indices(0, 5, 2)
    own = {name: list(members) for name, members in splits.items()}
    records = add_training_data(dataset, splits, [str(extra)])
    assert records[0]["n_structures"] == 3 and records[0]["settings"]["seed"] == 1
    assert splits["train"] == own["train"] + [8, 9, 10] and splits["val"] == own["val"]
    assert splits["test"] == own["test"] and len(dataset) == 11
    assert torch.equal(dataset[10]["hamiltonian"], HamiltonianDataset(extra)[2]["hamiltonian"])

    quiet = dict(progress=False, log=lambda m: None)
    best = run(config(water_db, tmp_path / "x", extra_train=[str(extra)]), **quiet)
    predictor = load(best)
    assert predictor.metadata["splits"] == {"seed": 0, "train": 5, "val": 2, "test": 1}
    assert predictor.metadata["extra_train"][0]["n_structures"] == 3
    # The main dataset's test split is still the one the checkpoint names, and still unseen.
    assert model_split(predictor, HamiltonianDataset(water_db)) == own["test"]

    with pytest.raises(InputError, match="repeats structure"):  # the same seed: the same structures, test included
        run(config(water_db, tmp_path / "y", extra_train=[str(water_db)]), **quiet)
    with pytest.raises(InputError, match="cannot train together"):  # HF/STO-3G beside PBE/def2-SVP
        run(config(water_db, tmp_path / "y", extra_train=[str(set_db)]), **quiet)


def test_force_training_needs_data_with_forces(tmp_path):
    path = tmp_path / "noforces.db"
    generate("water", 4, path, forces=False, progress=False, log=lambda m: None)
    with pytest.raises(InputError, match="no reference forces"):
        settings = config(path, tmp_path / "run", force_weight=1.0, train=2, val=1, max_steps=1)
        run(settings, progress=False, log=lambda m: None)


def test_train_cli_orbital_weight_logs_eps_and_keeps_the_lowest_loss(water_db, tmp_path, capsys):
    import train

    out = tmp_path / "orbital"
    args = ["--data", str(water_db), "--out", str(out), "--train", "5", "--val", "2", "--batch-size", "2"]
    code = train.main([*args, "--max-steps", "8", "--val-every", "4", "--orbital-weight", "0.1", *TINY_ARGS])
    assert code == 0
    records = read_metrics(out)
    assert [r["step"] for r in records] == [4, 8]
    assert all(r["val_eps_MAE_uHa"] > 0 for r in records)
    best = min(records, key=lambda r: r["val_loss"])
    training = load(out / "best.pt").metadata["training"]
    assert training["best_val_loss"] == pytest.approx(best["val_loss"])
    assert training["validation"]["val_H_MAE_uHa"] == pytest.approx(best["val_H_MAE_uHa"])  # what the app shows
    assert train.main([*args, "--orbital-weight", "-1", *TINY_ARGS]) == 2
    assert "--orbital-weight is a weight" in capsys.readouterr().err
    assert train.main([*args, "--density-weight", "-1", *TINY_ARGS]) == 2
    assert "--density-weight is a weight" in capsys.readouterr().err
    dense = tmp_path / "density"
    dense_args = [*args[:3], str(dense), *args[4:], "--max-steps", "4", "--val-every", "4"]
    assert train.main([*dense_args, "--density-weight", "1", *TINY_ARGS]) == 0
    (record,) = read_metrics(dense)
    assert record["val_rotation_RMS_1e-6"] > 0 and record["val_eps_MAE_uHa"] > 0
