"""Unit indices: which units of a layer a method works on.

Every method takes ``units`` as one index or a 1-D list, array or tensor of them (``None``
for all); :func:`resolve_units` turns them into a checked int64 tensor.
"""

from __future__ import annotations

import reprlib
from typing import Iterable, Sequence

import numpy as np
import torch

from .errors import is_int

__all__ = ["Units", "resolve_units", "unit_generator"]

Units = int | Sequence[int] | np.ndarray | torch.Tensor | None


def _describe(units: object) -> str:
    """``units`` for a one-line message: an array by its dtype and shape, else a short repr."""
    if isinstance(units, (np.ndarray, torch.Tensor)):
        return f"{type(units).__name__} of {units.dtype} with shape {tuple(units.shape)}"
    return reprlib.repr(units)


def _index(units: object) -> torch.Tensor | None:
    """``units`` as a 1-D integer tensor, or ``None`` if they are not integer indices (floats
    and bools are not: ``True`` would silently mean unit 1)."""
    if is_int(units):
        return torch.tensor([int(units)])
    if isinstance(units, np.ndarray):
        if not np.issubdtype(units.dtype, np.integer):
            return None
        units = torch.from_numpy(units.astype(np.int64))
    if isinstance(units, torch.Tensor):
        real = units.is_floating_point() or units.is_complex() or units.dtype == torch.bool
        return units.reshape(-1) if not real and units.dim() <= 1 else None
    if isinstance(units, Iterable) and not isinstance(units, (str, bytes)):
        values = list(units)
        if all(is_int(u) for u in values):
            return torch.tensor([int(u) for u in values], dtype=torch.long)
    return None


def resolve_units(units: Units, n_units: int, device: torch.device | None = None) -> torch.Tensor:
    """Unit indices as an int64 tensor (``None`` means all ``n_units``); range-checked.

    ``units`` is one index or a 1-D list, array or tensor of them; Python, numpy and torch
    integers are all indices.
    """
    if units is None:
        return torch.arange(n_units, device=device)
    index = _index(units)
    if index is None:
        raise ValueError(f"units must be an integer or a 1-D list of integer indices, got "
                         f"{_describe(units)}")
    if index.numel() == 0:
        raise ValueError("units is empty")
    bad = (index < 0) | (index >= n_units)
    if bad.any():
        raise ValueError(f"unit index {index[bad][0].item()} out of range: the layer has "
                         f"{n_units} units (0..{n_units - 1})")
    return index.to(device=device, dtype=torch.long)


def unit_generator(seed: int, index: int, device: torch.device | str | None = None
                   ) -> torch.Generator:
    """A generator seeded by ``(seed, index)`` alone: what makes a unit's random draws (its
    starting points, its samples, a layer's re-drawn weights) independent of the others
    asked for."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + index) % 2**63)
