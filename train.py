"""``python train.py ...`` and ``torchrun train.py ...``: the same as ``phisnet train ...`` (phisnet/train_cli.py)."""

import sys

from phisnet.train_cli import build_parser, config_from_args, main  # noqa: F401 - scripts and tests use these

if __name__ == "__main__":
    sys.exit(main())
