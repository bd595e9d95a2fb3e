"""The structures a run trains on: extra training databases joined to a dataset's split, and mini-batches of them
(shuffled, split by composition, stacked into tensors)."""

from __future__ import annotations

import numpy as np
import torch

from phisnet.dataset import HamiltonianDataset
from phisnet.errors import InputError


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
        subset = extra.metadata.get("subset") or {"split": "train"}
        if subset["split"] != "train":
            raise InputError(
                f"{path} holds the rebuilt {subset['split']} split of {subset['of_model']}'s data: training on it "
                f"would spoil that model's {subset['split']} figures."
            )
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


def mini_batches(dataset, indices: list[int], batch_size: int, rng: np.random.Generator | None) -> list[list[int]]:
    """Mini-batches of structures, shuffled when rng is given; a batch may mix molecules."""
    members = list(indices)
    if rng is not None:
        rng.shuffle(members)
    batches = [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def composition_groups(dataset, chunk: list[int]) -> list[list[int]]:
    """A mini-batch split into groups of one composition (the network takes one molecule per call)."""
    groups: dict[tuple, list[int]] = {}
    for i in chunk:
        groups.setdefault(tuple(dataset[i]["atomic_numbers"].tolist()), []).append(i)
    return list(groups.values())


def stack_batch(dataset, indices: list[int], dtype, device: torch.device | None = None) -> dict:
    samples = [dataset[i] for i in indices]
    return {
        "positions": torch.stack([s["positions"] for s in samples]).to(device=device, dtype=dtype),
        "atomic_numbers": samples[0]["atomic_numbers"].to(device),
        "hamiltonian": torch.stack([s["hamiltonian"] for s in samples]).to(device=device, dtype=dtype),
        "overlap": torch.stack([s["overlap"] for s in samples]).to(device=device, dtype=dtype),
    }
