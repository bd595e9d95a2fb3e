"""The settings of a training run (``TrainConfig``): what ``phisnet train`` flags set, saved as ``config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from phisnet.config import PhiSNetConfig, check_fine_radial
from phisnet.errors import InputError


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

    def check(self) -> None:
        """InputError naming the setting at fault when settings are out of range or contradict each other."""
        if self.schedule not in ("plateau", "cosine"):
            raise InputError(f"schedule must be plateau or cosine, got {self.schedule!r}.")
        if self.warmup_steps < 0 or (self.warmup_steps > 0 and self.schedule != "cosine"):
            raise InputError(
                f"--warmup-steps is a number of steps, 0 (off) or more, and works with --schedule cosine; got "
                f"{self.warmup_steps} with the {self.schedule} schedule."
            )
        if not 0.0 <= self.ema < 1.0:
            raise InputError(f"ema is a decay per step in [0, 1), e.g. 0.999; got {self.ema}.")
        check_fine_radial(self.model.fine_radial, self.model.fine_radial_min, self.model.fine_radial_max)
        if not self.init:  # with --init the model's options are the checkpoint's, checked when it was made
            self.model.check()
        for name in ("orbital_weight", "density_weight"):
            if getattr(self, name) < 0:
                flag = "--" + name.replace("_", "-")
                raise InputError(f"{flag} is a weight, 0 (off) or more; got {getattr(self, name)}.")

    @property
    def with_energy(self) -> bool:
        """Trains on end-to-end energies or forces."""
        return self.energy_weight > 0 or self.force_weight > 0

    @property
    def with_orbitals(self) -> bool:
        """Trains with the orbital or density loss (needs the reference orbitals)."""
        return self.orbital_weight > 0 or self.density_weight > 0
