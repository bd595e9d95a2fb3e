"""Context managers for torch's process-wide settings, restored when the block ends."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def default_dtype(dtype: torch.dtype):
    """torch's default dtype set to ``dtype`` within the block (e3nn stores its coefficients in it at construction)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextmanager
def torch_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` within the block; ``None`` leaves it as it is."""
    previous = torch.get_num_threads()
    if n is not None and n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
