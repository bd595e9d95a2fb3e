"""Context managers for torch's process-wide settings, restored when the block ends; values kept while weights stay."""

from __future__ import annotations

from collections.abc import Callable
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


def kept_while_unchanged(store: dict, slot, weight: torch.Tensor, build: Callable, *extra):
    """``build()``, kept in ``store[slot]`` without autograd (predictions) until ``weight`` changes.

    A change is a new version counter (which every in-place update and load_state_dict moves), storage or dtype, or
    other ``extra``; with autograd on it is built on every call, so that gradients flow through it.
    """
    key = (weight._version, weight.data_ptr(), weight.dtype, *extra)
    kept = store.get(slot)
    if not torch.is_grad_enabled() and kept is not None and kept[0] == key:
        return kept[1]
    value = build()
    if not torch.is_grad_enabled():
        store[slot] = (key, value)
    return value
