"""phisnet.losses: the orbital and density losses measure what they say, on exact shifts and mixings."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from phisnet.dataset import HamiltonianDataset
from phisnet.train_config import TrainConfig


def test_orbital_loss_sees_an_orbital_energy_shift_exactly(water_db):
    """H_ref + d S c_a c_a^T S moves orbital a's energy by d and no orbital: the orbital loss has exactly one
    entry d there when a is among the counted rows, and none when it is not."""
    import scipy.linalg

    from phisnet.losses import OrbitalCache, orbital_loss

    dataset = HamiltonianDataset(water_db)
    sample = dataset[0]
    h, s = sample["hamiltonian"].double().numpy(), sample["overlap"].double().numpy()
    cache = OrbitalCache(dataset, charge=0)
    c = cache.batch([0], torch.float64, None)
    rows, nao = cache.rows(0), h.shape[0]
    assert rows == 10 and nao == 24  # water, def2-SVP: 5 occupied and the 5 lowest virtual orbitals
    for a, inside in ((2, True), (rows - 1, True), (rows, False)):  # occupied, the last counted virtual, beyond
        d, scale = 3e-3, 0.5
        ca = c[0, :, a].numpy()
        shifted = h + d * np.outer(s @ ca, s @ ca)
        before = scipy.linalg.eigh(h, s, eigvals_only=True)
        after = scipy.linalg.eigh(shifted, s, eigvals_only=True)
        assert np.abs(after - np.sort(before + d * (np.arange(nao) == a))).max() < 1e-12
        loss = orbital_loss(torch.from_numpy(shifted)[None], torch.from_numpy(h)[None], c, rows, scale)
        expected = ((d / scale) ** 2 + d / scale) / (rows * nao) if inside else 0.0
        assert float(loss) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_orbital_all_rows_counts_the_highest_virtual_too(water_db):
    """A shift of the highest orbital's energy (where nearly dependent AO combinations live) is outside the
    default rows and inside with orbital_all_rows."""

    from phisnet.losses import OrbitalCache, orbital_term

    dataset = HamiltonianDataset(water_db)
    sample = dataset[0]
    h, s = sample["hamiltonian"].double().numpy(), sample["overlap"].double().numpy()
    cache = OrbitalCache(dataset, charge=0)
    c = cache.batch([0], torch.float64, None)[0].numpy()
    top = s @ c[:, -1]
    shifted = {"hamiltonian": torch.from_numpy(h + 3e-3 * np.outer(top, top))[None]}
    batch = {"hamiltonian": torch.from_numpy(h)[None]}
    model = SimpleNamespace(h_scale=torch.tensor(0.5, dtype=torch.float64))
    losses = [
        float(orbital_term(shifted, batch, [0], cache, model, TrainConfig(orbital_weight=1.0, orbital_all_rows=rows)))
        for rows in (False, True)
    ]
    d, nao = 3e-3 / 0.5, h.shape[0]
    assert losses[0] == pytest.approx(0.0, abs=1e-15)
    assert losses[1] == pytest.approx((d**2 + d) / (nao * nao), rel=1e-9)


def test_density_loss_weighs_an_occupied_virtual_mixing_by_the_homo_lumo_gap_over_its_own(water_db):
    """H_ref + d S (c_i c_a^T + c_a c_i^T) S mixes occupied i with virtual a and nothing else: the density loss
    has exactly one entry, d times gap_HL / (eps_a - eps_i); a mixing within the occupied orbitals adds none."""
    from phisnet.losses import OrbitalCache, density_loss

    dataset = HamiltonianDataset(water_db)
    sample = dataset[0]
    h, s = sample["hamiltonian"].double().numpy(), sample["overlap"].double().numpy()
    cache = OrbitalCache(dataset, charge=0)
    c, eps = cache.batch([0], torch.float64, None), cache.energies([0], torch.float64, None)
    C, energies, n_occupied, nao = c[0].numpy(), eps[0].numpy(), cache.n_occupied(0), h.shape[0]
    gap = energies[n_occupied] - energies[n_occupied - 1]
    d, scale = 2e-3, 0.5
    within = np.outer(s @ C[:, 0], s @ C[:, 1])
    for i, a in ((n_occupied - 1, n_occupied), (0, n_occupied), (2, nao - 1)):  # HOMO-LUMO, core-LUMO, far
        mixing = np.outer(s @ C[:, i], s @ C[:, a])
        mixed = h + d * (mixing + mixing.T) + d * (within + within.T)
        loss = density_loss(torch.from_numpy(mixed)[None], torch.from_numpy(h)[None], c, eps, n_occupied, scale)
        entry = d * gap / (energies[a] - energies[i]) / scale
        assert float(loss) == pytest.approx((entry**2 + entry) / (n_occupied * (nao - n_occupied)), rel=1e-8)
