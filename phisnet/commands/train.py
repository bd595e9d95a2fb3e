r"""``phisnet train`` (and ``train.py``, its shim for torchrun): train PhiSNet on a dataset from `phisnet generate`.

python train.py --data data/water.db --out runs/water [--max-minutes 60 ...]
python train.py --out runs/water --resume          # continue after an interruption (settings from
                                                    # runs/water/config.json; flags given win)
python train.py --init pretrained/water-hf.pt --data data/water-hf.db --out runs/water-ccsdt \
    --matrix-weight 0 --energy-weight 1 --force-weight 10   # fine-tune to CCSD(T) (phisnet ccsdt)
torchrun --nproc_per_node=2 train.py --data ...    # DistributedDataParallel (gloo)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from phisnet.config import PhiSNetConfig
from phisnet.errors import InputError
from phisnet.train_config import TrainConfig
from phisnet.training import run
from phisnet.upgrade import UPGRADE_FLAGS

NOTES = {
    "matrix_weight": "weight of the H and S entry loss ",
    "orbital_weight": "weight of the loss on H in the basis of the reference orbitals (orbital energies and mixing; "
    "then best.pt has the lowest validation loss) ",
    "density_weight": "weight of the loss on the occupied-virtual block in the reference orbitals' basis, each "
    "entry times HOMO-LUMO gap / (eps_a - eps_i) (the density error an SCF guess starts from) ",
    "energy_weight": "weight of the end-to-end energy MSE in eV^2 ",
    "force_weight": "weight of the end-to-end force MSE in (eV/A)^2 ",
    "energy_target": "ccsd_t, reference or auto (CCSD(T) labels when the data has them) ",
    "overlap_fit_steps": "with --add-two-center-overlap: steps fitting the new S part alone first ",
    "init": "start from this checkpoint's weights and configuration ",
    "schedule": "plateau (halve after PATIENCE validations without improvement) or cosine (to LR_MIN at MAX_STEPS) ",
    "warmup_steps": "with --schedule cosine: the learning rate rises linearly to LR over these first steps ",
    "ema": "decay of the moving average of the weights that is validated and kept as best.pt, e.g. 0.999; 0 is off ",
    "device": "cpu, cuda, or auto (cuda when torch sees a GPU; under torchrun one GPU per process, nccl) ",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON file with any of the settings below (command-line flags win)")
    _training_flags(parser)
    _model_flags(parser)
    _model_switches(parser)
    _run_flags(parser)
    for flag in UPGRADE_FLAGS:  # checkpoint surgery moved to its own command; say where to anyone who asks here
        parser.add_argument(flag, nargs="?", action=_MovedToUpgrade, help=argparse.SUPPRESS)
    return parser


def _training_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per number or name of TrainConfig (data, schedule, loss weights, ...), its default from there."""
    train_defaults = TrainConfig()
    for name in (
        "data",
        "out",
        "seed",
        "train",
        "val",
        "batch_size",
        "lr",
        "lr_min",
        "weight_decay",
        "lr_factor",
        "patience",
        "schedule",
        "warmup_steps",
        "ema",
        "val_every",
        "max_steps",
        "max_minutes",
        "overlap_weight",
        "matrix_weight",
        "orbital_weight",
        "density_weight",
        "energy_weight",
        "force_weight",
        "energy_target",
        "overlap_fit_steps",
        "init",
        "device",
    ):
        _value_flag(parser, name, getattr(train_defaults, name), NOTES.get(name, ""))


