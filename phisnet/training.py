"""Training PhiSNet: loss, validation, checkpoints, resume, metrics log, DDP.

``run(TrainConfig(...))`` trains on an ASE database from ``phisnet generate`` and writes
into ``out``: ``best.pt`` (lowest validation H MAE), ``last.pt`` (with optimiser state,
for ``resume``), ``metrics.jsonl`` (one JSON object per validation) and ``config.json``.

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
(eV/Angstrom) of the predicted Fock matrix (``phisnet.observables.end_to_end``) against the dataset's CCSD(T) labels
(``phisnet ccsdt``) or its own reference energies; ``init`` starts from the weights of
another checkpoint (transfer learning, e.g. HF -> CCSD(T)). The learning rate decays on a
validation plateau or along a cosine to ``lr_min`` at ``max_steps``; with ``ema`` > 0 an
exponential moving average of the weights is validated and saved as ``best.pt``. Under ``torchrun``
(``WORLD_SIZE`` > 1) each process takes its share of every step's batches and
DistributedDataParallel averages the gradients (gloo on CPU, nccl on GPUs).

A dataset of many molecules (``phisnet generate --molecules``) gives mini-batches that mix
molecules, each composition's loss weighted by its share of the batch. A step takes all of
them through the network in one call (one graph over every structure); energy and force
training runs one forward and backward per composition, the gradients adding up. Structures
of held-out molecules are never trained on.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from phisnet.checkpoint import build_from_checkpoint, read_checkpoint, save_checkpoint
from phisnet.config import PhiSNetConfig, check_fine_radial
from phisnet.dataset import HamiltonianDataset
from phisnet.errors import InputError
from phisnet.files import write_text_atomic
from phisnet.metrics import MICRO
from phisnet.model import PhiSNet
from phisnet.upgrade import describe, with_options


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` and in the checkpoints."""

    data: str = "data/water.db"
    out: str = "runs/water"
    seed: int = 0
    train: float = 0.8  # fraction (<1) or count of structures for training
    val: float = 0.1  # fraction (<1) or count for validation; the rest is the test split
    batch_size: int = 8
    lr: float = 1e-3
    lr_min: float = 1e-5
    weight_decay: float = 1e-6
    lr_factor: float = 0.5
    patience: int = 10  # validations without improvement before the learning rate decays
    schedule: str = "plateau"  # plateau (decay by lr_factor after patience) or cosine (lr -> lr_min at max_steps)
    warmup_steps: int = 0  # cosine: the learning rate rises linearly from lr / warmup_steps to lr over these steps
    ema: float = 0.0  # decay of a moving average of the weights that is validated and saved as best.pt (0: off)
    val_every: int = 50  # steps
    max_steps: int = 100_000
    max_minutes: float = 60.0
    overlap_weight: float = 1.0
    matrix_weight: float = 1.0  # weight of the H and S entry loss
    orbital_weight: float = 0.0  # weight of the loss on H in the reference orbitals' basis (see module docstring)
    density_weight: float = 0.0  # weight of the gap-weighted occupied-virtual loss (see module docstring)
    orbital_all_rows: bool = False  # the orbital loss over every reference orbital's row, not 2 x occupied
    choose_subspace: bool = False  # at the end: choose the orbital subspace on validation, store it in best.pt
    energy_weight: float = 0.0  # weight of the end-to-end energy MSE (eV^2)
    force_weight: float = 0.0  # weight of the end-to-end force MSE ((eV/A)^2)
    energy_target: str = "auto"  # ccsd_t, reference, or auto (ccsd_t when the data has CCSD(T) labels)
    extra_train: list[str] = field(default_factory=list)  # more databases whose structures all join the training split
    init: str = ""  # checkpoint whose weights (and model configuration) training starts from
    # Parts added to the init model's architecture live in phisnet.upgrade (`phisnet upgrade`); these two stay
    # here because the new S is fitted to the training data before training.
    add_two_center_overlap: bool = False  # with init: S from two-centre features, fitted first (overlap_fit_steps)
    overlap_fit_steps: int = 3000  # steps of fit_overlap when S is made new (add_two_center_overlap)
    device: str = "auto"  # cpu, cuda, or auto (cuda when torch sees a GPU); under torchrun one GPU per process
    resume: bool = False
    model: PhiSNetConfig = field(default_factory=PhiSNetConfig)

    def to_json(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_json()
        return d

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        data = dict(data)
        model = PhiSNetConfig.from_json(data.pop("model", {}))
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(model=model, **known)


def _geometry_key(sample: dict) -> bytes:
    """Elements and positions (rounded to 1e-6 Angstrom) of a structure, to find repeats across databases."""
    positions = np.round(sample["positions"].numpy(), 6) + 0.0  # + 0.0 turns -0.0 into 0.0
    return sample["atomic_numbers"].numpy().tobytes() + positions.tobytes()


def add_training_data(dataset: HamiltonianDataset, splits: dict, paths: list[str]) -> list[dict]:
    """Append every structure of the databases ``paths`` to ``dataset`` and to its training split.

    The main dataset keeps its own train/val/test split (so its test structures stay unseen); the
    extra structures are training data only. Refused: another basis, level of theory or charge (the
    targets would differ), a structure that repeats one of the main dataset (e.g. the same molecule
    sampled with the same seed: it may be a test structure), and molecules the main dataset holds
    out; an extra set's own held-out molecules are skipped. Pass the same databases again with
    ``resume``. Returns what the checkpoint records about each extra database.
    """
    settings = dataset.metadata.get("settings") or {}
    main_keys = {_geometry_key(s): k for k, s in enumerate(dataset.samples)}
    held_out = {s["molecule"] for s in dataset.samples if s.get("held_out")}
    records = []
    for path in paths:
        extra = HamiltonianDataset(path)
        other = extra.metadata.get("settings") or {}
        for key, name in (("basis", "basis"), ("level_of_theory", "level of theory")):
            mine, theirs = dataset.metadata.get(key), extra.metadata.get(key)
            if mine != theirs:
                raise InputError(f"{path} is at {name} {theirs}, {dataset.path} at {mine}: they cannot train together.")
        if other.get("charge", 0) != settings.get("charge", 0):
            raise InputError(f"{path} has charge {other.get('charge', 0)}, {dataset.path} {settings.get('charge', 0)}.")
        added = 0
        for row, sample in enumerate(extra.samples):
            if sample.get("held_out"):
                continue
            if sample.get("molecule") in held_out:
                raise InputError(
                    f"{path} has structures of {sample['molecule']}, a molecule {dataset.path} holds out "
                    "(test_ood): training on it would spoil that test."
                )
            repeat = main_keys.get(_geometry_key(sample))
            if repeat is not None:
                raise InputError(
                    f"Structure {row} of {path} (sample {sample['sample_index']}) repeats structure {repeat} of "
                    f"{dataset.path}; was it generated with the same --seed? Use another seed for extra data."
                )
            splits["train"].append(len(dataset.samples))
            dataset.samples.append(sample)
            added += 1
        records.append({"path": str(path), "n_structures": added, "settings": other})
    return records


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


def _orbital_term(
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


def _energy_target(config: TrainConfig, dataset) -> str:
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
        from phisnet.observables import geometry_integrals, stack_integrals

        for i in indices:
            if i not in self.items:
                atoms = sample_atoms(self.dataset[i])
                self.items[i] = geometry_integrals(atoms, self.basis, self.charge, screening=self.screening)
        return stack_integrals([self.items[i] for i in indices])


def energy_terms(model, dataset, chunk, batch, integrals: IntegralCache, target: str, forces: bool, train: bool):
    """End-to-end energies and forces of a batch and their errors (eV, eV/A) against the target."""
    from phisnet.metrics import target_labels
    from phisnet.observables import end_to_end
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


def _stack(dataset, indices: list[int], dtype, device: torch.device | None = None) -> dict:
    samples = [dataset[i] for i in indices]
    return {
        "positions": torch.stack([s["positions"] for s in samples]).to(device=device, dtype=dtype),
        "atomic_numbers": samples[0]["atomic_numbers"].to(device),
        "hamiltonian": torch.stack([s["hamiltonian"] for s in samples]).to(device=device, dtype=dtype),
        "overlap": torch.stack([s["overlap"] for s in samples]).to(device=device, dtype=dtype),
    }


def fit_overlap(
    model: PhiSNet,
    dataset,
    train: list[int],
    val: list[int],
    steps: int,
    lr: float = 3e-2,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    log=print,
) -> tuple[float, float]:
    """Fit a two-centre overlap part (``PhiSNetConfig.two_center_overlap``) alone to the S of training structures.

    S then depends on nothing else (not the atom or pair features), so its radial part and head train by
    themselves, a step in milliseconds: Adam, ``lr`` along a cosine to 1e-3 of it, the S loss of ``loss_terms``
    (``scaled_loss``). Returns the validation S MAE (1e-6) before and after, also logged.
    """
    parameters = [*model.overlap_radial.parameters(), *model.heads["s_offdiagonal"].parameters()]
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(parameters, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1)))
    )

    def s_loss(batch: dict) -> torch.Tensor:
        return scaled_loss(model.overlap(batch["positions"], batch["atomic_numbers"]), batch["overlap"], model.s_scale)

    def val_mae() -> float:
        total = 0.0
        with torch.no_grad():
            for group in _groups(dataset, val):
                batch = _stack(dataset, group, dtype, device)
                predicted = model.overlap(batch["positions"], batch["atomic_numbers"])
                total += float((predicted - batch["overlap"]).abs().mean()) * len(group)
        return total / len(val) * MICRO

    before = val_mae()
    rng = np.random.default_rng(seed)
    batches: list[list[int]] = []
    bar = tqdm(range(steps), desc="fitting the two-centre overlap", unit="step", disable=not progress)
    for _ in bar:
        if not batches:
            batches = _batches(dataset, train, batch_size, rng)
        groups = _groups(dataset, batches.pop())
        optimizer.zero_grad()
        loss = sum(s_loss(_stack(dataset, g, dtype, device)) * len(g) for g in groups) / sum(len(g) for g in groups)
        loss.backward()
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{float(loss.detach()):.3g}")
    after = val_mae()
    log(f"Two-centre overlap fitted in {steps} steps: validation S MAE {before:.2f} -> {after:.2f} (1e-6).")
    return before, after


