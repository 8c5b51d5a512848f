"""Every unit's statistics in the mining pass, as the feature dashboards of sparse
autoencoders and Network Dissection's reports show them: :func:`unit_statistics`, and the
``statistics`` method of a run (the histogram, firing frequency, mean and spread of each
unit's score, its bottom examples and examples from each band of its values). The state
and its merge laws are :mod:`featvis.methods.running_statistics`'s.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..data.stream import Data, Loading, take
from ..params import POSITIVE, SEED, Interval, Param, validated
from ..seam import Key, Probe
from ..units import Units
from .examples import K, mine
from .registry import SANITY, Method, Page
from .running_statistics import StatisticsPlan, UnitStatistics

__all__ = ["UnitStatistics", "unit_statistics", "STATISTICS"]


@validated(k=POSITIVE, bins=Interval(int, 1, 4096), bands=Interval(int, 1, 1000),
           per_band=Interval(int, 1, 1000), seed=SEED, batch_size=POSITIVE)
def unit_statistics(model: nn.Module | Probe, data: Data, layer: Key, *, k: int = 9,
                    bins: int = 64, bands: int = 10, per_band: int = 5,
                    threshold: float = 0.0, labels: torch.Tensor | None = None,
                    seed: int = 0, units: Units = None, batch_size: int = 1000,
                    loading: Loading | None = None, progress: bool = False,
                    precision: str = "float32") -> UnitStatistics:
    """Every unit's statistics over ``data`` (a tensor or a dataset) in one pass (see
    :mod:`featvis.methods.running_statistics`): top and bottom examples, histogram, firing
    frequency (share of inputs whose score is above ``threshold``), mean and standard
    deviation (of the population), examples from ``bands`` bands of values, and with
    ``labels (N,)`` (or a dataset's ``labels``) per-class means and top examples;
    ``precision`` as :func:`~featvis.top_examples`'s.

    Example:
        >>> st = unit_statistics(cnn, images, "features.3")        # doctest: +SKIP
        >>> st.histogram.shape, st.frequency[:4], st.bands.shape    # (U, 64), ..., (U, 10, 5)
    """
    seam, mined = mine(model, data, [layer], k, units, batch_size, progress, loading=loading,
                       statistics=StatisticsPlan(bins, bands, per_band, threshold, seed),
                       labels=labels, precision=precision)
    return mined[layer].statistics.result(
        data, units=mined[layer].units, activation=lambda v: seam.activation(layer, v))


# -- as a method of visualize ----------------------------------------------------------------
PARAMS = {
    "k": K,
    "bins": Param(Interval(int, 1, 4096), 64, "histogram bins of each unit's scores"),
    "bands": Param(Interval(int, 1, 1000), 10, "value bands of each unit, examples from each"),
    "per_band": Param(Interval(int, 1, 1000), 5, "examples shown from each value band"),
    "threshold": Param(Interval(float, None), 0.0,
                       "a unit fires on an input whose score is above this"),
}
BAR_HEIGHT = 24              # pixels of a histogram's tallest bar, before the run's upscale


def _compute(probe: Probe, key: Key, units: Sequence[int], *, statistics: UnitStatistics,
             **params) -> UnitStatistics:
    """The layer's statistics, gathered in the pipeline's one pass over the data (and
    handed over as ``statistics``)."""
    return statistics


def _rerun(probe: Probe, key: Key, units: torch.Tensor, *, inputs: torch.Tensor, k: int = 9,
           bins: int = 64, bands: int = 10, per_band: int = 5, threshold: float = 0.0
           ) -> torch.Tensor:
    """The bottom examples of a randomized copy (the top ones are the examples' check)."""
    return unit_statistics(probe, inputs[:SANITY["images"]], key, k=k, bins=bins, bands=bands,
                           per_band=per_band, threshold=threshold, units=units).bottom.indices


def histogram_bars(counts: torch.Tensor, edges: torch.Tensor, threshold: float,
                   height: int = BAR_HEIGHT) -> torch.Tensor:
    """Pictures ``(U, 1, height + 2, bins + 2)`` of histograms ``counts (U, bins)``: a
    black bar per bin on white, its height ``log(1 + count)`` over the unit's largest, a
    grey frame, and a grey column at the bin that holds ``threshold`` (where it is inside
    ``edges (U, bins + 1)``)."""
    n, bins = counts.shape
    scale = torch.log1p(counts.double())
    tall = (scale / scale.amax(1, keepdim=True).clamp_min(1e-12) * height).ceil()
    rows = torch.arange(height, 0, -1, dtype=torch.float64).view(1, height, 1)
    bars = torch.where(rows <= tall.unsqueeze(1), 0.0, 1.0)                 # (U, height, bins)
    level = torch.full((n, 1), float(threshold), dtype=torch.float64)
    at = torch.searchsorted(edges.contiguous(), level, right=True)[:, 0] - 1
    marked = ((at >= 0) & (at < bins)).nonzero()[:, 0]
    column = bars[marked, :, at[marked]]
    bars[marked, :, at[marked]] = torch.where(column == 1.0, 0.7, 0.35)
    framed = torch.full((n, height + 2, bins + 2), 0.5, dtype=torch.float64)
    framed[:, 1:-1, 1:-1] = bars
    framed[:, 0, 0] = 0.0                      # every picture spans black to white
    return framed.unsqueeze(1).float()


def _write(page: Page, st: UnitStatistics) -> None:
    k, per_band = page.params["k"], page.params["per_band"]
    bars = histogram_bars(st.histogram, st.edges, page.params["threshold"])
    page.section(page.tile(bars, scale="minmax", spacing=3),
                 "each unit's histogram of its scores over the data (bar heights on a log "
                 "scale; grey: the firing threshold), one tile per unit")
    bottom = page.show(st.bottom.mean)
    boxes = None if st.bottom.positions is None else \
        page.probe.regions(page.key, st.bottom.positions)
    lowest = take(page.images, st.bottom.indices)
    bands = st.bands.flip(1)                                       # the highest band first
    members = take(page.images, bands.clamp(min=0))                # (U, bands, per_band, ...)
    members[bands < 0] = 0.0
    for j in range(len(page.units)):
        info = page.detail(j)
        lo, hi = st.edges[j, 0].item(), st.edges[j, -1].item()
        info["statistics"] = {
            "frequency": round(st.frequency[j].item(), 6), "mean": round(st.mean[j].item(), 6),
            "std": round(st.std[j].item(), 6), "range": [round(lo, 6), round(hi, 6)],
            "histogram": st.histogram[j].tolist(), "below": int(st.below[j]),
            "above": int(st.above[j]), "bands": bands[j].tolist(),
            "bottom": {"values": [round(v, 6) for v in st.bottom.values[j].tolist()],
                       "indices": st.bottom.indices[j].tolist()}}
        facts = [("fires on (share of inputs)", info["statistics"]["frequency"]),
                 ("mean score", info["statistics"]["mean"]),
                 ("std of the score", info["statistics"]["std"]),
                 ("inputs below / above the range", f"{int(st.below[j])} / {int(st.above[j])}")]
        if st.class_mean is not None:
            means = st.class_mean[j].nan_to_num(-math.inf)
            info["statistics"]["class_mean"] = [None if math.isnan(v) else round(v, 6)
                                                for v in st.class_mean[j].tolist()]
            facts.append(("class with the highest mean score", int(means.argmax())))
        values = ", ".join(f"{v:.3f}" for v in st.bottom.values[j].tolist())
        page.panel(j, [
            ("histogram", page.tile(bars[j:j + 1], scale="minmax"),
             f"its scores on {st.count} inputs, from {lo:.4g} to {hi:.4g} in "
             f"{st.histogram.shape[1]} bins (heights on a log scale; grey: the threshold "
             f"{page.params['threshold']:g})", "strip"),
            ("bottom_strip", page.tile(lowest[j], scale="minmax", cols=k,
                                       boxes=None if boxes is None else boxes[j]),
             f"the {k} inputs that activate it least: {values}", "strip"),
            ("bottom_mean", page.tile(bottom[j:j + 1], scale="minmax"), "their mean", "single"),
            ("bands", page.tile(members[j].flatten(0, 1), scale="minmax", cols=per_band),
             f"inputs from each of {bands.shape[1]} bands of its values, the highest band "
             "first (black: a band with fewer inputs)", "overview")], facts, tile="histogram")
    page.figure("mean firing frequency", st.frequency.mean().item(),
                "the share of inputs on which a unit's score is above the threshold, "
                "averaged: sparse codes sit well below 1")
    page.figure("share of units that never fire", (st.frequency == 0).double().mean().item(),
                "dead units over the whole data: 0 is good")
    page.figure("mean std of the scores", st.std.mean().item(),
                "how much a unit's score varies over the data: near 0, it ignores its input")


STATISTICS = Method(
    "statistics", "Unit statistics",
    "How each unit's score spreads over the data: its histogram, how often it fires, its "
    "mean and spread, the inputs that activate it least and inputs from each band of its "
    "values, as the feature dashboards of sparse autoencoders show them.",
    _compute, requires={"examples"}, params=PARAMS, write=_write, rerun=_rerun, overlap=True,
    made_of_data=True)
