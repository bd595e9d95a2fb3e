"""phisnet.data: generation, crash safety (a real SIGKILL), resume, and loading."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import ase.db
import numpy as np
import pytest
import torch

from phisnet import InputError
from phisnet.cli import main as cli_main
from phisnet.data import GenerationSettings, _record, generate, sample_positions
from phisnet.dataset import HamiltonianDataset, split_indices
from phisnet.molecules import MoleculeEntry
from phisnet.reference import HARTREE_EV, Reference, build_mol, run_dft
from phisnet.sampling import NormalModes
from phisnet.set_generation import generate_set


@pytest.fixture(scope="module")
def water_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "water.db"
    generate("water", 4, path, progress=False, log=lambda m: None)
    return path


def rows(path):
    return list(ase.db.connect(path).select())


def test_rows_hold_consistent_references(water_db):
    got = rows(water_db)
    assert sorted(r.sample_index for r in got) == [0, 1, 2, 3]
    positions = np.array([r.positions for r in got])
    assert len({p.tobytes() for p in positions}) == 4
    row = got[0]
    atoms = row.toatoms()
    H, S = row.data["hamiltonian"], row.data["overlap"]
    assert H.shape == S.shape == (24, 24)
    np.testing.assert_allclose(S, build_mol(atoms).intor("int1e_ovlp"), atol=1e-12)
    ref = run_dft(atoms, conv_tol=1e-11)
    np.testing.assert_allclose(H, ref.hamiltonian, atol=1e-6)
    assert row.energy == pytest.approx(ref.energy * HARTREE_EV, abs=1e-6)  # eV on the row, as ASE expects
    np.testing.assert_allclose(row.forces, ref.forces * HARTREE_EV, atol=1e-4)


def test_metadata_records_level_sampling_and_versions(water_db):
    md = ase.db.connect(water_db).metadata
    assert md["level_of_theory"] == "pbe" and md["basis"] == "def2-svp"
    assert md["sampling"]["temperature_K"] == 500.0
    assert {"pyscf", "ase", "numpy", "phisnet"} <= set(md["versions"])
    assert len(md["normal_modes"]["wavenumbers"]) == 3
    assert 1500 < md["normal_modes"]["wavenumbers"][0] < 1700  # water bend, PBE/def2-SVP


def test_samples_are_thermal_and_randomly_oriented(water_db):
    got = rows(water_db)
    d_oh = [np.linalg.norm(r.positions[1] - r.positions[0]) for r in got]
    assert all(0.85 < d < 1.1 for d in d_oh)
    directions = [r.positions[0] / np.linalg.norm(r.positions[0]) for r in got]
    assert min(abs(float(a @ b)) for a, b in zip(directions, directions[1:], strict=False)) < 0.99


def test_resume_extends_and_refuses_other_settings(water_db, tmp_path):
    path = tmp_path / "w.db"
    path.write_bytes(water_db.read_bytes())
    before = {r.sample_index: r.positions for r in rows(path)}
    generate("water", 5, path, progress=False, log=lambda m: None)
    after = {r.sample_index: r.positions for r in rows(path)}
    assert sorted(after) == [0, 1, 2, 3, 4]
    for i in before:
        np.testing.assert_array_equal(before[i], after[i])
    with pytest.raises(InputError, match="temperature"):
        generate("water", 6, path, temperature=300, progress=False, log=lambda m: None)


def test_non_converged_structures_are_never_written(water_db, tmp_path):
    path = tmp_path / "w.db"
    path.write_bytes(water_db.read_bytes())
    db = ase.db.connect(path)
    bad = Reference(
        hamiltonian=np.zeros((24, 24)),
        overlap=np.eye(24),
        energy=0.0,
        forces=np.zeros((3, 3)),
        mo_energy=np.zeros(24),
        mo_coeff=np.eye(24),
        mo_occ=np.zeros(24),
        n_iterations=100,
        seconds=1.0,
        converged=False,
        xc="pbe",
        basis="def2-svp",
    )
    done, failed = {0, 1, 2, 3}, set()
    _record(db, 7, np.zeros((3, 3)), ["O", "H", "H"], bad, done, failed, log=lambda m: None)
    assert db.count() == 4 and 7 not in done
    assert db.metadata["failed_indices"] == [7]


def test_sigkill_and_restart_loses_nothing(tmp_path):
    path = tmp_path / "killed.db"
    command = [sys.executable, "-m", "phisnet.cli", "generate", "water", "--n", "6", "--out", str(path), "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    count = 0
    while time.time() < deadline and proc.poll() is None:
        if path.exists():
            try:
                count = sqlite3.connect(path).execute("SELECT COUNT(*) FROM systems").fetchone()[0]
            except sqlite3.OperationalError:
                count = 0
        if count >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(rows(path)) < 6
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    got = rows(path)
    assert sorted(r.sample_index for r in got) == list(range(6))
    assert len({r.positions.tobytes() for r in got}) == 6
    for r in got:
        H = r.data["hamiltonian"]
        assert H.shape == (24, 24) and np.isfinite(H).all()
        np.testing.assert_allclose(H, H.T, atol=1e-10)
        assert np.isfinite(r.forces).all()


def test_parallel_workers(tmp_path):
    path = tmp_path / "parallel.db"
    generate("water", 3, path, workers=2, progress=False, log=lambda m: None)
    assert sorted(r.sample_index for r in rows(path)) == [0, 1, 2]


def test_dataset_tensors_in_hartree(water_db):
    ds = HamiltonianDataset(water_db)
    assert len(ds) == 4
    item = ds[0]
    assert item["positions"].shape == (3, 3) and item["positions"].dtype == torch.float64
    assert item["atomic_numbers"].tolist() == [8, 1, 1]
    assert item["hamiltonian"].shape == item["overlap"].shape == (24, 24)
    assert -76.4 < float(item["energy"]) < -76.0
    assert ds.metadata["basis"] == "def2-svp"


def test_splits_are_deterministic_and_disjoint(water_db):
    parts = split_indices(100, seed=3, train=0.8, val=10)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [80, 10, 10]
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(100))
    assert parts == split_indices(100, seed=3, train=0.8, val=10)
    assert parts != split_indices(100, seed=4, train=0.8, val=10)
    ds = HamiltonianDataset(water_db)
    assert len(ds.split("train", train=2, val=1)) == 2 and len(ds.split("test", train=2, val=1)) == 1
    with pytest.raises(InputError):
        split_indices(10, train=8, val=5)


def test_dataset_rejects_foreign_files(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all")
    with pytest.raises(InputError, match="not a readable ASE database"):
        HamiltonianDataset(junk)
    with pytest.raises(InputError, match="no dataset file"):
        HamiltonianDataset(tmp_path / "missing.db")


def test_cli_errors_are_messages(tmp_path, capsys):
    assert cli_main(["generate", "water", "--n", "0", "--out", str(tmp_path / "x.db")]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err
    assert cli_main(["generate", "water", "--n", "2", "--out", str(tmp_path / "x.txt")]) == 2
    assert "must be an ASE SQLite database" in capsys.readouterr().err
    assert cli_main(["generate", "Qq9", "--n", "2", "--out", str(tmp_path / "x.db")]) == 2
    assert "not a valid SMILES" in capsys.readouterr().err


def test_datasets_without_forces(water_db, tmp_path):
    """--no-forces: the same structures and matrices, no forces; a dataset made with forces will not resume so."""
    copy = tmp_path / "copy.db"
    copy.write_bytes(water_db.read_bytes())
    with pytest.raises(InputError, match="forces differ"):
        generate("water", 5, copy, forces=False, progress=False, log=lambda m: None)
    path = tmp_path / "noforces.db"
    assert cli_main(["generate", "water", "--n", "2", "--out", str(path), "--no-forces", "--quiet"]) == 0
    assert "forces" not in ase.db.connect(water_db).metadata["settings"]  # older datasets resume unchanged
    assert ase.db.connect(path).metadata["settings"]["forces"] is False
    without, with_forces = HamiltonianDataset(path), HamiltonianDataset(water_db)
    assert not without.has_forces() and with_forces.has_forces()
    for a, b in zip(without.samples, with_forces.samples[:2], strict=False):
        assert torch.isnan(a["forces"]).all() and a["forces"].shape == b["forces"].shape
        # The same samples; the geometry optimisation agrees to about 1e-6 Angstrom between runs (H to ~1e-5 Ha).
        np.testing.assert_allclose(a["positions"].numpy(), b["positions"].numpy(), atol=1e-5)
        np.testing.assert_allclose(a["hamiltonian"].numpy(), b["hamiltonian"].numpy(), atol=1e-4)
        assert float(a["energy"]) == pytest.approx(float(b["energy"]), abs=1e-6)
    generate("water", 3, path, forces=False, progress=False, log=lambda m: None)  # resumes with the same option
    assert len(rows(path)) == 3
    with pytest.raises(InputError, match="forces differ"):  # and a dataset without forces does not take them
        generate("water", 4, path, progress=False, log=lambda m: None)
    assert len(rows(path)) == 3


def test_a_models_guess_starts_the_scf_and_changes_no_answer(tmp_path):
    """--guess-model: the same rows (to the SCF tolerance) in fewer iterations, marked guess=model."""
    path = tmp_path / "guessed.db"
    generate("water", 2, path, guess_model="pretrained/water.pt", progress=False, log=lambda m: None)
    guessed = rows(path)
    assert [r.guess for r in guessed] == ["model", "model"]
    minao = [run_dft(r.toatoms(), conv_tol=1e-11, forces=False) for r in guessed]  # the same geometries
    assert {m.guess for m in minao} == {"minao"}
    for a, b in zip(guessed, minao, strict=True):
        np.testing.assert_allclose(a.data["hamiltonian"], b.hamiltonian, atol=1e-6)
        assert a.energy == pytest.approx(b.energy * HARTREE_EV, abs=1e-9 * HARTREE_EV)
    assert sum(r.n_iterations for r in guessed) < sum(m.n_iterations for m in minao)
    generate("water", 3, path, progress=False, log=lambda m: None)  # resumes without it: not a setting
    assert rows(path)[-1].guess == "minao"


@pytest.mark.parametrize(
    "molecule, options, message",
    [
        ("ethanol", {}, "was not trained on C; it knows H, O"),
        ("water", {"basis": "sto-3g"}, "predicts in def2-svp; these calculations use sto-3g"),
        ("[OH]", {"spin": 1}, "closed-shell density"),
    ],
)
def test_unusable_guess_models_are_refused_before_any_work(tmp_path, molecule, options, message):
    with pytest.raises(InputError, match=message):
        generate(molecule, 1, tmp_path / "x.db", guess_model="pretrained/water.pt", progress=False, **options)
    assert not (tmp_path / "x.db").exists()


def test_a_structure_the_guess_model_cannot_solve_starts_from_pyscfs_guess(monkeypatch):
    import phisnet.observables
    from phisnet.pool import _compute

    def unsolvable(*args, **kwargs):
        raise InputError("no HOMO-LUMO gap in the predicted Hamiltonian")

    monkeypatch.setattr(phisnet.observables, "predict_wavefunction", unsolvable)
    level = {"basis": "sto-3g", "charge": 0, "forces": False, "guess_model": "pretrained/water.pt"}
    ref = _compute(["H", "H"], np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]]), level, 1)
    assert ref.converged and ref.guess == "minao"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_whose_interrupt_went_astray_stops_the_pool_before_the_next_calculation(workers):
    """The SIGTERM handler's KeyboardInterrupt is lost when it lands in a __del__; the flag it sets is not."""
    from phisnet.errors import stop_requested
    from phisnet.pool import Pool

    asked = []

    def next_task():
        asked.append(len(asked))
        return (len(asked), (["H", "H"], np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]]), {"basis": "sto-3g"}))

    stop_requested.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            Pool(workers, threads=1).run(next_task, lambda key, args, result: None)
    finally:
        stop_requested.clear()
    assert len(asked) <= workers  # at most the calculations already handed out


