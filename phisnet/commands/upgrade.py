"""``phisnet upgrade``: checkpoint surgery (phisnet.upgrade) from the command line."""

from __future__ import annotations

import argparse

from phisnet.upgrade import Upgrade, upgrade_file


def add_parser(sub, fmt) -> None:
    up = sub.add_parser(
        "upgrade",
        help="give a trained checkpoint parts it lacks (pair mixing, fine radial MLPs, layers, channels), as the "
        "same function, for fine-tuning with phisnet train --init",
        description="Write NEW.pt: the checkpoint with the named parts added where it lacks them, each starting so "
        "that the model predicts what it did (identity maps, zero output layers, copied channels); then fine-tune "
        "it with phisnet train --init NEW.pt. --exact-overlap and --add-two-center-overlap, which change how S is "
        "made, stay with phisnet train --init.",
        formatter_class=fmt,
    )
    up.add_argument("checkpoint", help="the trained model (.pt)")
    up.add_argument("--out", required=True, help="the upgraded checkpoint to write")
    up.add_argument(
        "--add-pair-mixing", action="store_true", help="own linear maps on each side of the pair products (identity)"
    )
    up.add_argument(
        "--add-pair-radial-scalars",
        action="store_true",
        help="radial weights of the pair stage also from both atoms' scalar features (an MLP starting at zero)",
    )
    up.add_argument(
        "--add-fine-radial",
        type=int,
        default=0,
        metavar="N",
        help="a pair radial MLP of N narrow Gaussians over the model's fine range (starting at zero)",
    )
    up.add_argument(
        "--add-fine-radial-interactions",
        action="store_true",
        help="the interaction layers get MLPs of the fine Gaussians too (starting at zero)",
    )
    up.add_argument(
        "--add-interactions", type=int, default=0, metavar="N", help="N interaction layers after the last (identity)"
    )
    up.add_argument(
        "--widen-channels",
        type=int,
        default=0,
        metavar="N",
        help="N channels per order, a multiple of the model's (copies whose weights differ by noise that cancels)",
    )
    up.add_argument("--seed", type=int, default=0, help="seed of the widening noise")


def run(args: argparse.Namespace) -> int:
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
