"""phisnet.baseline: a fitted S, T, V_nuc baseline of H, against PySCF's own matrices."""

import numpy as np
import torch
from tiny import TINY

from phisnet.checkpoint import save_checkpoint
from phisnet.config import PhiSNetConfig
from phisnet.io import read_molecules
from phisnet.model import PhiSNet
from phisnet.predictor import load
from phisnet.reference import build_mol, run_dft
from phisnet.torchtools import default_dtype


def pbe_waters(n: int, seed: int) -> list[dict]:
    """n distorted waters with their PBE/def2-SVP Kohn-Sham matrices, as training samples."""
    (water,) = read_molecules("water")
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        atoms = water.copy()
        atoms.positions += rng.normal(scale=0.05, size=(3, 3))
        ref = run_dft(atoms, forces=False)
        samples.append(
            {
                "positions": torch.tensor(atoms.positions),
                "atomic_numbers": torch.tensor(atoms.numbers),
                "hamiltonian": torch.tensor(ref.hamiltonian),
                "overlap": torch.tensor(ref.overlap),
            }
        )
    return samples


def baseline_model(dtype=torch.float64) -> PhiSNet:
    with default_dtype(dtype):
        torch.manual_seed(0)
        return PhiSNet(PhiSNetConfig(elements=[1, 8], integral_baseline=True, **TINY))


def test_baseline_fitted_to_pbe_waters_predicts_a_new_geometry_to_a_few_mha():
    train, held_out = pbe_waters(4, seed=0), pbe_waters(1, seed=1)[0]
    model = baseline_model()
    report = model.fit_references(train)
    baseline = model.baseline
    numbers = held_out["atomic_numbers"]
    H0 = baseline.hamiltonian(held_out["positions"][None], numbers, model.element_indices(numbers))[0]
    H = held_out["hamiltonian"]
    error, zero = float((H0 - H).abs().mean()), float(H.abs().mean())
    # water's entries average ~0.25 Ha; on phisnet generate data the baseline leaves ~2.6 mHa
    assert error < 0.03 * zero
    assert 0 < report["mae_uHa"] < 0.03 * zero * 1e6
    # the integrals are PySCF's
    M = baseline.integrals(held_out["positions"][None], numbers)[0].numpy()
    mol = build_mol(read_molecules("water")[0].copy())
    mol = mol.set_geom_(held_out["positions"].numpy(), unit="Angstrom")
    np.testing.assert_allclose(M[0], mol.intor("int1e_ovlp"), atol=1e-14)
    np.testing.assert_allclose(M[1] + M[2], mol.intor("int1e_kin") + mol.intor("int1e_nuc"), atol=1e-12)
    # on an atom's own blocks only V_nuc and the identity carry coefficients (S and T are constants there)
    assert float(baseline.onsite[..., :2].abs().max()) == 0.0
    assert float(baseline.onsite[..., 2:].abs().max()) > 0.0
    # the network's references and scale are those of what the baseline leaves
    assert float(model.h_scale) < 0.05 * float(H.std())


def test_a_kind_of_block_never_seen_in_training_gets_no_baseline():
    model = baseline_model()
    model.fit_references(pbe_waters(2, seed=0))
    h2 = read_molecules("H2")[0]  # H-H pairs exist in water; a lone O2 has O-O blocks water never had
    o2 = read_molecules("O2")[0]
    numbers = torch.tensor(o2.numbers)
    coefficients = model.baseline.coefficients(model.element_indices(numbers))
    nao_o = 14
    assert float(coefficients[:, :nao_o, nao_o:].abs().max()) == 0.0  # O-O off-site: zeros
    assert float(coefficients[2, :nao_o, :nao_o].abs().max()) > 0  # O on-site: fitted
    assert len(h2) == 2


