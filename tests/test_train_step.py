"""phisnet.train_step: one step's loss and gradients, and what a validation pass reports."""

import pytest
import tiny
import torch

from phisnet.config import PhiSNetConfig
from phisnet.dataset import HamiltonianDataset
from phisnet.model import PhiSNet
from phisnet.train_config import TrainConfig
from phisnet.training_data import composition_groups

TINY = PhiSNetConfig(**tiny.TINY)


def test_one_call_for_a_mixed_batch_gives_the_same_loss_and_gradients(set_db):
    """All compositions in one network call (matrix training) against one call per composition (energy training)."""
    import torch

    from phisnet.train_step import batch_backward

    dataset = HamiltonianDataset(set_db)
    torch.manual_seed(0)
    model = PhiSNet(PhiSNetConfig(**TINY.to_json() | {"elements": [1, 6, 7, 8], "basis": "sto-3g"}))
    model.fit_references([dataset[i] for i in range(len(dataset))])
    chunk = list(range(len(dataset)))
    assert len(composition_groups(dataset, chunk)) == 3
    results = []
    for one_call in (True, False):
        model.zero_grad()
        loss = batch_backward(model, model, dataset, chunk, torch.float32, TrainConfig(), None, "reference", one_call)
        results.append((float(loss), [p.grad.clone() for p in model.parameters()]))
    (one, grads_one), (each, grads_each) = results
    assert one == pytest.approx(each, rel=1e-5)
    for a, b in zip(grads_one, grads_each, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="OrbitalCache"):  # a library caller that forgot the reference orbitals
        batch_backward(
            model, model, dataset, chunk, torch.float32, TrainConfig(orbital_weight=0.1), None, "reference", True
        )


def test_validate_reports_the_first_order_occupied_orbital_energy_error_exactly(water_db):
    """A stand-in network that returns the reference H with orbital a's energy moved by d (H + d S c_a c_a^T S,
    exact S): validation's eps MAE is d / n_occupied for an occupied a and 0 for a virtual one."""
    from phisnet.losses import OrbitalCache
    from phisnet.train_step import validate

    dataset = HamiltonianDataset(water_db)
    cache = OrbitalCache(dataset, charge=0)
    indices, d = [0, 1, 2], 4e-3

    class Shifted(torch.nn.Module):
        h_scale, s_scale = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64)

        def __init__(self, orbital):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
            self.by_geometry = {}
            for i in indices:
                sample, c = dataset[i], cache.batch([i], torch.float64, None)[0, :, orbital]
                h, s = sample["hamiltonian"].double(), sample["overlap"].double()
                self.by_geometry[sample["positions"].double().numpy().tobytes()] = (
                    h + d * torch.outer(s @ c, s @ c),
                    s,
                )

        def forward(self, positions, numbers):
            out = []
            for batch in positions:
                pairs = [self.by_geometry[p.numpy().tobytes()] for p in batch]
                out.append(
                    {"hamiltonian": torch.stack([h for h, _ in pairs]), "overlap": torch.stack([s for _, s in pairs])}
                )
            return out

    settings = TrainConfig(orbital_weight=1.0)
    for orbital, expected in ((1, d / 5), (6, 0.0)):
        metrics = validate(Shifted(orbital), dataset, indices, 2, torch.float64, settings, orbitals=cache)
        assert metrics["val_eps_MAE_uHa"] == pytest.approx(expected * 1e6, rel=1e-9, abs=1e-6)
        assert metrics["val_S_MAE_1e-6"] == 0.0 and metrics["val_H_MAE_uHa"] > 0
        assert metrics["val_rotation_RMS_1e-6"] < 1e-6  # an energy shift mixes no occupied with virtual orbitals