def _batches(dataset, indices: list[int], batch_size: int, rng: np.random.Generator | None) -> list[list[int]]:
    """Mini-batches of structures, shuffled when rng is given; a batch may mix molecules."""
    members = list(indices)
    if rng is not None:
        rng.shuffle(members)
    batches = [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def _batch_loss(
    ddp_model, model, dataset, groups, dtype, config: TrainConfig, integrals, target: str, orbitals=None
) -> torch.Tensor:
    """Training loss of a mini-batch given as groups of one composition, each weighted by its size.

    The matrix loss takes every group through the network in one call (one graph over all molecules);
    energies and forces go group by group.
    """
    device = next(model.parameters()).device
    batches = [_stack(dataset, group, dtype, device) for group in groups]
    weights = [len(group) / sum(len(g) for g in groups) for group in groups]
    loss = torch.zeros((), dtype=torch.float64)
    with_orbitals = config.orbital_weight > 0 or config.density_weight > 0
    if config.matrix_weight > 0 or with_orbitals:
        preds = ddp_model([b["positions"] for b in batches], [b["atomic_numbers"] for b in batches])
        for pred, batch, weight, group in zip(preds, batches, weights, groups, strict=True):
            if config.matrix_weight > 0:
                lh, ls = loss_terms(pred, batch, model)
                loss = loss + weight * config.matrix_weight * (lh + config.overlap_weight * ls)
            if with_orbitals:
                loss = loss + weight * _orbital_term(pred, batch, group, orbitals, model, config)
    if config.energy_weight > 0 or config.force_weight > 0:
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
    groups = _groups(dataset, chunk)
    calls = [groups] if one_call else [[group] for group in groups]
    loss = torch.zeros((), dtype=torch.float64)
    for c, call in enumerate(calls):
        share = sum(len(group) for group in call) / len(chunk)
        sync = c == len(calls) - 1 or ddp_model is model
        with contextlib.nullcontext() if sync else ddp_model.no_sync():
            part = _batch_loss(ddp_model, model, dataset, call, dtype, config, integrals, target, orbitals) * share
            part.backward()
        loss = loss + part.detach()
    return loss


def _groups(dataset, chunk: list[int]) -> list[list[int]]:
    """A mini-batch split into groups of one composition (the network takes one molecule per call)."""
    groups: dict[tuple, list[int]] = {}
    for i in chunk:
        groups.setdefault(tuple(dataset[i]["atomic_numbers"].tolist()), []).append(i)
    return list(groups.values())


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
    with_energy = integrals is not None and (config.energy_weight > 0 or config.force_weight > 0)
    model.eval()
    n, loss, h_abs, s_abs, e_abs, f_abs, eps_abs, rotation_sq = 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    with_orbitals = orbitals is not None and (config.orbital_weight > 0 or config.density_weight > 0)
    device = next(model.parameters()).device
    for mini_batch in _batches(dataset, indices, batch_size, None):
        groups = _groups(dataset, mini_batch)
        batches = [_stack(dataset, group, dtype, device) for group in groups]
        with torch.no_grad():  # every composition of the mini-batch in one call
            preds = model([b["positions"] for b in batches], [b["atomic_numbers"] for b in batches])
        for chunk, batch, pred in zip(groups, batches, preds, strict=True):
            k = len(chunk)
            lh, ls = loss_terms(pred, batch, model)
            batch_loss = config.matrix_weight * float(lh + config.overlap_weight * ls)
            h_abs += float((pred["hamiltonian"] - batch["hamiltonian"]).abs().mean()) * k
            s_abs += float((pred["overlap"] - batch["overlap"]).abs().mean()) * k
            if with_orbitals:
                batch_loss += float(_orbital_term(pred, batch, chunk, orbitals, model, config))
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


def _device(name: str) -> torch.device:
    """The training device: ``cuda`` (this process's GPU, LOCAL_RANK under torchrun), ``cpu``, or ``auto``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu, cuda or auto, got {name!r}.")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise InputError("device cuda was asked for, but torch sees no GPU; use --device cpu.")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group under torchrun: nccl between GPUs, gloo between CPU processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def _model_metadata(config: TrainConfig, dataset, sizes: dict, extra_data, with_energy: bool, target: str) -> dict:
    """The checkpoint metadata of a run (read back by ``phisnet.checkpoint.ModelInfo``): level of theory and
    elements, the data and its split sizes (``sizes``: counts of the dataset's split before any narrowing to
    labelled structures, which is what rebuilds the split), the training configuration, a set's molecules."""
    elements, basis, xc = config.model.elements, config.model.basis, config.model.xc
    metadata = {
        "elements": elements,
        "basis": basis,
        "xc": xc,
        "data": {
            "path": str(config.data),
            "n_structures": sum(sizes.values()),  # the file's own rows (``dataset`` holds the --extra-train ones too)
            "title": dataset.metadata.get("title"),
            "settings": dataset.metadata.get("settings"),
        },
        "splits": {
            "seed": config.seed,
            "train": sizes["train"],
            "val": sizes["val"],
            "test": sizes["test"],
            **({"test_ood": sizes["test_ood"]} if "test_ood" in sizes else {}),
        },
        "train_config": config.to_json(),
    }
    if extra_data:  # training-only structures beyond the main dataset's training split
        metadata["extra_train"] = extra_data
    names = {s["molecule"]: bool(s["held_out"]) for s in dataset.samples if "molecule" in s}
    if names:  # a molecule set: which molecules the model has seen, which it must generalise to
        metadata["molecules"] = {
            "seen": sorted(m for m, held in names.items() if not held),
            "held_out": sorted(m for m, held in names.items() if held),
        }
    if config.init:
        metadata["init"] = str(config.init)
    if with_energy:
        metadata["energy_target"] = target
    # Whether 1/2 Tr[P (h + F)] + E_nuc of the predicted F is this model's energy: it is the HF energy
    # for an HF model, and what energy training fitted; for a Kohn-Sham model it is not the KS energy.
    metadata["end_to_end_energy"] = with_energy or xc.lower() in ("hf", "rhf")
    return metadata


def _resumed_model(config: TrainConfig, last_path: Path, dtype: torch.dtype) -> tuple[PhiSNet, dict]:
    """The model and training state of OUT/last.pt, for --resume (same kind of schedule)."""
    payload = read_checkpoint(last_path)
    before = (payload["metadata"].get("train_config") or {}).get("schedule", config.schedule)
    if before != config.schedule:  # the saved scheduler state belongs to the other kind of schedule
        raise InputError(
            f"{last_path} was trained with the {before} schedule; resume it with --schedule {before}, "
            f"or start a new run with --init {last_path} --schedule {config.schedule}."
        )
    model = build_from_checkpoint(payload, dtype).train()
    return model, payload["training"]


def _initial_model(config: TrainConfig, dataset, splits, elements, basis, dtype, progress, log) -> PhiSNet:
    """The --init checkpoint as the starting model, with the S changes asked for (exact S, or a new two-centre S
    fitted to the training structures); sets ``config.model`` to its configuration."""
    payload = read_checkpoint(config.init)
    start_elements = payload["config"].get("elements", [])
    if not set(elements) <= set(start_elements) or payload["config"].get("basis") != basis:
        raise InputError(
            f"{config.init} was trained for elements {start_elements} in {payload['config'].get('basis')}; "
            f"{config.data} needs {elements} in {basis}."
        )
    model = build_from_checkpoint(payload, dtype).train()
    before = model.config
    if (config.model.integral_baseline and not before.integral_baseline) or (
        config.model.baseline_screening and list(config.model.baseline_screening) != list(before.baseline_screening)
    ):
        raise InputError(
            f"{config.init} predicts H without this one-electron baseline (its screening: "
            f"{before.baseline_screening or 'none'}); a baseline changes what the network learns, so train it "
            "from the start (--integral-baseline without --init)."
        )
    if config.model.exact_overlap and not before.integral_baseline:
        raise InputError(
            f"{config.init} has no one-electron baseline, whose integrals --exact-overlap takes S from; "
            "train a model with --integral-baseline --exact-overlap from the start."
        )
    if config.model.exact_overlap and config.add_two_center_overlap:
        raise InputError("--exact-overlap replaces the predicted S; leave out --add-two-center-overlap.")
    if config.add_two_center_overlap and before.exact_overlap:
        raise InputError(f"{config.init} takes S from its integrals (exact_overlap); there is no S to remake.")
    model = with_options(
        model, two_center_overlap=config.add_two_center_overlap, exact_overlap=config.model.exact_overlap
    )
    for message in describe(before, model.config):
        log(message)
    if model.config.two_center_overlap and not before.two_center_overlap:
        log("S now comes from two-centre features (H unchanged); fitting them to the training structures.")
        fit_overlap(
            model, dataset, splits["train"], splits["val"], config.overlap_fit_steps, progress=progress, log=log
        )
    config.model = model.config
    log(f"Starting from the weights of {config.init}.")
    return model


def _new_model(config: TrainConfig, dataset, splits, dtype, log) -> PhiSNet:
    """A fresh model; with the integral baseline, fitted to the training structures first (heads at zero)."""
    model = PhiSNet(config.model).to(dtype)
    report = model.fit_references([dataset[i] for i in splits["train"]])
    if report is not None:
        log(
            f"One-electron baseline fitted to the {len(splits['train'])} training structures ({report['kinds']} "
            f"kinds of shell-pair block): H MAE {report['mae_uHa']:.1f} uHa before the network."
        )
        model.zero_hamiltonian_heads()  # training starts from the baseline, not from noise on top of it
    return model


def run(config: TrainConfig, progress: bool = True, log=print) -> Path:
    """Train (or resume) a model; returns the path of the best checkpoint."""
    device = _device(config.device)
    if config.schedule not in ("plateau", "cosine"):
        raise InputError(f"schedule must be plateau or cosine, got {config.schedule!r}.")
    if config.warmup_steps < 0 or (config.warmup_steps > 0 and config.schedule != "cosine"):
        raise InputError(
            f"--warmup-steps is a number of steps, 0 (off) or more, and works with --schedule cosine; got "
            f"{config.warmup_steps} with the {config.schedule} schedule."
        )
    if not 0.0 <= config.ema < 1.0:
        raise InputError(f"ema is a decay per step in [0, 1), e.g. 0.999; got {config.ema}.")
    check_fine_radial(config.model.fine_radial, config.model.fine_radial_min, config.model.fine_radial_max)
    if not config.init:  # with --init the model's options are the checkpoint's, checked when it was made
        config.model.check()
    if device.type != "cpu" and (config.energy_weight > 0 or config.force_weight > 0):
        raise InputError("Energy and force training runs on the CPU (its integrals are PySCF's); use --device cpu.")
    rank, world = _distributed(device)
    out = Path(config.out)
    dtype = torch.float32
    dataset = HamiltonianDataset(config.data)
    n = len(dataset)
    try:  # the one split rule (HamiltonianDataset.split_indices); the checkpoint stores its counts
        splits = dataset.split_indices(config.seed, config.train, config.val)
    except InputError as exc:
        raise InputError(f"{config.data}: {exc} (--train, --val)") from None
    sizes = {name: len(members) for name, members in splits.items()}  # as stored: what rebuilds the split
    n_train, n_val = sizes["train"], sizes["val"]
    if n_train < 1 or n_val < 1:
        raise InputError(f"{config.data} has {n} structures: too few for {config.train} train / {config.val} val.")
    extra_data = add_training_data(dataset, splits, config.extra_train)
    basis = dataset.metadata.get("basis", config.model.basis)
    xc = dataset.metadata.get("level_of_theory", config.model.xc)
    elements = sorted({z for s in dataset.samples for z in s["atomic_numbers"].tolist()})
    config.model.elements, config.model.basis, config.model.xc = elements, basis, xc

    with_energy = config.energy_weight > 0 or config.force_weight > 0
    target = _energy_target(config, dataset) if with_energy else "reference"
    if with_energy and target == "ccsd_t":  # train and validate on the labelled structures only
        labelled = {i for i, s in enumerate(dataset.samples) if "ccsd_t_energy" in s}
        splits = {name: [i for i in members if i in labelled] for name, members in splits.items()}
        if not splits["train"] or not splits["val"]:
            raise InputError(
                f"{config.data} has CCSD(T) labels on {len(labelled)} structures, none in the "
                f"{'training' if not splits['train'] else 'validation'} split; label more with phisnet ccsdt."
            )
    if config.force_weight > 0 and target == "reference" and not dataset.has_forces(splits["train"] + splits["val"]):
        raise InputError(
            f"{config.data} has no reference forces (generated with --no-forces); train with --force-weight 0 "
            "or on data generated with forces."
        )
    if with_energy and world > 1 and config.force_weight > 0:
        raise InputError(
            "Force training needs second derivatives, which DistributedDataParallel does not do; run it in one process."
        )
    charge = int((dataset.metadata.get("settings") or {}).get("charge", 0))
    integrals = IntegralCache(dataset, basis, charge) if with_energy else None
    for name in ("orbital_weight", "density_weight"):
        if getattr(config, name) < 0:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} is a weight, 0 (off) or more; got {getattr(config, name)}.")
    orbitals = OrbitalCache(dataset, charge) if config.orbital_weight > 0 or config.density_weight > 0 else None
    # Which number picks the best checkpoint: H MAE for matrix training on the entries alone, the validation
    # loss (what training lowers) when it also weighs orbitals, energies or forces.
    best_key = "val_H_MAE_uHa" if not with_energy and orbitals is None else "val_loss"

    last_path, best_path = out / "last.pt", out / "best.pt"
    resumed = config.resume and last_path.is_file()
    torch.manual_seed(config.seed)
    if resumed:
        model, state = _resumed_model(config, last_path, dtype)
    elif config.init:
        model, state = _initial_model(config, dataset, splits, elements, basis, dtype, progress, log), None
    else:
        model, state = _new_model(config, dataset, splits, dtype, log), None
    if integrals is not None:
        integrals.screening = model.config.baseline_screening
    model = model.to(device)
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.schedule == "cosine":  # stepped every training step
        # Closed form in the step (not torch's recursive CosineAnnealingLR), so that a resume with a larger
        # --max-steps continues on the curve of the new length.
        # The warm-up matters most for --init: Adam's first updates move every weight by about lr whatever
        # its gradient, which knocks a converged model far off before the moment estimates settle.
        def cosine(s: int) -> float:
            progress = min(s, config.max_steps) / max(config.max_steps, 1)
            warmup = min(1.0, (s + 1) / config.warmup_steps) if config.warmup_steps > 0 else 1.0
            curve = config.lr_min + (config.lr - config.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))
            return warmup * curve / config.lr

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    else:  # stepped with the validation loss
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.lr_factor, patience=config.patience, min_lr=config.lr_min
        )
    # The moving average of the weights is what gets validated and saved as best.pt: it smooths the step-to-step
    # noise that the learning rate leaves in the weights. Not torch's AveragedModel: it deep-copies the module, and
    # a deep copy of e3nn's compiled tensor products carries extra buffers that break its pairing of tensors and
    # this project's checkpoint format; a second network of the same configuration has exactly the same keys, and
    # torch's own EMA update does the averaging.
    ema = None
    if config.ema > 0:
        ema = build_from_checkpoint({"config": model.config.to_json(), "state_dict": model.state_dict()}, dtype)
        ema = ema.to(device).train()
        ema_update = torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema)
    evaluated = ema if ema is not None else model
    step, epoch, done_in_epoch, best, elapsed = 0, 0, 0, math.inf, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, best, elapsed = state["step"], state["epoch"], state["best"], state["elapsed"]
        done_in_epoch = state["batches_done_in_epoch"]
        torch.set_rng_state(state["torch_rng"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        log(f"Resuming {out} at step {step} (best {best_key} {best:.4g}).")

    metadata = _model_metadata(config, dataset, sizes, extra_data, with_energy, target)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_json(), indent=2))
        _truncate_log(out / "metrics.jsonl", step)

    def checkpoint(path: Path, weights: PhiSNet, extra: dict | None = None, validation: dict | None = None) -> None:
        """``validation``: the metrics of these weights (best.pt), kept beside the number that picked them."""
        training = {"step": step, f"best_{best_key}": best, "seconds": elapsed}
        if validation is not None:
            training["validation"] = validation
        save_checkpoint(path, weights, {**metadata, "training": training}, extra)

    # A mini-batch of several compositions goes through the network in one call: on this project's 2-core CPU a
    # step of the general model took 1/1.11 of the time of one call per composition (benchmarks/training_step.py;
    # the work is mostly arithmetic here, so the gain is small; on a GPU per-call overhead weighs more). Energy
    # and force training goes one composition at a time (DistributedDataParallel pairs a forward with a backward).
    one_call = not with_energy
    if config.max_steps == 0 and not resumed:  # no steps: the starting model as it is (e.g. after fit_overlap)
        metrics = validate(
            evaluated, dataset, splits["val"], config.batch_size * 2, dtype, config, integrals, target, orbitals
        )
        best = metrics[best_key]
        if rank == 0:
            _append_json_line(out / "metrics.jsonl", {"step": 0, "epoch": 0, "seconds": 0.0, **metrics})
            checkpoint(best_path, evaluated, validation=metrics)  # no last.pt: nothing to resume
            log(
                f"No training steps (--max-steps 0): validation H MAE {metrics['val_H_MAE_uHa']:.1f} uHa, "
                f"S MAE {metrics['val_S_MAE_1e-6']:.2f}e-6; saved {best_path}."
            )
            if config.choose_subspace:
                _choose_subspace(best_path, dataset, splits["val"], progress, log)
        if world > 1:  # the other processes wait until rank 0 has written best.pt, as after training
            torch.distributed.barrier()
        return best_path
    start = time.perf_counter() - elapsed
    bar = tqdm(total=config.max_steps, initial=step, unit="step", disable=not progress or rank != 0)
    stop = False
    while not stop:
        rng = np.random.default_rng([config.seed, epoch])
        batches = _batches(dataset, splits["train"], config.batch_size, rng)
        if world > 1:  # equal shares, so every process takes part in every gradient all-reduce
            batches = batches[: len(batches) // world * world][rank::world]
        for position, chunk in enumerate(batches):
            if position < done_in_epoch:  # already trained on before the resume
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = batch_backward(
                ddp_model, model, dataset, chunk, dtype, config, integrals, target, one_call, orbitals
            )
            optimizer.step()
            if ema is not None:
                ema_update(list(ema.parameters()), list(model.parameters()), step)
            if config.schedule == "cosine":
                scheduler.step()
            step += 1
            elapsed = time.perf_counter() - start
            bar.update(1)
            bar.set_postfix(
                loss=f"{float(loss.detach()):.3g}",
                lr=f"{optimizer.param_groups[0]['lr']:.1e}",
                minutes=f"{elapsed / 60:.1f}/{config.max_minutes:g}",
            )
            out_of_time = elapsed > config.max_minutes * 60 or step >= config.max_steps
            if world > 1:  # clocks differ: stop together when any process is out of time
                flag = torch.tensor([float(out_of_time)])
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            if step % config.val_every == 0 or out_of_time:
                metrics = validate(
                    evaluated, dataset, splits["val"], config.batch_size * 2, dtype, config, integrals, target, orbitals
                )
                if config.schedule == "plateau":
                    scheduler.step(metrics["val_loss"])
                improved = metrics[best_key] < best
                best = min(best, metrics[best_key])
                if rank == 0:
                    record = {
                        "step": step,
                        "epoch": epoch,
                        "seconds": round(elapsed, 2),
                        "train_loss": float(loss.detach()),
                        "lr": optimizer.param_groups[0]["lr"],
                        **metrics,
                    }
                    _append_json_line(out / "metrics.jsonl", record)
                    if improved:
                        checkpoint(best_path, evaluated, validation=metrics)
                    checkpoint(
                        last_path,
                        model,
                        {
                            "training": {
                                "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(),
                                "step": step,
                                "epoch": epoch,
                                "batches_done_in_epoch": position + 1,
                                "best": best,
                                "elapsed": elapsed,
                                "torch_rng": torch.get_rng_state(),
                                **({"ema": ema.state_dict()} if ema is not None else {}),
                            }
                        },
                    )
                    energy_note = (
                        f"E MAE {metrics['val_E_MAE_meV']:.1f} meV, F MAE {metrics['val_F_MAE_meV/A']:.1f} meV/A, "
                        if with_energy
                        else ""
                    )
                    eps_note = ""
                    if orbitals is not None:
                        eps_note = (
                            f"first-order eps MAE {metrics['val_eps_MAE_uHa']:.1f} uHa, "
                            f"rotation RMS {metrics['val_rotation_RMS_1e-6']:.1f}e-6, "
                        )
                    bar.write(
                        f"step {step}: val H MAE {metrics['val_H_MAE_uHa']:.1f} uHa, "
                        f"S MAE {metrics['val_S_MAE_1e-6']:.2f}e-6, {eps_note}{energy_note}"
                        f"lr {optimizer.param_groups[0]['lr']:.1e}"
                    )
            if out_of_time:
                stop = True
                break
        epoch += 1
        done_in_epoch = 0
    bar.close()
    if config.choose_subspace and rank == 0:
        _choose_subspace(best_path, dataset, splits["val"], progress, log)
    if world > 1:
        torch.distributed.barrier()
    return best_path


def _choose_subspace(best_path: Path, dataset, indices, progress: bool, log) -> None:
    """Choose the best model's orbital subspace on the validation structures and store it in its checkpoint."""
    from phisnet.metrics import choose_subspace, store_subspace
    from phisnet.predictor import load

    choice = choose_subspace(load(best_path), dataset, indices, progress=progress)
    choice.split = "val"
    store_subspace(best_path, choice)
    log(choice.format_table())
    log(f"orbital subspace {choice.threshold:g} stored in {best_path}")


def _append_json_line(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError):
            continue
    write_text_atomic(path, "".join(k + "\n" for k in keep))


def read_metrics(path: str | Path) -> list[dict]:
    """The metrics log of a run (``metrics.jsonl``) as a list of dicts."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
