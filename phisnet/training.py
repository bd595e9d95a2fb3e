"""Training PhiSNet: the loop, its checkpoints (``best.pt``, ``last.pt``) and resume.

``run(TrainConfig(...))`` trains on an ASE database from ``phisnet generate`` and writes
into ``out``: ``best.pt`` (lowest validation H MAE), ``last.pt`` (with optimiser state,
for ``resume``), ``metrics.jsonl`` (one JSON object per validation, ``phisnet.run_log``) and
``config.json``. The losses are ``phisnet.losses``' (its docstring says what each weighs); a step
and a validation pass are ``phisnet.train_step``'s; the starting model (fresh, ``init``, resumed)
is ``phisnet.starting_model``'s. ``init`` starts from the weights of another checkpoint
(transfer learning, e.g. HF -> CCSD(T)). The learning rate decays on a validation plateau or
along a cosine to ``lr_min`` at ``max_steps``; with ``ema`` > 0 an exponential moving average
of the weights is validated and saved as ``best.pt``. Under ``torchrun`` (``WORLD_SIZE`` > 1)
each process takes its share of every step's batches and DistributedDataParallel averages the
gradients (gloo on CPU, nccl on GPUs).

A dataset of many molecules (``phisnet generate --molecules``) gives mini-batches that mix
molecules, each composition's loss weighted by its share of the batch. A step takes all of
them through the network in one call (one graph over every structure); energy and force
training runs one forward and backward per composition, the gradients adding up. Structures
of held-out molecules are never trained on.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from phisnet.checkpoint import ModelInfo, build_from_checkpoint, save_checkpoint
from phisnet.dataset import HamiltonianDataset
from phisnet.distributed import join_process_group, training_device
from phisnet.errors import InputError
from phisnet.losses import IntegralCache, OrbitalCache, energy_target
from phisnet.model import PhiSNet
from phisnet.run_log import append_record, truncate_log
from phisnet.starting_model import initial_model, new_model, resumed_model
from phisnet.train_config import TrainConfig
from phisnet.train_step import batch_backward, validate
from phisnet.training_data import add_training_data, mini_batches


@dataclass
class _Data:
    """A run's dataset (with any --extra-train structures), its splits and what its losses need."""

    dataset: HamiltonianDataset
    splits: dict  # name -> dataset positions; narrowed to the labelled ones for CCSD(T) training
    sizes: dict  # the split's counts before any narrowing: what the checkpoint stores to rebuild it
    extra_data: list[dict]
    target: str  # what end-to-end energies are compared with: "reference" or "ccsd_t"
    integrals: IntegralCache | None
    orbitals: OrbitalCache | None


def _load_data(config: TrainConfig) -> _Data:
    """The dataset and its split; sets the model's elements, basis and level of theory from the data."""
    dataset = HamiltonianDataset(config.data)
    subset = dataset.metadata.get("subset")
    if subset:
        raise InputError(
            f"{config.data} holds only the rebuilt {subset['split']} split of {subset['of_model']}'s data, not a "
            "dataset to split; train on a whole dataset (phisnet generate)."
        )
    try:  # the one split rule (HamiltonianDataset.split_indices); the checkpoint stores its counts
        splits = dataset.split_indices(config.seed, config.train, config.val)
    except InputError as exc:
        raise InputError(f"{config.data}: {exc} (--train, --val)") from None
    sizes = {name: len(members) for name, members in splits.items()}
    if sizes["train"] < 1 or sizes["val"] < 1:
        raise InputError(
            f"{config.data} has {len(dataset)} structures: too few for {config.train} train / {config.val} val."
        )
    extra_data = add_training_data(dataset, splits, config.extra_train)
    config.model.elements = sorted({z for s in dataset.samples for z in s["atomic_numbers"].tolist()})
    config.model.basis = dataset.metadata.get("basis", config.model.basis)
    config.model.xc = dataset.metadata.get("level_of_theory", config.model.xc)
    target = energy_target(config, dataset) if config.with_energy else "reference"
    if config.with_energy and target == "ccsd_t":  # train and validate on the labelled structures only
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
    charge = int((dataset.metadata.get("settings") or {}).get("charge", 0))
    integrals = IntegralCache(dataset, config.model.basis, charge) if config.with_energy else None
    orbitals = OrbitalCache(dataset, charge) if config.with_orbitals else None
    return _Data(dataset, splits, sizes, extra_data, target, integrals, orbitals)