def test_a_trained_baseline_meeting_new_kinds_of_block_fits_only_those():
    """What ``--init`` does with a model whose baseline never saw some pairs of the new data (H2O2's O-O)."""
    model = baseline_model()
    model.fit_references(pbe_waters(2, seed=0))
    onsite, offsite = model.baseline.onsite.clone(), model.baseline.offsite.clone()
    (peroxide,) = read_molecules("H2O2")
    ref = run_dft(peroxide, forces=False)
    sample = {
        "positions": torch.tensor(peroxide.positions),
        "atomic_numbers": torch.tensor(peroxide.numbers),
        "hamiltonian": torch.tensor(ref.hamiltonian),
    }
    o, h = model.element_indices(torch.tensor([8, 1])).tolist()
    assert float(offsite[o, :, o].abs().max()) == 0.0  # water has no O-O pair
    report = model.baseline.fit([sample], model.element_indices, only_new=True)
    assert report["kinds"] > 0
    assert float(model.baseline.offsite[o, :, o].abs().max()) > 0  # O-O now fitted
    # every kind water had keeps its coefficients: the model's H is unchanged where it was trained
    torch.testing.assert_close(model.baseline.onsite, onsite, rtol=0, atol=0)
    torch.testing.assert_close(model.baseline.offsite[o, :, h], offsite[o, :, h], rtol=0, atol=0)
    torch.testing.assert_close(model.baseline.offsite[h, :, h], offsite[h, :, h], rtol=0, atol=0)
    assert model.baseline.fit([sample], model.element_indices, only_new=True)["kinds"] == 0  # nothing new now
    other = baseline_model()
    other.fit_references(pbe_waters(2, seed=0))
    zero = {**sample, "hamiltonian": torch.zeros_like(sample["hamiltonian"])}  # O-O's best coefficients: zero
    assert other.baseline.fit([zero], other.element_indices, only_new=True)["kinds"] == 0  # nothing learnt
    model.baseline.fit([sample], model.element_indices)  # a full refit to H2O2 alone would move them
    assert not torch.equal(model.baseline.offsite[o, :, h], offsite[o, :, h])


def test_checkpoint_keeps_the_baseline_and_predicts_with_it(tmp_path):
    model = baseline_model(torch.float32)  # built as load builds it: e3nn's coefficients in float32
    model.fit_references(pbe_waters(2, seed=0))
    save_checkpoint(tmp_path / "m.pt", model, {})
    predictor = load(tmp_path / "m.pt", threads=torch.get_num_threads())
    assert predictor.model.config.integral_baseline
    torch.testing.assert_close(predictor.model.baseline.offsite, model.baseline.offsite, rtol=0, atol=0)
    (atoms,) = read_molecules("water")
    with torch.no_grad():
        expected = model(torch.tensor(atoms.positions), torch.tensor(atoms.numbers))  # float64, as Predictor passes
    np.testing.assert_array_equal(predictor.predict(atoms).hamiltonian, expected["hamiltonian"].double().numpy())
    predictor.warm_up()  # O-H, 9 electrons: the integrals need no consistent electron count


SCREENING = [0.3, 1.0, 3.0]


def test_screened_attractions_are_pyscf_erfc_potentials_and_their_gradients_are_exact():
    from phisnet.baseline import one_electron_integrals, screened_attraction_gradient
    from phisnet.reference import BOHR

    (water,) = read_molecules("water")
    M = one_electron_integrals(water.numbers, water.positions, "def2-svp", SCREENING)
    assert M.shape[0] == 3 + len(SCREENING)
    # Another route through PySCF: the erf-attenuated 1/r of each nucleus (with_rinv_zeta), subtracted from 1/r.
    mol = build_mol(water)
    for k, zeta in enumerate(SCREENING):
        expected = 0.0
        for atom in range(mol.natm):
            with mol.with_rinv_origin(mol.atom_coord(atom)):
                bare = mol.intor("int1e_rinv")
                with mol.with_rinv_zeta(zeta):
                    long_range = mol.intor("int1e_rinv")
            expected = expected - mol.atom_charge(atom) * (bare - long_range)
        np.testing.assert_allclose(M[3 + k], expected, atol=1e-12)
    # Screening removes the long range: W is a part of V_nuc, the smaller the tighter the cloud (larger zeta).
    sizes = [np.abs(M[3 + k]).mean() / np.abs(M[2]).mean() for k in range(len(SCREENING))]
    assert 1 > sizes[0] > sizes[1] > sizes[2] > 0
    # Derivatives against central differences of the integrals (Angstrom steps, gradient per Bohr).
    dW = screened_attraction_gradient(water, "def2-svp", SCREENING)
    step = 1e-4
    for atom, axis in ((0, 2), (1, 0)):
        plus, minus = water.positions.copy(), water.positions.copy()
        plus[atom, axis] += step
        minus[atom, axis] -= step
        fd = (
            one_electron_integrals(water.numbers, plus, "def2-svp", SCREENING)[3:]
            - one_electron_integrals(water.numbers, minus, "def2-svp", SCREENING)[3:]
        ) / (2 * step)
        np.testing.assert_allclose(dW[:, atom, axis] / BOHR, fd, atol=1e-6)