def _model_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per size of the network (PhiSNetConfig), its default from there."""
    model_defaults = PhiSNetConfig()
    model_notes = {
        "fine_radial": "narrow Gaussians over bonding distances for the pair stage's radial weights, 0 = none ",
        "fine_radial_min": "Angstrom ",
        "fine_radial_max": "Angstrom ",
    }
    for name in (
        "channels",
        "lmax",
        "n_interactions",
        "n_radial",
        "cutoff",
        "radial_hidden",
        "pair_layers",
        "fine_radial",
        "fine_radial_min",
        "fine_radial_max",
    ):
        _value_flag(parser, name, getattr(model_defaults, name), f"model: {model_notes.get(name, '')}")


def _value_flag(parser: argparse.ArgumentParser, name: str, default, note: str) -> None:
    """--NAME of the setting's type; None when not given, so a --config file or a resumed run's value stands."""
    parser.add_argument(
        f"--{name.replace('_', '-')}",
        type=type(default),
        default=None,
        help=f"{note}(default {'none' if default == '' else default})",
    )


#: The network's optional parts that a flag turns on or off: the PhiSNetConfig field and what it does.
MODEL_SWITCHES = (
    ("pair_mixing", "own linear maps on each side of the pair products"),
    ("pair_radial_scalars", "radial weights of the pair stage from the distance and both atoms' scalar features"),
    (
        "fine_radial_interactions",
        "the interaction layers' radial weights also get an MLP of the fine Gaussians (needs --fine-radial)",
    ),
    (
        "two_center_overlap",
        "S from two-centre features of each atom pair alone (distance, both elements, spherical harmonics), "
        "on-site S the element's reference; H alone uses the atom features",
    ),
    (
        "integral_baseline",
        "the network learns H minus a baseline of the geometry's S, T and V_nuc integrals, one least-squares "
        "combination per kind of shell-pair block, fitted to the training structures first",
    ),
)


def _model_switches(parser: argparse.ArgumentParser) -> None:
    """The network's optional parts, on or off (--pair-mixing / --no-pair-mixing, ...)."""
    model_defaults = PhiSNetConfig()
    for field, text in MODEL_SWITCHES:
        parser.add_argument(
            f"--{field.replace('_', '-')}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"model: {text} (default {getattr(model_defaults, field)})",
        )
    parser.add_argument(
        "--baseline-screening",
        type=float,
        nargs="+",
        metavar="ZETA",
        default=None,
        help="model, with --integral-baseline: exponents (1/Bohr^2) of screened nuclear attractions added to the "
        "baseline's integrals, e.g. 0.1 0.3 1 3 10 (default none)",
    )
    parser.add_argument(
        "--exact-overlap",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="model, with --integral-baseline: S is the exact overlap integral the baseline computes anyway, not a "
        f"prediction (no S heads; default {model_defaults.exact_overlap})",
    )
    parser.add_argument(
        "--add-two-center-overlap",
        action="store_true",
        default=None,
        help="with --init: make S from two-centre features (H unchanged), fitted alone for --overlap-fit-steps "
        "steps before training",
    )


def _run_flags(parser: argparse.ArgumentParser) -> None:
    """What the run does besides the steps: the orbital loss's rows, the subspace, S from --init, data, resume."""
    parser.add_argument(
        "--orbital-all-rows",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the orbital loss over every reference orbital (the whole C^T dH C), not the occupied and as many "
        f"virtual rows (default {TrainConfig().orbital_all_rows})",
    )
    parser.add_argument(
        "--choose-subspace",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="at the end, choose the orbital subspace on the validation split and store it in best.pt (what "
        f"phisnet subspace --write does; default {TrainConfig().choose_subspace})",
    )
    parser.add_argument(
        "--extra-train",
        nargs="+",
        default=None,
        metavar="DB",
        help="more databases (same basis and level of theory; another --seed of phisnet generate) whose structures "
        "all join the training split; DATA keeps its own validation and test splits (default none)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.pt with the settings in OUT/config.json (flags given now win)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


class _MovedToUpgrade(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        value = "" if values is None else f" {values}"
        parser.error(
            f"{option_string} moved to its own command: phisnet upgrade CHECKPOINT {option_string}{value} --out "
            f"NEW.pt, then train with --init NEW.pt."
        )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """--config (or, for --resume, the run's own OUT/config.json), then every flag given on the command line."""
    base = {}
    source = args.config
    if not source and args.resume:  # continue the run as it was started; flags given now still win
        saved = Path(args.out or TrainConfig().out) / "config.json"
        source = str(saved) if saved.is_file() else ""
    if source:
        try:
            with open(source) as f:
                base = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"Cannot read the config file {source}: {exc}") from None
    config = TrainConfig.from_json(base)
    for name in TrainConfig.__dataclass_fields__:
        value = getattr(args, name, None)
        if value is not None and name != "model":
            setattr(config, name, value)
    for name in PhiSNetConfig.__dataclass_fields__:
        value = getattr(args, name, None)
        if value is not None:
            setattr(config.model, name, value)
    config.resume = bool(args.resume)
    return config


def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    parser = build_parser()
    parser.prog = prog
    args = parser.parse_args(argv)
    try:
        best = run(config_from_args(args), progress=not args.quiet)
    except InputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; continue with --resume.", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":
        print(f"Best checkpoint: {best}")
    return 0