def _model_metadata(config: TrainConfig, data: _Data) -> dict:
    """The checkpoint metadata of a run, written through ``ModelInfo`` (its one reader and writer): level of theory
    and elements, the data and its split sizes (before any narrowing to labelled structures: what rebuilds the
    split), the training configuration, a set's molecules."""
    sizes, dataset = data.sizes, data.dataset
    names = {s["molecule"]: bool(s["held_out"]) for s in dataset.samples if "molecule" in s}
    molecules = None
    if names:  # a molecule set: which molecules the model has seen, which it must generalise to
        molecules = {
            "seen": sorted(m for m, held in names.items() if not held),
            "held_out": sorted(m for m, held in names.items() if held),
        }
    info = ModelInfo(
        basis=config.model.basis,
        xc=config.model.xc,
        data_path=str(config.data),
        data_title=dataset.metadata.get("title"),
        n_structures=sum(sizes.values()),  # the file's own rows (``dataset`` holds the --extra-train ones too)
        data_settings=dataset.metadata.get("settings") or {},
        splits={"seed": config.seed, **sizes},
        molecules=molecules,
        energy_target=data.target if config.with_energy else None,
        # Whether 1/2 Tr[P (h + F)] + E_nuc of the predicted F is this model's energy: it is the HF energy
        # for an HF model, and what energy training fitted; for a Kohn-Sham model it is not the KS energy.
        end_to_end_energy=config.with_energy or config.model.xc.lower() in ("hf", "rhf"),
        train_config=config.to_json(),
        elements=list(config.model.elements),
        extra_train=data.extra_data,  # training-only structures beyond the main dataset's training split
        init=str(config.init) if config.init else None,
    )
    return info.to_metadata()


def run(config: TrainConfig, progress: bool = True, log=print) -> Path:
    """Train (or resume) a model; returns the path of the best checkpoint."""
    device = training_device(config.device)
    config.check()
    if device.type != "cpu" and config.with_energy:
        raise InputError("Energy and force training runs on the CPU (its integrals are PySCF's); use --device cpu.")
    rank, world = join_process_group(device)
    data = _load_data(config)
    if config.with_energy and world > 1 and config.force_weight > 0:
        raise InputError(
            "Force training needs second derivatives, which DistributedDataParallel does not do; run it in one process."
        )
    out = Path(config.out)
    resumed = config.resume and (out / "last.pt").is_file()
    dtype = torch.float32
    torch.manual_seed(config.seed)
    if resumed:
        model, state = resumed_model(config, out / "last.pt", dtype)
    elif config.init:
        model, state = initial_model(config, data.dataset, data.splits, dtype, progress, log), None
    else:
        model, state = new_model(config, data.dataset, data.splits, dtype, log), None
    if data.integrals is not None:
        data.integrals.screening = model.config.baseline_screening
    trainer = _Trainer(config, data, model.to(device), rank, world, progress, log)
    if state is not None:
        trainer.restore(state)
    trainer.start(_model_metadata(config, data))
    if config.max_steps == 0 and not resumed:  # no steps: the starting model as it is (e.g. after fit_overlap)
        trainer.save_untrained()
    else:
        trainer.train()
    if config.choose_subspace and rank == 0:
        _choose_subspace(trainer.best_path, data.dataset, data.splits["val"], progress, log)
    if world > 1:  # the other processes wait until rank 0 has written best.pt
        torch.distributed.barrier()
    return trainer.best_path


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    """The learning-rate schedule: a cosine (with warm-up) stepped every step, or a plateau decay stepped with the
    validation loss."""
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.lr_factor, patience=config.patience, min_lr=config.lr_min
        )

    # Closed form in the step (not torch's recursive CosineAnnealingLR), so that a resume with a larger
    # --max-steps continues on the curve of the new length.
    # The warm-up matters most for --init: Adam's first updates move every weight by about lr whatever
    # its gradient, which knocks a converged model far off before the moment estimates settle.
    def cosine(s: int) -> float:
        progress = min(s, config.max_steps) / max(config.max_steps, 1)
        warmup = min(1.0, (s + 1) / config.warmup_steps) if config.warmup_steps > 0 else 1.0
        curve = config.lr_min + (config.lr - config.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))
        return warmup * curve / config.lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)


