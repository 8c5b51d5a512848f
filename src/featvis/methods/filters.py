"""Method 4: ranked filters, the units of the layer below most strongly connected to a unit.

Ranked by ``|W[i, :]|`` with the signed weights returned, as in pylearn2's top_filters. Any
layer whose probe has incoming weights and a layer below (a DBN's hidden layers above the
first, a chain of ``nn.Linear``, a convolutional DBN's layers above the first) supports it.
A convolutional DBN's filter connects to each filter below by a ``w x w`` kernel: its
strength is the kernel's L2 norm (always positive), so the filters below whose maps it
reads most strongly come first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..errors import check_int
from ..seam.base import Key, UnsupportedError
from ..seam.dispatch import probe
from ..units import Units, resolve_units

__all__ = ["RankedFilters", "ranked_filters", "check_top", "renamed_top"]

_UNSET = object()


@dataclass
class RankedFilters:
    """``indices (U, top)`` into the layer below, ``weights (U, top)`` signed, by descending
    ``|w|`` (ties to the lower index), ``units (U,)``, ``below`` the layer below's key."""

    indices: torch.Tensor
    weights: torch.Tensor
    units: torch.Tensor
    below: Key | None = None


def renamed_top(top: int | None, k: object, default: int | None) -> int | None:
    """``top``, or the deprecated spelling ``k`` (with a warning) when given."""
    if k is _UNSET:
        return top
    warnings.warn("the argument k is now called top (k will be removed in the next release)",
                  FutureWarning, stacklevel=3)
    if top != default:
        raise TypeError("give top only (k is its deprecated spelling)")
    return k


def check_top(top: int, n_below: int, below: Key) -> int:
    """``top`` in ``1..n_below``: an impossible top is an error, never a silent clamp."""
    check_int("top", top)
    if top > n_below:
        raise ValueError(f"top={top} is larger than layer {below}'s {n_below} units")
    return top


def ranked_filters(model: torch.nn.Module, layer: Key, units: Units = None, top: int = 10,
                   *, input_shape: tuple[int, ...] | None = None,
                   k: int = _UNSET) -> RankedFilters:  # type: ignore[assignment]
    """The ``top`` units of the layer below with the largest ``|W[i, :]|`` per unit ``i``.

    ``input_shape`` (one input's shape) is needed for a module other than a DBN.
    """
    top = renamed_top(top, k, 10)
    seam = probe(model, input_shape)
    below = seam.below(layer)
    if below is None:
        raise UnsupportedError(f"ranked filters need a layer above the first: layer {layer!r} "
                               "connects to the input, and its filters are "
                               f"linear_combination(model, {layer!r})")
    weight = seam.incoming_weights(layer)
    check_top(top, weight.shape[1], below)
    units = resolve_units(units, weight.shape[0], weight.device)
    rows = weight[units]
    order = rows.abs().sort(dim=1, descending=True, stable=True).indices[:, :top]
    return RankedFilters(indices=order, weights=rows.gather(1, order), units=units, below=below)
