"""The training losses and the caches they read (reference orbitals, integrals), computed once per structure.

Loss: MSE + MAE of the entries of H and S, each divided by the model's output scale
(the spread of the targets around the per-element references) so both matrices weigh
alike, times ``matrix_weight``. With ``orbital_weight`` above zero the loss adds the same
MSE + MAE of the H error in the basis of the reference orbitals, C^T (H_pred - H_ref) C
for the occupied orbitals and as many of the lowest virtual ones (rows) against all of
them (columns): to first order the orbital-energy errors are its diagonal and the
occupied-virtual mixing that moves the density its off-diagonal, and an error along a
nearly dependent AO combination, small in H but amplified ~1/lambda(S) in the orbitals
(a virtual falling below the HOMO), counts as large as it acts. With ``orbital_all_rows`` every
orbital gives a row (the whole matrix): the high virtuals along nearly dependent AO combinations,
whose diagonal errors a model far from converged can make tenths of a Hartree, count too. With ``density_weight`` above
zero the loss adds the MSE + MAE of the occupied-virtual block X of that matrix with each entry
times gap / (eps_a - eps_i) (gap: the structure's HOMO-LUMO gap, so the HOMO-LUMO entry counts
as it is and a core-to-high-virtual entry far less): X_ia / (eps_a - eps_i) is the first-order
rotation of occupied orbital i towards virtual a, the density error an SCF guess starts from,
and validation reports its root-mean-square. With ``energy_weight`` or
``force_weight`` above zero the loss adds the MSE of the end-to-end energy (eV) and forces
(eV/Angstrom) of the predicted Fock matrix (``phisnet.end_to_end.end_to_end``) against the dataset's CCSD(T) labels
(``phisnet ccsdt``) or its own reference energies.
"""

from __future__ import annotations

import numpy as np
import torch

from phisnet.errors import InputError
from phisnet.model import PhiSNet
from phisnet.train_config import TrainConfig


def loss_terms(pred: dict, batch: dict, model: PhiSNet) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled MSE + MAE of H and of S for a batch."""
    return (
        scaled_loss(pred["hamiltonian"], batch["hamiltonian"], model.h_scale),
        scaled_loss(pred["overlap"], batch["overlap"], model.s_scale),
    )


def scaled_loss(predicted: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """MSE + MAE of matrix entries in units of the model's output scale."""
    d = (predicted - target) / scale
    return (d**2).mean() + d.abs().mean()


def orbital_loss(
    predicted: torch.Tensor, target: torch.Tensor, orbitals: torch.Tensor, rows: int, scale
) -> torch.Tensor:
    """Scaled MSE + MAE of C[:, :rows]^T (H_pred - H_ref) C for a batch; ``orbitals`` (batch, nao, nao) are
    the reference orbitals (columns, by energy), ``rows`` how many of the lowest ones give rows."""
    error = predicted - target
    d = orbitals[:, :, :rows].transpose(1, 2) @ error @ orbitals / scale
    return (d**2).mean() + d.abs().mean()


