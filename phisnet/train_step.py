"""One training step's loss and gradients (``batch_backward``) and a validation pass (``validate``)."""

from __future__ import annotations

import contextlib

import torch

from phisnet.losses import IntegralCache, OrbitalCache, energy_terms, loss_terms, occupied_virtual, orbital_term
from phisnet.metrics import MICRO
from phisnet.model import PhiSNet
from phisnet.train_config import TrainConfig
from phisnet.training_data import composition_groups, mini_batches, stack_batch


def batch_loss(
    ddp_model, model, dataset, groups, dtype, config: TrainConfig, integrals, target: str, orbitals=None
) -> torch.Tensor:
    """Training loss of a mini-batch given as groups of one composition, each weighted by its size.

    The matrix loss takes every group through the network in one call (one graph over all molecules);
    energies and forces go group by group.
    """
    device = next(model.parameters()).device
    batches = [stack_batch(dataset, group, dtype, device) for group in groups]
    weights = [len(group) / sum(len(g) for g in groups) for group in groups]
    loss = torch.zeros((), dtype=torch.float64)
    if config.matrix_weight > 0 or config.with_orbitals:
        preds = ddp_model([b["positions"] for b in batches], [b["atomic_numbers"] for b in batches])
        for pred, batch, weight, group in zip(preds, batches, weights, groups, strict=True):
            if config.matrix_weight > 0:
                lh, ls = loss_terms(pred, batch, model)
                loss = loss + weight * config.matrix_weight * (lh + config.overlap_weight * ls)
            if config.with_orbitals:
                loss = loss + weight * orbital_term(pred, batch, group, orbitals, model, config)
    if config.with_energy:
        for group, batch, weight in zip(groups, batches, weights, strict=True):
            de, df = energy_terms(
                ddp_model, dataset, group, batch, integrals, target, forces=config.force_weight > 0, train=True
            )
            loss = loss + weight * config.energy_weight * (de**2).mean()
            if df is not None:
                loss = loss + weight * config.force_weight * (df**2).mean()
    return loss


def batch_backward(
    ddp_model,
    model,
    dataset,
    chunk: list[int],
    dtype,
    config: TrainConfig,
    integrals,
    target: str,
    one_call: bool,
    orbitals: OrbitalCache | None = None,
) -> torch.Tensor:
    """Forward and backward of one mini-batch, gradients added to the parameters' ``grad``; the loss.

    ``one_call``: every composition of the mini-batch in one pass through the network; otherwise
    one forward and backward per composition, each weighted by its share of the mini-batch, the
    gradients adding up (under DistributedDataParallel they are averaged across processes once,
    at the last call).
    """
    groups = composition_groups(dataset, chunk)
    calls = [groups] if one_call else [[group] for group in groups]
    loss = torch.zeros((), dtype=torch.float64)
    for c, call in enumerate(calls):
        share = sum(len(group) for group in call) / len(chunk)
        sync = c == len(calls) - 1 or ddp_model is model
        with contextlib.nullcontext() if sync else ddp_model.no_sync():
            part = batch_loss(ddp_model, model, dataset, call, dtype, config, integrals, target, orbitals) * share
            part.backward()
        loss = loss + part.detach()
    return loss


def validate(
    model: PhiSNet,
    dataset,
    indices: list[int],
    batch_size: int,
    dtype,
    config: TrainConfig | None = None,
    integrals: IntegralCache | None = None,
    target: str = "reference",
    orbitals: OrbitalCache | None = None,
) -> dict:
    """Validation loss (the training loss) and MAE of H (uHa) and S (1e-6); with energy or force
    weights also the end-to-end energy (meV) and force (meV/A) MAE; with the orbital loss also the MAE
    (uHa) of the occupied orbitals' energies, the diagonal of C^T H_pred C (first order, exact S), and the
    root-mean-square first-order occupied-virtual rotation X_ia / (eps_a - eps_i) (1e-6)."""
    config = config or TrainConfig()
    with_energy = integrals is not None and config.with_energy
    model.eval()
    n, loss, h_abs, s_abs, e_abs, f_abs, eps_abs, rotation_sq = 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    with_orbitals = orbitals is not None and config.with_orbitals
    device = next(model.parameters()).device
    for mini_batch in mini_batches(dataset, indices, batch_size, None):
        groups = composition_groups(dataset, mini_batch)
        batches = [stack_batch(dataset, group, dtype, device) for group in groups]
        with torch.no_grad():  # every composition of the mini-batch in one call
            preds = model([b["positions"] for b in batches], [b["atomic_numbers"] for b in batches])
        for chunk, batch, pred in zip(groups, batches, preds, strict=True):
            k = len(chunk)
            lh, ls = loss_terms(pred, batch, model)
            batch_loss = config.matrix_weight * float(lh + config.overlap_weight * ls)
            h_abs += float((pred["hamiltonian"] - batch["hamiltonian"]).abs().mean()) * k
            s_abs += float((pred["overlap"] - batch["overlap"]).abs().mean()) * k
            if with_orbitals:
                batch_loss += float(orbital_term(pred, batch, chunk, orbitals, model, config))
                c, n_occupied = orbitals.batch(chunk, torch.float64, device), orbitals.n_occupied(chunk[0])
                error = (pred["hamiltonian"] - batch["hamiltonian"]).double()
                c_occupied = c[:, :, :n_occupied]
                eps_abs += float(torch.einsum("bpi,bpq,bqi->bi", c_occupied, error, c_occupied).abs().mean()) * k
                eps = orbitals.energies(chunk, torch.float64, device)
                block, gaps = occupied_virtual(
                    pred["hamiltonian"].double(), batch["hamiltonian"].double(), c, eps, n_occupied
                )
                rotation_sq += float(((block / gaps) ** 2).mean()) * k
            if with_energy:
                de, df = energy_terms(model, dataset, chunk, batch, integrals, target, forces=True, train=False)
                de, df = de.detach(), df.detach()
                batch_loss += config.energy_weight * float((de**2).mean()) + config.force_weight * float((df**2).mean())
                e_abs += float(de.abs().sum())
                f_abs += float(df.abs().mean()) * k
            loss += batch_loss * k
            n += k
    model.train()
    metrics = {"val_loss": loss / n, "val_H_MAE_uHa": h_abs / n * MICRO, "val_S_MAE_1e-6": s_abs / n * MICRO}
    if with_energy:
        metrics.update({"val_E_MAE_meV": e_abs / n * 1e3, "val_F_MAE_meV/A": f_abs / n * 1e3})
    if with_orbitals:
        metrics["val_eps_MAE_uHa"] = eps_abs / n * MICRO
        metrics["val_rotation_RMS_1e-6"] = (rotation_sq / n) ** 0.5 * MICRO
    return metrics