def _moving_average(config: TrainConfig, model: PhiSNet):
    """The exponential moving average of the weights (a second network) and its update, or (None, None).

    It is what gets validated and saved as best.pt: it smooths the step-to-step noise that the learning rate
    leaves in the weights. Not torch's AveragedModel: it deep-copies the module, and a deep copy of e3nn's
    compiled tensor products carries extra buffers that break its pairing of tensors and this project's
    checkpoint format; a second network of the same configuration has exactly the same keys, and torch's own
    EMA update does the averaging.
    """
    if config.ema <= 0:
        return None, None
    dtype, device = next(model.parameters()).dtype, next(model.parameters()).device
    ema = build_from_checkpoint({"config": model.config.to_json(), "state_dict": model.state_dict()}, dtype)
    return ema.to(device).train(), torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema)


class _Trainer:
    """The loop of one run: steps, validations, ``best.pt`` and ``last.pt``, the metrics log, resume state."""

    def __init__(self, config: TrainConfig, data: _Data, model: PhiSNet, rank: int, world: int, progress, log):
        self.config, self.data, self.model = config, data, model
        self.rank, self.world, self.progress, self.log = rank, world, progress, log
        self.device, self.dtype = next(model.parameters()).device, next(model.parameters()).dtype
        self.out = Path(config.out)
        self.best_path, self.last_path = self.out / "best.pt", self.out / "last.pt"
        self.ddp_model = model
        if world > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = _scheduler(config, self.optimizer)
        self.ema, self.ema_update = _moving_average(config, model)
        self.evaluated = self.ema if self.ema is not None else model
        # Which number picks the best checkpoint: H MAE for matrix training on the entries alone, the validation
        # loss (what training lowers) when it also weighs orbitals, energies or forces.
        self.best_key = "val_loss" if config.with_energy or data.orbitals is not None else "val_H_MAE_uHa"
        self.step, self.epoch, self.done_in_epoch, self.best, self.elapsed = 0, 0, 0, math.inf, 0.0
        self.metadata: dict = {}

    def restore(self, state: dict) -> None:
        """Continue from the training state of a ``last.pt``."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.best, self.elapsed = state["step"], state["epoch"], state["best"], state["elapsed"]
        self.done_in_epoch = state["batches_done_in_epoch"]
        torch.set_rng_state(state["torch_rng"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.log(f"Resuming {self.out} at step {self.step} (best {self.best_key} {self.best:.4g}).")

    def start(self, metadata: dict) -> None:
        """Write ``config.json`` and cut the metrics log back to the resumed step."""
        self.metadata = metadata
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.config.to_json(), indent=2))
            truncate_log(self.out / "metrics.jsonl", self.step)

    def checkpoint(self, path: Path, weights: PhiSNet, extra: dict | None = None, validation: dict | None = None):
        """``validation``: the metrics of these weights (best.pt), kept beside the number that picked them."""
        training = {"step": self.step, f"best_{self.best_key}": self.best, "seconds": self.elapsed}
        if validation is not None:
            training["validation"] = validation
        save_checkpoint(path, weights, {**self.metadata, "training": training}, extra)

    def validate(self) -> dict:
        config, data = self.config, self.data
        return validate(
            self.evaluated,
            data.dataset,
            data.splits["val"],
            config.batch_size * 2,
            self.dtype,
            config,
            data.integrals,
            data.target,
            data.orbitals,
        )

    def save_untrained(self) -> None:
        """--max-steps 0: validate the starting model and save it as best.pt (no last.pt: nothing to resume)."""
        metrics = self.validate()
        self.best = metrics[self.best_key]
        if self.rank == 0:
            append_record(self.out / "metrics.jsonl", {"step": 0, "epoch": 0, "seconds": 0.0, **metrics})
            self.checkpoint(self.best_path, self.evaluated, validation=metrics)
            self.log(
                f"No training steps (--max-steps 0): validation H MAE {metrics['val_H_MAE_uHa']:.1f} uHa, "
                f"S MAE {metrics['val_S_MAE_1e-6']:.2f}e-6; saved {self.best_path}."
            )

    def train(self) -> None:
        """Steps until --max-steps or --max-minutes, validating every --val-every steps and at the end."""
        config = self.config
        start = time.perf_counter() - self.elapsed
        bar = tqdm(total=config.max_steps, initial=self.step, unit="step", disable=not self.progress or self.rank != 0)
        while True:
            for position, chunk in enumerate(self._epoch_batches()):
                if position < self.done_in_epoch:  # already trained on before the resume
                    continue
                loss = self._step(chunk)
                self.elapsed = time.perf_counter() - start
                bar.update(1)
                bar.set_postfix(
                    loss=f"{float(loss.detach()):.3g}",
                    lr=f"{self.optimizer.param_groups[0]['lr']:.1e}",
                    minutes=f"{self.elapsed / 60:.1f}/{config.max_minutes:g}",
                )
                out_of_time = self._out_of_time()
                if self.step % config.val_every == 0 or out_of_time:
                    self._validate_and_save(loss, position, bar)
                if out_of_time:
                    bar.close()
                    return
            self.epoch += 1
            self.done_in_epoch = 0

    def _epoch_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.config.seed, self.epoch])
        batches = mini_batches(self.data.dataset, self.data.splits["train"], self.config.batch_size, rng)
        if self.world > 1:  # equal shares, so every process takes part in every gradient all-reduce
            batches = batches[: len(batches) // self.world * self.world][self.rank :: self.world]
        return batches

    def _step(self, chunk: list[int]) -> torch.Tensor:
        # A mini-batch of several compositions goes through the network in one call: on this project's 2-core CPU a
        # step of the general model took 1/1.11 of the time of one call per composition (benchmarks/training_step.py;
        # the work is mostly arithmetic here, so the gain is small; on a GPU per-call overhead weighs more). Energy
        # and force training goes one composition at a time (DistributedDataParallel pairs a forward with a backward).
        config, data = self.config, self.data
        self.optimizer.zero_grad(set_to_none=True)
        loss = batch_backward(
            self.ddp_model,
            self.model,
            data.dataset,
            chunk,
            self.dtype,
            config,
            data.integrals,
            data.target,
            not config.with_energy,
            data.orbitals,
        )
        self.optimizer.step()
        if self.ema is not None:
            self.ema_update(list(self.ema.parameters()), list(self.model.parameters()), self.step)
        if config.schedule == "cosine":
            self.scheduler.step()
        self.step += 1
        return loss

    def _out_of_time(self) -> bool:
        out_of_time = self.elapsed > self.config.max_minutes * 60 or self.step >= self.config.max_steps
        if self.world > 1:  # clocks differ: stop together when any process is out of time
            flag = torch.tensor([float(out_of_time)])
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        return out_of_time

    def _validate_and_save(self, loss: torch.Tensor, position: int, bar) -> None:
        metrics = self.validate()
        if self.config.schedule == "plateau":
            self.scheduler.step(metrics["val_loss"])
        improved = metrics[self.best_key] < self.best
        self.best = min(self.best, metrics[self.best_key])
        if self.rank != 0:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        record = {
            "step": self.step,
            "epoch": self.epoch,
            "seconds": round(self.elapsed, 2),
            "train_loss": float(loss.detach()),
            "lr": lr,
            **metrics,
        }
        append_record(self.out / "metrics.jsonl", record)
        if improved:
            self.checkpoint(self.best_path, self.evaluated, validation=metrics)
        self.checkpoint(self.last_path, self.model, {"training": self._state(position)})
        bar.write(_summary(self.step, metrics, lr))

    def _state(self, position: int) -> dict:
        """What --resume needs to continue exactly: optimiser, schedule, counters, random state, moving average."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batches_done_in_epoch": position + 1,
            "best": self.best,
            "elapsed": self.elapsed,
            "torch_rng": torch.get_rng_state(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }


