"""Method 4: ranked filters, the units of layer d-1 most strongly connected to a unit of d.

Ranked by ``|W_d[i, :]|`` with the signed weights returned, as in pylearn2's top_filters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import check_int
from ..models.dbn import DBN
from ..units import Units, resolve_units

__all__ = ["RankedFilters", "ranked_filters", "check_k", "incoming_weights"]


@dataclass
class RankedFilters:
    """``indices (U, k)`` into layer d-1, ``weights (U, k)`` signed, by descending ``|w|``
    (ties to the lower index), ``units (U,)``."""

    indices: torch.Tensor
    weights: torch.Tensor
    units: torch.Tensor


def check_k(k: int, n_below: int, layer: int) -> int:
    """``k`` in ``1..n_below``: an impossible k is an error, never a silent clamp."""
    check_int("k", k)
    if k > n_below:
        raise ValueError(f"k={k} is larger than layer {layer - 1}'s {n_below} units")
    return k


def incoming_weights(dbn: DBN, layer: int) -> torch.Tensor:
    """``W_d``, the ``(n_d, n_{d-1})`` weights into hidden layer ``layer``."""
    return dbn.rbms[dbn.check_layer(layer) - 1].weight.detach()


def ranked_filters(dbn: DBN, layer: int, units: Units = None, k: int = 10) -> RankedFilters:
    """The ``k`` units of layer ``layer - 1`` with the largest ``|W_d[i, :]|`` per unit ``i``."""
    weight = incoming_weights(dbn, layer)
    if layer == 1:
        raise ValueError("ranked_filters needs layer >= 2: layer 1's units connect to pixels, "
                         "and their filters are W_1's rows (see linear_combination(dbn, 1))")
    check_k(k, weight.shape[1], layer)
    units = resolve_units(units, weight.shape[0], weight.device)
    rows = weight[units]
    order = rows.abs().sort(dim=1, descending=True, stable=True).indices[:, :k]
    return RankedFilters(indices=order, weights=rows.gather(1, order), units=units)