def test_integrals_of_a_molecule_moved_to_a_new_geometry_equal_a_fresh_build():
    from concurrent.futures import ThreadPoolExecutor

    from phisnet.baseline import one_electron_integrals

    (water,) = read_molecules("water")
    rng = np.random.default_rng(3)
    geometries = [water.positions + rng.normal(scale=0.1, size=(3, 3)) for _ in range(3)]
    moved = [one_electron_integrals(water.numbers, g, "def2-svp", SCREENING) for g in geometries]
    for g, M in zip(geometries, moved, strict=True):
        atoms = water.copy()
        atoms.positions = g
        mol = build_mol(atoms)
        for k, name in enumerate(("int1e_ovlp", "int1e_kin", "int1e_nuc")):
            np.testing.assert_allclose(M[k], mol.intor(name), atol=1e-12)
    # Another thread builds its own molecule: the screened parts of its first build equal this thread's moved ones.
    with ThreadPoolExecutor(1) as pool:
        fresh = pool.submit(one_electron_integrals, water.numbers, geometries[1], "def2-svp", SCREENING).result()
    np.testing.assert_allclose(moved[1], fresh, atol=1e-12)
    assert np.abs(moved[1] - moved[0]).max() > 1e-3  # the geometries differ


def test_screening_lowers_the_baseline_error_on_a_new_geometry():
    train, held_out = pbe_waters(4, seed=0), pbe_waters(1, seed=1)[0]
    numbers = held_out["atomic_numbers"]
    errors = {}
    for screening in ([], SCREENING):
        with default_dtype(torch.float64):
            model = PhiSNet(
                PhiSNetConfig(elements=[1, 8], integral_baseline=True, baseline_screening=screening, **TINY)
            )
        model.fit_references(train)
        assert model.baseline.offsite.shape[-1] == 3 + len(screening)
        H0 = model.baseline.hamiltonian(held_out["positions"][None], numbers, model.element_indices(numbers))[0]
        errors[len(screening)] = float((H0 - held_out["hamiltonian"]).abs().mean())
    assert errors[len(SCREENING)] < 0.8 * errors[0], errors


def test_screening_needs_the_baseline_and_positive_exponents():
    import pytest

    with pytest.raises(ValueError, match="needs integral_baseline"):
        PhiSNet(PhiSNetConfig(elements=[1, 8], baseline_screening=[1.0], **TINY))
    with pytest.raises(ValueError, match="exponents must be positive"):
        PhiSNet(PhiSNetConfig(elements=[1, 8], integral_baseline=True, baseline_screening=[0.0], **TINY))


def test_exact_overlap_is_pyscfs_and_survives_the_checkpoint(tmp_path):
    import pytest

    with default_dtype(torch.float32):
        model = PhiSNet(PhiSNetConfig(elements=[1, 8], integral_baseline=True, exact_overlap=True, **TINY))
    assert not any(name.startswith("s_") for name in model.heads)  # no S heads to train
    model.fit_references(pbe_waters(2, seed=0))
    save_checkpoint(tmp_path / "m.pt", model, {})
    predictor = load(tmp_path / "m.pt", threads=torch.get_num_threads())
    (atoms,) = read_molecules("water")
    prediction = predictor.predict(atoms)
    np.testing.assert_allclose(
        prediction.overlap, build_mol(atoms).intor("int1e_ovlp"), atol=1e-14
    )  # float64 even from a float32 model
    with pytest.raises(ValueError, match="exact_overlap needs integral_baseline"):
        PhiSNet(PhiSNetConfig(elements=[1, 8], exact_overlap=True, **TINY))
