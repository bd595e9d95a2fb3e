"""Loading a dataset of ``phisnet generate`` (:class:`HamiltonianDataset`) and its deterministic splits.

Rows hold H and S in Hartree under ``data``, energy and forces in ASE's units (eV, eV/Angstrom);
:class:`HamiltonianDataset` converts them back to Hartree and Hartree/Angstrom.
"""

from __future__ import annotations

import os
from pathlib import Path

import ase
import ase.db
import numpy as np

from phisnet.errors import InputError
from phisnet.reference import HARTREE_EV

# ----------------------------------------------------------------------------- loading


class HamiltonianDataset:
    """Torch-ready samples of a generated database, in Hartree and Angstrom.

    ``dataset[k]`` is a dict of tensors: ``positions`` (n_atoms, 3) Angstrom,
    ``atomic_numbers`` (n_atoms,), ``hamiltonian`` and ``overlap`` (nao, nao)
    Hartree, ``energy`` () Hartree, ``forces`` (n_atoms, 3) Hartree/Angstrom (NaN in
    datasets made without forces, ``has_forces``), plus ``sample_index``. Rows are held in
    memory, ordered by sample index.
    """

    def __init__(self, path: str | os.PathLike):
        import torch

        path = Path(path)
        if not path.is_file():
            raise InputError(f"There is no dataset file {path}.")
        try:
            db = ase.db.connect(path, type="db")
            self.metadata = dict(db.metadata)
            rows = sorted(db.select(), key=lambda r: (r.get("sample_index", r.id), r.get("molecule", "")))
        except Exception as exc:  # noqa: BLE001 - sqlite and ASE raise many types for foreign files
            raise InputError(f"{path} is not a readable ASE database ({exc}).") from None
        self.path = path
        self.samples = []
        for row in rows:
            if "hamiltonian" not in row.data or "overlap" not in row.data:
                raise InputError(f"Row {row.id} of {path} has no Hamiltonian/overlap data.")
            self.samples.append(
                {
                    "positions": torch.tensor(row.positions, dtype=torch.float64),
                    "atomic_numbers": torch.tensor(row.numbers, dtype=torch.long),
                    "hamiltonian": torch.tensor(row.data["hamiltonian"], dtype=torch.float64),
                    "overlap": torch.tensor(row.data["overlap"], dtype=torch.float64),
                    "energy": torch.tensor(row.energy / HARTREE_EV, dtype=torch.float64),
                    "forces": torch.tensor(
                        row.forces / HARTREE_EV if "forces" in row else np.full((row.natoms, 3), np.nan),
                        dtype=torch.float64,
                    ),
                    "sample_index": int(row.get("sample_index", row.id)),
                }
            )
            if "molecule" in row:  # multi-molecule sets (generate_set)
                self.samples[-1]["molecule"] = row.molecule
                self.samples[-1]["held_out"] = bool(row.get("held_out", False))
            if "ccsd_t_energy" in row:
                self.samples[-1]["ccsd_t_energy"] = torch.tensor(row.ccsd_t_energy / HARTREE_EV, dtype=torch.float64)
                self.samples[-1]["ccsd_t_forces"] = torch.tensor(
                    row.data["ccsd_t_forces"] / HARTREE_EV, dtype=torch.float64
                )

    def __len__(self) -> int:
        return len(self.samples)

    def has_forces(self, indices=None) -> bool:
        """Whether every structure (of ``indices``) carries reference forces."""
        import torch

        chosen = range(len(self.samples)) if indices is None else indices
        return all(bool(torch.isfinite(self.samples[k]["forces"]).all()) for k in chosen)

    def __getitem__(self, k: int) -> dict:
        return self.samples[k]

    def held_out(self) -> list[int]:
        """Positions of the structures of held-out (out-of-distribution) molecules."""
        return [k for k, s in enumerate(self.samples) if s.get("held_out")]

    def split_indices(self, seed: int = 0, train: float | int = 0.8, val: float | int = 0.1) -> dict[str, list[int]]:
        """Deterministic train/val/test positions into this dataset; see :func:`split_indices`.

        Structures of held-out molecules are in none of these: they form ``test_ood`` (present
        only when the dataset has any), and ``train``/``val`` fractions count the other structures.
        """
        ood = set(self.held_out())
        if not ood:
            return split_indices(len(self), seed=seed, train=train, val=val)
        seen = [k for k in range(len(self)) if k not in ood]
        parts = split_indices(len(seen), seed=seed, train=train, val=val)
        out = {name: [seen[k] for k in members] for name, members in parts.items()}
        out["test_ood"] = sorted(ood)
        return out

    def n_seen(self) -> int:
        """Structures of molecules that are not held out: what train/val fractions count."""
        return len(self) - len(self.held_out())

    def split(self, name: str, seed: int = 0, train: float | int = 0.8, val: float | int = 0.1):
        """A ``torch.utils.data.Subset`` for ``name`` in {"train", "val", "test"} (and "test_ood")."""
        from torch.utils.data import Subset

        parts = self.split_indices(seed, train, val)
        if name not in parts:
            raise ValueError(f"split must be one of {sorted(parts)}, got {name!r}")
        return Subset(self, parts[name])


def sample_atoms(sample: dict) -> ase.Atoms:
    """The geometry of a :class:`HamiltonianDataset` sample as ``ase.Atoms`` (Angstrom)."""
    return ase.Atoms(sample["atomic_numbers"].numpy(), positions=sample["positions"].numpy())


def split_indices(n: int, seed: int = 0, train: float | int = 0.8, val: float | int = 0.1) -> dict[str, list[int]]:
    """Random disjoint train/val/test index lists, deterministic for a seed.

    ``train`` and ``val`` are fractions when below 1, counts otherwise; the test
    split gets the rest.
    """
    n_train = int(round(train * n)) if isinstance(train, float) and train < 1 else int(train)
    n_val = int(round(val * n)) if isinstance(val, float) and val < 1 else int(val)
    if n_train < 0 or n_val < 0 or n_train + n_val > n:
        raise InputError(f"Cannot split {n} structures into {n_train} for training and {n_val} for validation.")
    order = np.random.default_rng(seed).permutation(n).tolist()
    return {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
