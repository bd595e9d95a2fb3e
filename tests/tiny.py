"""The tiny network the tests build: enough to run every code path in seconds, not to predict well."""

import torch

from phisnet.config import PhiSNetConfig
from phisnet.model import PhiSNet
from phisnet.torchtools import default_dtype

#: PhiSNetConfig options of the tests' tiny network.
TINY = {"channels": 4, "n_interactions": 1, "n_radial": 8, "radial_hidden": 8}
#: The same network as flags of ``phisnet train`` / ``train.py``, quiet.
TINY_ARGS = ["--channels", "4", "--n-interactions", "1", "--n-radial", "8", "--radial-hidden", "8", "--quiet"]


def build64(elements=(1, 6, 7, 8), **options) -> PhiSNet:
    """A tiny float64 model (seed 0), built under float64 default dtype (e3nn stores its coefficients then)."""
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        return PhiSNet(PhiSNetConfig(elements=list(elements), **{**TINY, **options})).eval()
