"""The training device and, under ``torchrun``, the process group (nccl between GPUs, gloo between CPU processes)."""

from __future__ import annotations

import os

import torch

from phisnet.errors import InputError


def training_device(name: str) -> torch.device:
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


def join_process_group(device: torch.device) -> tuple[int, int]:
    """Join the process group under torchrun: nccl between GPUs, gloo between CPU processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world
