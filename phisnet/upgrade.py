"""Checkpoint surgery: give a trained model parts it was made without, as the same function.

    phisnet upgrade OLD.pt --add-pair-mixing --add-fine-radial 32 --widen-channels 64 --out NEW.pt
    phisnet train --init NEW.pt --data ...        # then a plain fine-tune

Every part starts so that the upgraded model predicts what the old one did (identity maps, zero output layers,
copied channels; ``phisnet.model.with_options`` and ``phisnet.model.widened`` say how), so training continues from
the old model instead of starting over. Two changes of how S is made are not here: ``--exact-overlap`` and
``--add-two-center-overlap`` stay with ``phisnet train --init`` (the second fits the new S to the data first).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phisnet.errors import InputError

if TYPE_CHECKING:  # the command line imports this module for its flags; torch only when one runs
    from phisnet.model import PhiSNet, PhiSNetConfig

# The flags that used to be train.py's, each with its meaning; train.py names this module when given one.
UPGRADE_FLAGS = (
    "--add-pair-mixing",
    "--add-pair-radial-scalars",
    "--add-fine-radial",
    "--add-fine-radial-interactions",
    "--add-interactions",
    "--widen-channels",
)


@dataclass
class Upgrade:
    """What to add to a model; zero or False leaves that part as it is."""

    pair_mixing: bool = False
    pair_radial_scalars: bool = False
    fine_radial: int = 0
    fine_radial_interactions: bool = False
    interactions: int = 0
    channels: int = 0
    seed: int = 0  # of the noise that makes widened channels' copies differ


def check(upgrade: Upgrade, config: PhiSNetConfig, name: str) -> None:
    """InputError naming the flag at fault when ``upgrade`` cannot apply to a model of ``config`` (file ``name``)."""
    low, high = config.fine_radial_min, config.fine_radial_max
    if upgrade.fine_radial < 0 or (upgrade.fine_radial and not 0.0 <= low < high):
        raise InputError(
            f"fine radial Gaussians: a count >= 0 over 0 <= min < max Angstrom; got {upgrade.fine_radial} over "
            f"{low}..{high}."
        )
    if upgrade.interactions < 0:
        raise InputError(f"--add-interactions is a count of new layers, 0 or more; got {upgrade.interactions}.")
    if upgrade.channels < 0:
        raise InputError(f"--widen-channels N widens the model to N channels; got {upgrade.channels}.")
    if upgrade.fine_radial_interactions and not (config.fine_radial or upgrade.fine_radial):
        raise InputError(f"{name} has no fine radial Gaussians; add them with --add-fine-radial N as well.")


def upgraded(model: PhiSNet, upgrade: Upgrade, name: str = "the checkpoint") -> PhiSNet:
    """The model with the parts of ``upgrade`` added where it lacks them (the same function)."""
    from phisnet.model import widened, with_options

    check(upgrade, model.config, name)
    model = with_options(
        model,
        upgrade.pair_mixing,
        upgrade.pair_radial_scalars,
        upgrade.fine_radial,
        upgrade.fine_radial_interactions,
        add_interactions=upgrade.interactions,
    )
    if upgrade.channels:
        model = widened(model, upgrade.channels, seed=upgrade.seed)
    return model


def describe(before: PhiSNetConfig, after: PhiSNetConfig) -> list[str]:
    """One sentence per part ``after`` has that ``before`` lacked."""
    same = "the same function as the checkpoint"
    added = {
        "n_interactions": f"{after.n_interactions - before.n_interactions} interaction layer(s) after the "
        f"{before.n_interactions} there (each starting as the identity: {same})",
        "pair_mixing": f"pair-mixing maps (starting as the identity: {same})",
        "pair_radial_scalars": f"the pair radial MLP of atom scalars (starting at zero: {same})",
        "fine_radial": f"the pair radial MLP of {after.fine_radial} narrow Gaussians over "
        f"{after.fine_radial_min}..{after.fine_radial_max} Angstrom (starting at zero)",
        "fine_radial_interactions": "radial MLPs of the fine Gaussians to the interaction layers (starting at zero)",
        "channels": f"channels: {before.channels} -> {after.channels} per order, each old channel copied and its "
        f"weights split with noise that cancels ({same})",
        "exact_overlap": f"S as the baseline's exact overlap integral, the S heads dropped (H {same})",
    }
    # a count grew or a switch went from False to True
    return [f"Added {what}." for name, what in added.items() if getattr(after, name) > getattr(before, name)]


def upgrade_file(path: str | Path, out: str | Path, upgrade: Upgrade) -> list[str]:
    """Write ``out``: the checkpoint ``path`` upgraded, its metadata kept, with a record of what was added.
    Returns the sentences of ``describe``; InputError when nothing would change or ``out`` is ``path``."""
    from phisnet.model import build_from_checkpoint, read_checkpoint, save_checkpoint

    path, out = Path(path), Path(out)
    if out.resolve() == path.resolve():
        raise InputError(f"--out {out} is the checkpoint itself; write the upgrade to a new file.")
    payload = read_checkpoint(path)
    model = build_from_checkpoint(payload)
    before = model.config
    model = upgraded(model, upgrade, path.name)
    messages = describe(before, model.config)
    if not messages:
        raise InputError(f"{path.name} already has every part asked for; nothing to upgrade.")
    metadata = dict(payload["metadata"])
    metadata["upgrades"] = [*metadata.get("upgrades", []), {"from": str(path), "added": messages}]
    save_checkpoint(out, model, metadata)
    return messages


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="the trained model (.pt)")
    parser.add_argument("--out", required=True, help="the upgraded checkpoint to write")
    parser.add_argument(
        "--add-pair-mixing", action="store_true", help="own linear maps on each side of the pair products (identity)"
    )
    parser.add_argument(
        "--add-pair-radial-scalars",
        action="store_true",
        help="radial weights of the pair stage also from both atoms' scalar features (an MLP starting at zero)",
    )
    parser.add_argument(
        "--add-fine-radial",
        type=int,
        default=0,
        metavar="N",
        help="a pair radial MLP of N narrow Gaussians over the model's fine range (starting at zero)",
    )
    parser.add_argument(
        "--add-fine-radial-interactions",
        action="store_true",
        help="the interaction layers get MLPs of the fine Gaussians too (starting at zero)",
    )
    parser.add_argument(
        "--add-interactions", type=int, default=0, metavar="N", help="N interaction layers after the last (identity)"
    )
    parser.add_argument(
        "--widen-channels",
        type=int,
        default=0,
        metavar="N",
        help="N channels per order, a multiple of the model's (copies whose weights differ by noise that cancels)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the widening noise")


def command(args: argparse.Namespace) -> int:
    upgrade = Upgrade(
        pair_mixing=args.add_pair_mixing,
        pair_radial_scalars=args.add_pair_radial_scalars,
        fine_radial=args.add_fine_radial,
        fine_radial_interactions=args.add_fine_radial_interactions,
        interactions=args.add_interactions,
        channels=args.widen_channels,
        seed=args.seed,
    )
    for message in upgrade_file(args.checkpoint, args.out, upgrade):
        print(message)
    print(f"wrote {args.out}; fine-tune it with phisnet train --init {args.out}")
    return 0
