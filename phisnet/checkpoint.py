"""The checkpoint file: writing, reading safely (``weights_only=True``) and rebuilding the network.

Format (a plain dict): ``format`` = "phisnet-checkpoint", ``version`` = 1, ``config`` (PhiSNetConfig as a dict),
``state_dict`` (tensors), ``metadata`` (JSON-able), and optionally training state under ``training``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from phisnet.basis import DEFAULT_BASIS
from phisnet.config import PhiSNetConfig
from phisnet.errors import InputError
from phisnet.files import atomic_path
from phisnet.model import PhiSNet, build_model

CHECKPOINT_FORMAT = "phisnet-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, model: PhiSNet, metadata: dict, extra: dict | None = None) -> None:
    """Write a checkpoint atomically (temporary file, then rename).

    Format (a plain dict, loadable with ``torch.load(..., weights_only=True)``):
    ``format`` = "phisnet-checkpoint", ``version`` = 1, ``config`` (PhiSNetConfig as a
    dict), ``state_dict`` (tensors), ``metadata`` (JSON-able: elements, basis, xc, data,
    splits, metrics, ...), and optionally training state under ``training``.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_json(),
        "state_dict": model.state_dict(),
        "metadata": metadata,
    }
    if extra:
        payload.update(extra)
    _write_checkpoint(path, payload)


def _write_checkpoint(path: str | Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def update_checkpoint_metadata(path: str | Path, changes: dict) -> None:
    """Merge ``changes`` (JSON-able) into a checkpoint's metadata, rewriting the file atomically; weights untouched."""
    payload = read_checkpoint(path)
    payload["metadata"] = {**payload["metadata"], **changes}
    _write_checkpoint(path, payload)


def read_checkpoint(path: str | Path) -> dict:
    """Load and check a checkpoint dict safely (``weights_only=True``); InputError if not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"There is no checkpoint file {path}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torch raises many types for corrupt or foreign files
        import zipfile

        if not zipfile.is_zipfile(path):
            raise InputError(
                f"{path.name} is not a PyTorch checkpoint file (damaged, cut short, or another kind of file)."
            ) from None
        raise InputError(
            f"{path.name} holds Python objects besides tensors and plain data: phisnet reads checkpoints with "
            "weights_only=True and does not run code a file carries (a phisnet checkpoint never needs it)."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path.name} is not a phisnet checkpoint (no '{CHECKPOINT_FORMAT}' format tag).")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise InputError(
            f"{path.name} has checkpoint version {payload.get('version')}; this phisnet reads {CHECKPOINT_VERSION}."
        )
    for key in ("config", "state_dict", "metadata"):
        if key not in payload:
            raise InputError(f"{path.name} is missing '{key}'.")
    return payload


def build_from_checkpoint(payload: dict, dtype: torch.dtype = torch.float32) -> PhiSNet:
    # Checkpoints written before pair_mixing or pair_radial_scalars existed were built without them.
    defaults = {"pair_mixing": False, "pair_radial_scalars": False}
    model = build_model(PhiSNetConfig.from_json({**defaults, **payload["config"]}), dtype)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise InputError(f"The checkpoint's weights do not fit its configuration ({str(exc)[:200]}).") from None
    return model.to(dtype).eval()


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint's metadata says about its model, typed: the one reader of that dict.

    ``molecule``: the per-molecule model's molecule (its data's settings; the oldest checkpoints, water's, have
    none). ``molecules``: for a model trained on a molecule set, ``{"seen": [...], "held_out": [...]}``, else None.
    ``splits``: seed and sizes (train, val, test, test_ood) of its dataset's split, or None. ``energy_target``:
    ``"ccsd_t"`` for a model fine-tuned to CCSD(T) observables. Default values are those of checkpoints written
    before a key existed. ``to_metadata`` writes the same dict back (what training stores).
    """

    basis: str = DEFAULT_BASIS
    xc: str = "pbe"
    data_path: str | None = None
    data_title: str | None = None
    n_structures: int | None = None
    data_settings: dict = field(default_factory=dict)
    splits: dict | None = None
    molecules: dict | None = None
    subspace: float = 0.0
    energy_target: str | None = None
    end_to_end_energy: bool = False
    train_config: dict = field(default_factory=dict)
    elements: list[int] = field(default_factory=list)
    extra_train: list[dict] = field(default_factory=list)  # per --extra-train database: path, n_structures, settings
    init: str | None = None  # the checkpoint training started from

    @classmethod
    def from_metadata(cls, metadata: dict) -> ModelInfo:
        data = metadata.get("data") or {}
        return cls(
            basis=metadata.get("basis", DEFAULT_BASIS),
            xc=metadata.get("xc", "pbe"),
            data_path=data.get("path"),
            data_title=data.get("title"),
            n_structures=data.get("n_structures"),
            data_settings=data.get("settings") or {},
            splits=metadata.get("splits"),
            molecules=metadata.get("molecules"),
            subspace=float(metadata.get("subspace", 0.0)),
            energy_target=metadata.get("energy_target"),
            end_to_end_energy=bool(metadata.get("end_to_end_energy")),
            train_config=metadata.get("train_config") or {},
            elements=list(metadata.get("elements") or []),
            extra_train=list(metadata.get("extra_train") or []),
            init=metadata.get("init"),
        )

    def to_metadata(self) -> dict:
        """The metadata dict of a checkpoint (JSON-able); optional keys only where they have a value."""
        metadata = {
            "elements": list(self.elements),
            "basis": self.basis,
            "xc": self.xc,
            "data": {
                "path": self.data_path,
                "n_structures": self.n_structures,
                "title": self.data_title,
                "settings": self.data_settings,
            },
            "splits": self.splits,
            "train_config": self.train_config,
        }
        optional = {
            "extra_train": self.extra_train,
            "molecules": self.molecules,
            "init": self.init,
            "energy_target": self.energy_target,
            "subspace": self.subspace,
        }
        metadata.update({key: value for key, value in optional.items() if value})
        metadata["end_to_end_energy"] = self.end_to_end_energy
        return metadata

    @property
    def molecule(self) -> str:
        return self.data_settings.get("molecule", "water")

    @property
    def n_extra_structures(self) -> int:
        """How many training-only structures the ``--extra-train`` databases gave (0 without any)."""
        return sum(e.get("n_structures", 0) for e in self.extra_train)

    @property
    def is_set_model(self) -> bool:
        """Trained on a molecule set (the general model), not on one molecule."""
        return bool(self.molecules)

    @property
    def charge(self) -> int:
        return int(self.data_settings.get("charge", 0))

    @property
    def beyond_scf(self) -> bool:
        """Fine-tuned to CCSD(T) observables: its Hamiltonian is not meant to be self-consistent."""
        return self.energy_target == "ccsd_t"

    @property
    def trained_with_energies(self) -> bool:
        """Trained on energies or forces (weights above zero), which makes its end-to-end energy the one to use."""
        return bool(self.train_config.get("energy_weight") or self.train_config.get("force_weight"))