def test_settings_json_round_trip():
    s = GenerationSettings(molecule="water", symbols=("O", "H", "H"))
    assert s.to_json()["symbols"] == ["O", "H", "H"] and s.to_json()["temperature"] == 500.0


def test_single_atom_cannot_be_sampled(tmp_path):
    with pytest.raises(InputError, match="Xe is a single atom"):
        generate("[Xe]", 2, tmp_path / "xe.db", progress=False, log=lambda m: None)


def test_a_second_writer_on_the_same_database_is_refused(tmp_path):
    import fcntl

    out = tmp_path / "water.db"
    with open(tmp_path / "water.db.generate.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running phisnet generate holds it
        with pytest.raises(InputError, match="Another phisnet command is writing"):
            generate("water", 2, out, progress=False, log=lambda m: None)
    assert not out.exists()


SET = [
    MoleculeEntry("water", "g2:H2O"),
    MoleculeEntry("ammonia", "g2:NH3"),
    MoleculeEntry("methanol", "CO"),
    MoleculeEntry("methane", "g2:CH4", held_out=True),
]
SET_LEVEL = dict(xc="hf", basis="sto-3g", progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def set_db(tmp_path_factory):
    """A 4-molecule set computed on a 2-worker Dask LocalCluster (loopback)."""
    path = tmp_path_factory.mktemp("set") / "set.db"
    generate_set(SET, 2, path, scheduler="local", workers=2, **SET_LEVEL)
    return path


def test_dask_local_cluster_writes_every_molecule(set_db):
    got = rows(set_db)
    assert sorted((r.molecule, r.sample_index) for r in got) == sorted((e.name, i) for e in SET for i in range(2))
    assert {r.molecule for r in got if r.held_out} == {"methane"}
    md = ase.db.connect(set_db).metadata
    assert md["format"] == "phisnet-dataset-set-1" and set(md["molecules"]) == {e.name for e in SET}
    # Each row is a real PySCF calculation at its geometry (checked against one run here).
    row = next(r for r in got if r.molecule == "methanol")
    ref = run_dft(row.toatoms(), xc="hf", basis="sto-3g", conv_tol=1e-11)
    np.testing.assert_allclose(row.data["hamiltonian"], ref.hamiltonian, atol=1e-6)
    assert row.energy == pytest.approx(ref.energy * HARTREE_EV, abs=1e-5)
    # Different structures: thermal samples, not copies.
    water = [r.positions for r in got if r.molecule == "water"]
    assert not np.allclose(water[0], water[1])


def test_set_resumes_extends_and_refuses_changes(set_db, tmp_path):
    path = tmp_path / "set.db"
    path.write_bytes(set_db.read_bytes())
    before = {(r.molecule, r.sample_index): r.positions for r in rows(path)}
    generate_set(SET, 2, path, **SET_LEVEL)  # nothing to do
    assert len(rows(path)) == 8
    generate_set(SET[:2] + [MoleculeEntry("hf", "g2:HF")], 3, path, **SET_LEVEL)  # larger n and a new molecule
    after = {(r.molecule, r.sample_index): r.positions for r in rows(path)}
    assert len(after) == 8 + 2 + 3
    assert {k for k in after if k[0] == "hf"} == {("hf", 0), ("hf", 1), ("hf", 2)}
    for key, positions in before.items():
        np.testing.assert_array_equal(after[key], positions)
    with pytest.raises(InputError, match="methane"):
        generate_set([MoleculeEntry("methane", "C")], 2, path, **SET_LEVEL)
    with pytest.raises(InputError, match="temperature"):
        generate_set(SET, 2, path, temperature=300, **SET_LEVEL)
    without = tmp_path / "without-forces.db"
    generate_set(SET[:1], 1, without, forces=False, **SET_LEVEL)
    with pytest.raises(InputError, match="forces differ"):  # forces off is a setting that must hold on resume
        generate_set(SET[:1], 2, without, **SET_LEVEL)


def test_set_dataset_holds_out_whole_molecules(set_db, water_db):
    ds = HamiltonianDataset(set_db)
    parts = ds.split_indices(seed=0, train=3, val=1)
    assert sorted(ds[i]["molecule"] for i in parts["test_ood"]) == ["methane", "methane"]
    seen = parts["train"] + parts["val"] + parts["test"]
    assert len(seen) == 6 and not any(ds[i]["held_out"] for i in seen)
    assert "test_ood" not in HamiltonianDataset(water_db).split_indices()
    with pytest.raises(InputError, match="single-molecule"):
        generate_set(SET, 1, water_db, **SET_LEVEL)


def test_single_molecule_generation_on_dask(tmp_path):
    path = tmp_path / "water-dask.db"
    generate("water", 3, path, scheduler="local", workers=2, xc="hf", basis="sto-3g", progress=False, log=print)
    got = sorted(rows(path), key=lambda r: r.sample_index)
    assert [r.sample_index for r in got] == [0, 1, 2]
    # The structures are the ones the stored normal modes and seed give, and each row is PySCF's result for its
    # structure: where a calculation runs changes nothing.
    md = ase.db.connect(path).metadata
    settings = GenerationSettings(**{**md["settings"], "symbols": tuple(md["settings"]["symbols"])})
    modes = NormalModes.from_json(md["normal_modes"])
    for row in got:
        np.testing.assert_allclose(row.positions, sample_positions(modes, settings, row.sample_index), atol=1e-10)
    ref = run_dft(got[1].toatoms(), xc="hf", basis="sto-3g", conv_tol=1e-11)
    np.testing.assert_allclose(got[1].data["hamiltonian"], ref.hamiltonian, atol=1e-6)


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status  # a zombie has finished


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc")
def test_sigterm_stops_the_workers_too_and_resume_completes(tmp_path):
    path = tmp_path / "terminated.db"
    command = [sys.executable, "-m", "phisnet.cli", "generate", "water", "--n", "8", "--out", str(path), "--quiet"]
    command += ["--workers", "2", "--threads", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, count = time.time() + 240, 0
    while time.time() < deadline and proc.poll() is None and count < 1:
        try:
            count = sqlite3.connect(path).execute("SELECT COUNT(*) FROM systems").fetchone()[0]
        except sqlite3.OperationalError:
            count = 0
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be stopped"
    children = [
        int(pid) for task in Path(f"/proc/{proc.pid}/task").iterdir() for pid in (task / "children").read_text().split()
    ]
    assert len(children) >= 2  # the pool's worker processes
    os.kill(proc.pid, signal.SIGTERM)  # the parent only, as kill or pkill would
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130 and "run the same command again to resume" in err
    deadline = time.time() + 10  # a moment for the pool's processes to see the shutdown
    while time.time() < deadline and any(_running(pid) for pid in children):
        time.sleep(0.1)
    alive = [Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:200] for pid in children if _running(pid)]
    assert not alive, f"processes outlived the run: {alive}"
    assert 1 <= len(rows(path)) < 8
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert sorted(r.sample_index for r in rows(path)) == list(range(8))


def test_set_minima_are_the_conformers_mmff_and_xtb_minima(tmp_path):
    """--minima: the first structures of a molecule are its conformer (MMFF94) and its GFN2-xTB minimum."""
    from phisnet.md import xtb_calculator
    from phisnet.molecules import same_molecule

    path = tmp_path / "minima.db"
    methanol = [MoleculeEntry("methanol", "CO")]
    generate_set(methanol, 3, path, conformers=1, minima=2, **SET_LEVEL)
    got = {r.sample_index: r.toatoms() for r in rows(path)}
    md = ase.db.connect(path).metadata
    mmff = np.asarray(md["molecules"]["methanol"]["conformers"][0])
    assert md["settings"]["minima"] == 2

    def distances(positions):
        return np.linalg.norm(positions[:, None] - positions[None], axis=-1)

    np.testing.assert_allclose(distances(got[0].positions), distances(mmff), atol=1e-6)  # rotated, not moved
    xtb = got[1].copy()
    xtb.calc = xtb_calculator()
    assert np.abs(xtb.get_forces()).max() < 0.02  # eV/A: a GFN2-xTB minimum
    assert np.abs(distances(got[1].positions) - distances(mmff)).max() > 1e-3  # and not the MMFF one
    assert same_molecule(got[2], got[0]) and np.abs(distances(got[2].positions) - distances(mmff)).max() > 0.01
    with pytest.raises(InputError, match="minima"):  # a setting: a resume must keep it
        generate_set(methanol, 3, path, conformers=1, **SET_LEVEL)
    with pytest.raises(InputError, match="--minima counts"):
        generate_set(methanol, 1, tmp_path / "x.db", minima=2, **SET_LEVEL)
