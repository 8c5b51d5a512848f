"""Method 4: ranked filters, the units of the layer below most strongly connected to a unit.

Ranked by ``|W[i, :]|`` with the signed weights returned, as in pylearn2's top_filters. Any
layer whose probe has incoming weights and a layer below (a DBN's hidden layers above the
first, a chain of ``nn.Linear``, a convolutional DBN's layers above the first) supports it.
A convolutional DBN's filter connects to each filter below by a ``w x w`` kernel: its
strength is the kernel's L2 norm (always positive), so the filters below whose maps it
reads most strongly come first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..seam import Key, Probe, UnsupportedError, probe
from ..units import Units, resolve_units
from .combination import linear_combination
from .registry import Method, Page
from .top_weights import UNSET, TOP, check_top, renamed_top

__all__ = ["RankedFilters", "ranked_filters"]

@dataclass
class RankedFilters:
    """``indices (U, top)`` into the layer below, ``weights (U, top)`` signed, by descending
    ``|w|`` (ties to the lower index), ``units (U,)``, ``below`` the layer below's key."""

    indices: torch.Tensor
    weights: torch.Tensor
    units: torch.Tensor
    below: Key | None = None


def ranked_filters(model: nn.Module | Probe, layer: Key, units: Units = None, top: int = 10,
                   *, input_shape: tuple[int, ...] | None = None,
                   k: int = UNSET) -> RankedFilters:  # type: ignore[assignment]
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


# -- as a method of visualize ----------------------------------------------------------------
_OVERVIEW_ROWS = 100   # units in the ranked-filters overview


@dataclass
class _Ranked:
    """Every unit's ranked filters, and ``images``: the pictures of the layer below."""

    ranked: RankedFilters
    images: torch.Tensor


def _compute(probe: Probe, key: Key, units: Sequence[int], *, top: int) -> _Ranked:
    """Every unit's (the overview ranks them by incoming-weight norm), with the pictures of
    the layer below (its linear combinations)."""
    ranked = ranked_filters(probe, key, top=top)
    return _Ranked(ranked, linear_combination(probe, ranked.below, top=top).images)


def _rerun(probe: Probe, key: Key, units: torch.Tensor, *, top: int = 10) -> torch.Tensor:
    return ranked_filters(probe, key, units=units, top=top).indices


def _write(page: Page, result: _Ranked) -> None:
    rf, below, top = result.ranked, result.images, page.params["top"]
    norms = page.probe.incoming_weights(page.key).norm(dim=1)
    rows = norms.argsort(descending=True, stable=True)[:_OVERVIEW_ROWS]
    page.section(page.signed_grid(below[rf.indices[rows].flatten()], rf.weights[rows].flatten(),
                                  cols=top),
                 f"one row per unit (by incoming-weight norm): the {top} units of layer "
                 f"{rf.below} with the strongest connections")
    for j, i in enumerate(page.units):
        info = page.detail(j)
        norm = round(norms[i].item(), 6)
        info["filters"] = {"below": rf.below, "indices": rf.indices[i].tolist(),
                           "weights": [round(w, 6) for w in rf.weights[i].tolist()]}
        weights = ", ".join(f"{b}: {w:+.3f}" for b, w in
                            zip(info["filters"]["indices"], info["filters"]["weights"]))
        page.panel(j, [("filters", page.signed_grid(below[rf.indices[i]], rf.weights[i],
                                                    cols=top),
                        f"unit of layer {rf.below}: weight — {weights}", "strip")],
                   [("incoming-weight norm", norm)], tile="filters", tile_cells=top)


FILTERS = Method(
    "filters", "Ranked filters",
    "The units of the layer below with the strongest connections to the unit, framed yellow "
    "for a positive and magenta for a negative weight (pylearn2's top_filters).",
    _compute, requires={"below", "weights"}, params={"top": TOP}, write=_write, rerun=_rerun,
    overlap=True)
