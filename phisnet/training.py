"""Training PhiSNet: loss, validation, checkpoints, resume, metrics log, DDP.

``run(TrainConfig(...))`` trains on an ASE database from ``phisnet generate`` and writes
into ``out``: ``best.pt`` (lowest validation H MAE), ``last.pt`` (with optimiser state,
for ``resume``), ``metrics.jsonl`` (one JSON object per validation) and ``config.json``.

Loss: MSE + MAE of the entries of H and S, each divided by the model's output scale
(the spread of the targets around the per-element references) so both matrices weigh
alike. Under ``torchrun`` (``WORLD_SIZE`` > 1) each process takes its share of every
step's batches and DistributedDataParallel averages the gradients (gloo on CPU).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from phisnet.data import HamiltonianDataset
from phisnet.errors import InputError
from phisnet.files import write_text_atomic
from phisnet.metrics import MICRO
from phisnet.model import PhiSNet, PhiSNetConfig, build_from_checkpoint, read_checkpoint, save_checkpoint


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
    val_every: int = 50  # steps
    max_steps: int = 100_000
    max_minutes: float = 60.0
    overlap_weight: float = 1.0
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


def _count(value: float, n: int) -> int:
    return int(round(value * n)) if value < 1 else int(value)


def loss_terms(pred: dict, batch: dict, model: PhiSNet) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled MSE + MAE of H and of S for a batch."""
    terms = []
    for key, scale in (("hamiltonian", model.h_scale), ("overlap", model.s_scale)):
        d = (pred[key] - batch[key]) / scale
        terms.append((d**2).mean() + d.abs().mean())
    return terms[0], terms[1]


def _stack(dataset, indices: list[int], dtype) -> dict:
    samples = [dataset[i] for i in indices]
    return {
        "positions": torch.stack([s["positions"] for s in samples]).to(dtype),
        "atomic_numbers": samples[0]["atomic_numbers"],
        "hamiltonian": torch.stack([s["hamiltonian"] for s in samples]).to(dtype),
        "overlap": torch.stack([s["overlap"] for s in samples]).to(dtype),
    }


def _batches(dataset, indices: list[int], batch_size: int, rng: np.random.Generator | None) -> list[list[int]]:
    """Mini-batches of structures with the same composition (shuffled when rng is given)."""
    groups: dict[tuple, list[int]] = {}
    for i in indices:
        groups.setdefault(tuple(dataset[i]["atomic_numbers"].tolist()), []).append(i)
    batches = []
    for members in groups.values():
        members = list(members)
        if rng is not None:
            rng.shuffle(members)
        batches.extend(members[k : k + batch_size] for k in range(0, len(members), batch_size))
    if rng is not None:
        rng.shuffle(batches)
    return batches


@torch.no_grad()
def validate(model: PhiSNet, dataset, indices: list[int], batch_size: int, dtype) -> dict:
    """Validation loss and MAE of H (uHa) and S (1e-6)."""
    model.eval()
    n, loss, h_abs, s_abs = 0, 0.0, 0.0, 0.0
    for chunk in _batches(dataset, indices, batch_size, None):
        batch = _stack(dataset, chunk, dtype)
        pred = model(batch["positions"], batch["atomic_numbers"])
        lh, ls = loss_terms(pred, batch, model)
        k = len(chunk)
        loss += float(lh + ls) * k
        h_abs += float((pred["hamiltonian"] - batch["hamiltonian"]).abs().mean()) * k
        s_abs += float((pred["overlap"] - batch["overlap"]).abs().mean()) * k
        n += k
    model.train()
    return {"val_loss": loss / n, "val_H_MAE_uHa": h_abs / n * MICRO, "val_S_MAE_1e-6": s_abs / n * MICRO}


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def run(config: TrainConfig, progress: bool = True, log=print) -> Path:
    """Train (or resume) a model; returns the path of the best checkpoint."""
    rank, world = _distributed()
    out = Path(config.out)
    dtype = torch.float32
    dataset = HamiltonianDataset(config.data)
    n = len(dataset)
    n_train, n_val = _count(config.train, n), _count(config.val, n)
    if n_train < 1 or n_val < 1:
        raise InputError(f"{config.data} has {n} structures: too few for {config.train} train / {config.val} val.")
    splits = dataset.split_indices(config.seed, n_train, n_val)
    basis = dataset.metadata.get("basis", config.model.basis)
    xc = dataset.metadata.get("level_of_theory", config.model.xc)
    elements = sorted({z for s in dataset.samples for z in s["atomic_numbers"].tolist()})
    config.model.elements, config.model.basis, config.model.xc = elements, basis, xc

    last_path, best_path = out / "last.pt", out / "best.pt"
    resumed = config.resume and last_path.is_file()
    torch.manual_seed(config.seed)
    if resumed:
        payload = read_checkpoint(last_path)
        model = build_from_checkpoint(payload, dtype).train()
        state = payload["training"]
    else:
        model = PhiSNet(config.model).to(dtype)
        model.fit_references([dataset[i] for i in splits["train"]])
        state = None
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=config.lr_factor, patience=config.patience, min_lr=config.lr_min
    )
    step, epoch, done_in_epoch, best, elapsed = 0, 0, 0, math.inf, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, best, elapsed = state["step"], state["epoch"], state["best"], state["elapsed"]
        done_in_epoch = state["batches_done_in_epoch"]
        torch.set_rng_state(state["torch_rng"])
        log(f"Resuming {out} at step {step} (best validation H MAE {best:.1f} uHa).")

    metadata = {
        "elements": elements,
        "basis": basis,
        "xc": xc,
        "data": {
            "path": str(config.data),
            "n_structures": n,
            "title": dataset.metadata.get("title"),
            "settings": dataset.metadata.get("settings"),
        },
        "splits": {"seed": config.seed, "train": n_train, "val": n_val, "test": n - n_train - n_val},
        "train_config": config.to_json(),
    }
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_json(), indent=2))
        _truncate_log(out / "metrics.jsonl", step)

    def checkpoint(path: Path, extra: dict | None = None) -> None:
        save_checkpoint(
            path, model, {**metadata, "training": {"step": step, "best_val_H_MAE_uHa": best, "seconds": elapsed}}, extra
        )

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
            batch = _stack(dataset, chunk, dtype)
            pred = ddp_model(batch["positions"], batch["atomic_numbers"])
            lh, ls = loss_terms(pred, batch, model)
            loss = lh + config.overlap_weight * ls
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
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
                metrics = validate(model, dataset, splits["val"], config.batch_size * 2, dtype)
                scheduler.step(metrics["val_loss"])
                improved = metrics["val_H_MAE_uHa"] < best
                best = min(best, metrics["val_H_MAE_uHa"])
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
                        checkpoint(best_path)
                    checkpoint(
                        last_path,
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
                            }
                        },
                    )
                    bar.write(
                        f"step {step}: val H MAE {metrics['val_H_MAE_uHa']:.1f} uHa, "
                        f"S MAE {metrics['val_S_MAE_1e-6']:.2f}e-6, lr {optimizer.param_groups[0]['lr']:.1e}"
                    )
            if out_of_time:
                stop = True
                break
        epoch += 1
        done_in_epoch = 0
    bar.close()
    if world > 1:
        torch.distributed.barrier()
    return best_path


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
