"""First-layer filters of whitened inputs in three views (Lee, Ekanadham & Ng 2008): as
learned in the whitened space, as the pixel pattern whose whitened version the filter is, and
as the receptive field it applies to raw pixels; with the figures that say whether they look
like V1 simple cells (localized, against random filters, and fitted by Gabor functions)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..figures import gabor_fit, locality, random_locality
from ..io.safejson import json_float
from ..seam import Key, Probe
from .registry import Method, Page

__all__ = ["FilterViews", "filter_views", "FILTER_VIEWS"]

VIEWS = {"learned": "as learned: the weights on the whitened input",
         "pattern": "pattern: the pixel patch whose whitened version is the filter",
         "receptive_field": "receptive field: the filter applied to raw pixels"}


@dataclass
class FilterViews:
    """Every first-layer filter ``(K, 1, side, side)`` in each view of :data:`VIEWS`, and as
    the model holds it; ``images``: the learned view of ``units``."""

    views: dict[str, torch.Tensor]
    filters: torch.Tensor            # (K, side, side), as the model holds them
    units: list[int]

    @property
    def images(self) -> torch.Tensor:
        return self.views["learned"][self.units]


def _square(pictures: torch.Tensor) -> torch.Tensor:
    """Flat ``(N, D)`` square pictures as ``(N, 1, side, side)``."""
    side = math.isqrt(pictures.shape[1])
    return pictures.reshape(len(pictures), 1, side, side)


def filter_views(probe: Probe, key: Key, units: Sequence[int]) -> FilterViews:
    """The three views of the first layer ``key``'s filters (its inputs must be whitened)."""
    weights = probe.filters(key).flatten(1)
    views = probe.whitening().views(weights)
    return FilterViews({name: _square(pictures) for name, pictures in views.items()},
                       _square(weights)[:, 0], list(units))


def _write(page: Page, result: FilterViews) -> None:
    shown = {name: pictures[page.units] for name, pictures in result.views.items()}
    for name, pictures in shown.items():
        page.section(page.tile(pictures), f"{VIEWS[name]}; one tile per unit",
                     name=f"filter_views_{name}")
    for j in range(len(page.units)):
        page.panel(j, [(f"filter_{name}", page.tile(pictures[j:j + 1]), VIEWS[name], "single")
                       for name, pictures in shown.items()])
    filters = result.filters
    fit = gabor_fit(filters)
    baseline = random_locality(filters.shape, seed=page.seed)
    page.figure("locality (median energy share near the peak)", locality(filters),
                "how much of a filter's energy lies near its peak: compare it with random "
                "filters' below; well above them means local, edge-like filters")
    page.figure("locality of random filters of this size", baseline,
                "the locality of random filters: the baseline of the figure above")
    page.figure(f"share of Gabor fits with R^2 >= {fit.threshold:g}", fit.share,
                "filters a Gabor function describes well: near 1 for natural-image filters")
    page.figure("orientation spread of the Gabor fits (circular variance)",
                fit.orientation_spread,
                "near 1: the fitted filters cover every orientation; near 0: one only")
    page.figure("frequency spread of the Gabor fits (IQR, cycles/pixel)", fit.frequency_spread,
                "how many spatial frequencies the fitted filters cover: 0 means one only")
    for j, i in enumerate(page.units):
        page.detail(j)["filter_views"] = {"gabor_r2": json_float(fit.r2[i].item())}
    page.keep(shown["learned"])


def _rerun(probe: Probe, key: Key, units: torch.Tensor) -> torch.Tensor:
    return probe.filters(key)[units]


FILTER_VIEWS = Method(
    "filter_views", "First-layer filters: learned, pattern, receptive field",
    "For whitened inputs (natural-image patches; Lee, Ekanadham & Ng 2008): each first-layer "
    "filter as learned in the whitened space, as the pixel pattern whose whitened version it "
    "is, and as the receptive field it applies to raw pixels; its figures say whether they "
    "look like V1 simple cells: localized (energy near the peak, against random filters) and "
    "fitted by Gabor functions.",
    filter_views, requires={"whitened", "filters"}, write=_write, rerun=_rerun)