def _summary(step: int, metrics: dict, lr: float) -> str:
    """One line per validation under the progress bar."""
    eps_note = energy_note = ""
    if "val_eps_MAE_uHa" in metrics:
        eps_note = (
            f"first-order eps MAE {metrics['val_eps_MAE_uHa']:.1f} uHa, "
            f"rotation RMS {metrics['val_rotation_RMS_1e-6']:.1f}e-6, "
        )
    if "val_E_MAE_meV" in metrics:
        energy_note = f"E MAE {metrics['val_E_MAE_meV']:.1f} meV, F MAE {metrics['val_F_MAE_meV/A']:.1f} meV/A, "
    return (
        f"step {step}: val H MAE {metrics['val_H_MAE_uHa']:.1f} uHa, S MAE {metrics['val_S_MAE_1e-6']:.2f}e-6, "
        f"{eps_note}{energy_note}lr {lr:.1e}"
    )


def _choose_subspace(best_path: Path, dataset, indices, progress: bool, log) -> None:
    """Choose the best model's orbital subspace on the validation structures and store it in its checkpoint."""
    from phisnet.predictor import load
    from phisnet.subspace import choose_subspace, store_subspace

    choice = choose_subspace(load(best_path), dataset, indices, progress=progress)
    choice.split = "val"
    store_subspace(best_path, choice)
    log(choice.format_table())
    log(f"orbital subspace {choice.threshold:g} stored in {best_path}")
