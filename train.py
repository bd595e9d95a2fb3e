"""``python train.py ...`` and ``torchrun train.py ...``: the same as ``phisnet train ...``.

The command lives in phisnet/commands/train.py; this shim lets torchrun start it as a script.
"""

import sys

from phisnet.commands.train import build_parser, config_from_args, main  # noqa: F401 - scripts and tests use these

if __name__ == "__main__":
    sys.exit(main())
