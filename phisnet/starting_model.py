"""The model a run starts from: a resumed run's ``last.pt``, an ``--init`` checkpoint (with the S changes asked for),
or a fresh network with its one-electron baseline fitted; and ``fit_overlap``, which fits a new two-centre S alone."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from phisnet.checkpoint import ModelInfo, build_from_checkpoint, read_checkpoint
from phisnet.errors import InputError
from phisnet.losses import scaled_loss
from phisnet.metrics import MICRO
from phisnet.model import PhiSNet
from phisnet.train_config import TrainConfig
from phisnet.training_data import composition_groups, mini_batches, stack_batch
from phisnet.upgrade import describe, with_options


def resumed_model(config: TrainConfig, last_path: Path, dtype: torch.dtype) -> tuple[PhiSNet, dict]:
    """The model and training state of OUT/last.pt, for --resume (same kind of schedule)."""
    payload = read_checkpoint(last_path)
    before = ModelInfo.from_metadata(payload["metadata"]).train_config.get("schedule", config.schedule)
    if before != config.schedule:  # the saved scheduler state belongs to the other kind of schedule
        raise InputError(
            f"{last_path} was trained with the {before} schedule; resume it with --schedule {before}, "
            f"or start a new run with --init {last_path} --schedule {config.schedule}."
        )
    model = build_from_checkpoint(payload, dtype).train()
    return model, payload["training"]


def initial_model(config: TrainConfig, dataset, splits, dtype, progress, log) -> PhiSNet:
    """The --init checkpoint as the starting model, with the S changes asked for (exact S, or a new two-centre S
    fitted to the training structures); sets ``config.model`` to its configuration."""
    elements, basis = config.model.elements, config.model.basis
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
    if model.baseline is not None:
        _fill_baseline(model, dataset, splits["train"], config.init, log)
    config.model = model.config
    log(f"Starting from the weights of {config.init}.")
    return model


def _fill_baseline(model: PhiSNet, dataset, train: list[int], init: str, log) -> None:
    """Fit the baseline's kinds of block that the starting model never saw (a new molecule's pairs of shells:
    ethanol's model meets malondialdehyde's O-O pairs) to the training structures; the rest stay as trained."""
    report = model.baseline.fit([dataset[i] for i in train], model.element_indices, only_new=True)
    if report["kinds"]:
        log(
            f"The baseline of {init} had no coefficients for {report['kinds']} kinds of shell-pair block of these "
            "data; fitted them to the training structures (every other kind unchanged)."
        )


def new_model(config: TrainConfig, dataset, splits, dtype, log) -> PhiSNet:
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
            for group in composition_groups(dataset, val):
                batch = stack_batch(dataset, group, dtype, device)
                predicted = model.overlap(batch["positions"], batch["atomic_numbers"])
                total += float((predicted - batch["overlap"]).abs().mean()) * len(group)
        return total / len(val) * MICRO

    before = val_mae()
    rng = np.random.default_rng(seed)
    batches: list[list[int]] = []
    bar = tqdm(range(steps), desc="fitting the two-centre overlap", unit="step", disable=not progress)
    for _ in bar:
        if not batches:
            batches = mini_batches(dataset, train, batch_size, rng)
        groups = composition_groups(dataset, batches.pop())
        optimizer.zero_grad()
        loss = sum(s_loss(stack_batch(dataset, g, dtype, device)) * len(g) for g in groups) / sum(
            len(g) for g in groups
        )
        loss.backward()
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{float(loss.detach()):.3g}")
    after = val_mae()
    log(f"Two-centre overlap fitted in {steps} steps: validation S MAE {before:.2f} -> {after:.2f} (1e-6).")
    return before, after