def occupied_virtual(
    predicted: torch.Tensor, target: torch.Tensor, orbitals: torch.Tensor, energies: torch.Tensor, n_occupied: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The occupied-virtual block X of C^T (H_pred - H_ref) C, (batch, n_occupied, n_virtual), and the
    orbital-energy differences eps_a - eps_i of the same shape; ``orbitals`` (batch, nao, nao) and
    ``energies`` (batch, nao) are the reference ones, by energy."""
    error = predicted - target
    block = orbitals[:, :, :n_occupied].transpose(1, 2) @ error @ orbitals[:, :, n_occupied:]
    gaps = energies[:, None, n_occupied:] - energies[:, :n_occupied, None]
    return block, gaps


def density_loss(
    predicted: torch.Tensor,
    target: torch.Tensor,
    orbitals: torch.Tensor,
    energies: torch.Tensor,
    n_occupied: int,
    scale,
) -> torch.Tensor:
    """Scaled MSE + MAE of the occupied-virtual block X, each entry times HOMO-LUMO gap / (eps_a - eps_i)."""
    block, gaps = occupied_virtual(predicted, target, orbitals, energies, n_occupied)
    d = block * (gaps[:, -1:, :1] / gaps) / scale
    return (d**2).mean() + d.abs().mean()


class OrbitalCache:
    """Reference orbitals and orbital energies of each structure, from the generalized eigenproblem of its
    reference H and S (float64, once per structure); the orbital loss takes the occupied orbitals and as
    many virtual ones as rows."""

    def __init__(self, dataset, charge: int):
        self.dataset, self.charge = dataset, charge
        self.items: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def n_occupied(self, index: int) -> int:
        return (int(self.dataset[index]["atomic_numbers"].sum()) - self.charge + 1) // 2

    def rows(self, index: int) -> int:
        return min(2 * self.n_occupied(index), self.dataset[index]["hamiltonian"].shape[-1])

    def _solved(self, indices: list[int], part: int, dtype, device) -> torch.Tensor:
        import scipy.linalg

        for i in indices:
            if i not in self.items:
                sample = self.dataset[i]
                h, s = (sample[key].double().numpy() for key in ("hamiltonian", "overlap"))
                self.items[i] = scipy.linalg.eigh(h, s)
        return torch.from_numpy(np.stack([self.items[i][part] for i in indices])).to(device=device, dtype=dtype)

    def batch(self, indices: list[int], dtype, device) -> torch.Tensor:
        """Reference orbitals C, (batch, nao, nao), columns by energy."""
        return self._solved(indices, 1, dtype, device)

    def energies(self, indices: list[int], dtype, device) -> torch.Tensor:
        """Reference orbital energies, (batch, nao), Hartree, ascending."""
        return self._solved(indices, 0, dtype, device)


def orbital_term(
    pred: dict, batch: dict, group: list[int], orbitals: OrbitalCache, model: PhiSNet, config: TrainConfig
) -> torch.Tensor:
    """The orbital and density losses of one composition's batch, each times its weight."""
    if orbitals is None:
        raise ValueError(
            "orbital_weight or density_weight > 0 needs the reference orbitals: pass "
            "orbitals=OrbitalCache(dataset, charge)."
        )
    h = pred["hamiltonian"]
    c = orbitals.batch(group, h.dtype, h.device)
    term = torch.zeros((), dtype=h.dtype, device=h.device)
    if config.orbital_weight > 0:
        rows = c.shape[-1] if config.orbital_all_rows else orbitals.rows(group[0])
        term = term + config.orbital_weight * orbital_loss(h, batch["hamiltonian"], c, rows, model.h_scale)
    if config.density_weight > 0:
        eps = orbitals.energies(group, h.dtype, h.device)
        n_occupied = orbitals.n_occupied(group[0])
        term = term + config.density_weight * density_loss(h, batch["hamiltonian"], c, eps, n_occupied, model.h_scale)
    return term


def energy_target(config: TrainConfig, dataset) -> str:
    labelled = any("ccsd_t_energy" in s for s in dataset.samples)
    if config.energy_target == "auto":
        return "ccsd_t" if labelled else "reference"
    if config.energy_target not in ("ccsd_t", "reference"):
        raise InputError(f"energy_target must be auto, ccsd_t or reference, got {config.energy_target!r}.")
    if config.energy_target == "ccsd_t" and not labelled:
        raise InputError(f"{config.data} has no CCSD(T) labels; add them with: phisnet ccsdt {config.data}")
    return config.energy_target


class IntegralCache:
    """Exact S, h, E_nuc and their derivatives per structure, computed once (PySCF, milliseconds)."""

    def __init__(self, dataset, basis: str, charge: int):
        self.dataset, self.basis, self.charge = dataset, basis, charge
        self.screening: list[float] = []  # the model's baseline screening, set once the model is built
        self.items: dict[int, object] = {}

    def batch(self, indices: list[int]) -> dict:
        from phisnet.dataset import sample_atoms
        from phisnet.end_to_end import geometry_integrals, stack_integrals

        for i in indices:
            if i not in self.items:
                atoms = sample_atoms(self.dataset[i])
                self.items[i] = geometry_integrals(atoms, self.basis, self.charge, screening=self.screening)
        return stack_integrals([self.items[i] for i in indices])


def energy_terms(model, dataset, chunk, batch, integrals: IntegralCache, target: str, forces: bool, train: bool):
    """End-to-end energies and forces of a batch and their errors (eV, eV/A) against the target."""
    from phisnet.end_to_end import end_to_end
    from phisnet.metrics import target_labels
    from phisnet.reference import HARTREE_EV

    e_key, f_key = target_labels(target)
    energy, force = end_to_end(
        model,
        batch["positions"].double(),
        batch["atomic_numbers"],
        integrals.batch(chunk),
        forces=forces,
        create_graph=train,
    )
    e_ref = torch.stack([dataset[i][e_key] for i in chunk])
    de = (energy - e_ref) * HARTREE_EV
    df = None
    if forces:
        f_ref = torch.stack([dataset[i][f_key] for i in chunk])
        df = (force - f_ref) * HARTREE_EV
    return de, df
