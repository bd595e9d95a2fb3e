"""phisnet.baseline: a fitted S, T, V_nuc baseline of H, against PySCF's own matrices."""

import numpy as np
import torch

from phisnet.io import read_molecules
from phisnet.model import PhiSNet, PhiSNetConfig, default_dtype, load, save_checkpoint
from phisnet.reference import build_mol, run_dft

TINY = {"channels": 4, "n_interactions": 1, "n_radial": 8, "radial_hidden": 8}


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


def test_checkpoint_keeps_the_baseline_and_predicts_with_it(tmp_path):
    model = baseline_model(torch.float32)  # built as load builds it: e3nn's coefficients in float32
    model.fit_references(pbe_waters(2, seed=0))
    save_checkpoint(tmp_path / "m.pt", model, {})
    predictor = load(tmp_path / "m.pt", threads=torch.get_num_threads())
    assert predictor.model.config.integral_baseline
    torch.testing.assert_close(predictor.model.baseline.offsite, model.baseline.offsite, rtol=0, atol=0)
    (atoms,) = read_molecules("water")
    with torch.no_grad():
        expected = model(torch.tensor(atoms.positions, dtype=torch.float32), torch.tensor(atoms.numbers))
    np.testing.assert_array_equal(predictor.predict(atoms).hamiltonian, expected["hamiltonian"].double().numpy())
    predictor.warm_up()  # O-H, 9 electrons: the integrals need no consistent electron count
