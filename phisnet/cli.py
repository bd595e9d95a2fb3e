"""The ``phisnet`` command line: ``phisnet generate ...``, one module per command in ``phisnet.commands``."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from phisnet.errors import InputError, stop_requested

#: The commands in the order ``phisnet --help`` lists them; each is a module of phisnet.commands.
COMMANDS = ("generate", "molecules", "ccsdt", "evaluate", "subspace", "upgrade", "predict")


def _command(name: str):
    return importlib.import_module(f"phisnet.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phisnet", description="PhiSNet: equivariant prediction of Kohn-Sham Hamiltonians with PySCF references."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    # Listed here for `phisnet --help`; main() hands `phisnet train ...` to phisnet.commands.train, whose parser it is.
    sub.add_parser("train", help="train or fine-tune a model on a dataset (phisnet train --help; also train.py)")
    for name in COMMANDS:
        _command(name).add_parser(sub, fmt)
    return parser


def run(args: argparse.Namespace) -> int:
    return _command(args.command).run(args)


def _interrupt(signum, frame):
    stop_requested.set()  # checked between steps too: the exception below is lost if it lands in a __del__
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from phisnet.commands.train import main as train_main

        return train_main(argv[1:], prog="phisnet train")
    args = build_parser().parse_args(argv)
    # SIGTERM (kill, pkill) stops a run like Ctrl-C: the worker processes of `generate` are shut down with it
    # instead of computing on as orphans, and what was saved stays saved.
    main_thread = threading.current_thread() is threading.main_thread()
    stop_requested.clear()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return run(args)
    except InputError as exc:
        print(f"phisnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("phisnet: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
