"""Every unit's statistics in one pass over the data, as the feature dashboards of sparse
autoencoders and Network Dissection's reports show them: the top and the bottom examples, a
histogram of the unit's scores, how often it fires, its mean and spread, examples drawn
from each band of its values (what it does below its top), and with labels its mean and top
examples per class.

Every statistic is of the unit's score as mining ranks it (a channel's maximum over its
positions). The histogram's range is found first, from the data's head (the first 2,000
inputs, :func:`featvis.data.stream.head`): one extra forward pass over at most 2,000 inputs,
no sketch to merge, and the same edges for every shard and rank; values outside the range
are counted below or above it. The running state, :class:`RunningStatistics`, merges
associatively and commutatively: counts, top, bottom and band members are bit-identical to a
single pass however the data is split; mean and standard deviation are accumulated in
float64 (Chan et al.'s pairwise update) and agree to about 1e-12 relative.

A band's members are the ``per_band`` examples whose value falls in the band with the
smallest hash of ``(seed, index)``, a fixed pseudo-random choice that any split of the
data makes alike (a bottom-k sketch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import stream
from ..data.stream import Data, Loading
from ..data.tensors import check_inputs
from ..errors import DataError
from ..params import POSITIVE, SEED, Interval, validated
from ..seam import Key, Probe, probe
from ..units import Units, resolve_units
from .topk import TopExamples, TopK

__all__ = ["UnitStatistics", "RunningStatistics", "unit_statistics", "band_hash"]

_EMPTY = -1                      # the index of an unfilled band slot
_MASK63 = (1 << 63) - 1


@dataclass
class UnitStatistics:
    """Per unit of ``units (U,)``, over ``count`` inputs: ``top`` and ``bottom``
    (:class:`~featvis.TopExamples`; ``bottom.values`` ascending, the most negative first),
    ``histogram (U, bins)`` of the scores over ``edges (U, bins + 1)`` with ``below`` and
    ``above (U,)`` the scores outside them, ``frequency (U,)`` the share of inputs whose score
    is above the threshold, ``mean`` and ``std (U,)`` (float64), ``bands (U, bands,
    per_band)`` example indices drawn from each band of values (``-1``: a band with fewer);
    with labels, ``class_mean (U, classes)`` (NaN for a class without inputs) and
    ``class_top (U, classes, k)`` each class's top example indices (``-1`` where it has
    fewer)."""

    top: TopExamples
    bottom: TopExamples
    edges: torch.Tensor
    histogram: torch.Tensor
    below: torch.Tensor
    above: torch.Tensor
    frequency: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    bands: torch.Tensor
    count: int
    units: torch.Tensor
    class_mean: torch.Tensor | None = None
    class_top: torch.Tensor | None = None


def band_hash(indices: torch.Tensor, seed: int) -> torch.Tensor:
    """A 63-bit hash of each example index under ``seed``: splitmix64's finalizer of
    ``index + golden * (seed + 1)`` (a bijection of 64-bit integers), its top bit dropped."""
    x = indices.to(torch.int64) + _signed(0x9E3779B97F4A7C15 * (seed + 1))
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = (x ^ _shift_right(x, shift)) * _signed(factor)
    return (x ^ _shift_right(x, 31)) & _MASK63


def _signed(value: int) -> int:
    """``value`` modulo 2**64 as a signed 64-bit integer (how int64 arithmetic wraps)."""
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(x: torch.Tensor, shift: int) -> torch.Tensor:
    """The logical right shift of int64 ``x`` (torch's ``>>`` keeps the sign)."""
    return (x >> shift) & ((1 << (64 - shift)) - 1)


def _smallest(keys: torch.Tensor, indices: torch.Tensor, m: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``m`` entries of each row with the smallest ``(key, index)``, in that order."""
    by_index = indices.argsort(dim=1, stable=True)
    by_key = keys.gather(1, by_index).sort(dim=1, stable=True).indices[:, :m]
    take = by_index.gather(1, by_key)
    return keys.gather(1, take), indices.gather(1, take)


class RunningStatistics:
    """The mergeable state behind :func:`unit_statistics`, for ``units`` units with
    histogram ``edges (U, bins + 1)`` (ascending per unit), ``k`` top and bottom examples,
    ``bands`` bands of ``per_band`` examples, scores above ``threshold`` counted as firing,
    ``classes`` labels (0: none) and ``position_axes`` as :class:`TopK`."""

    def __init__(self, edges: torch.Tensor, k: int = 9, bands: int = 10, per_band: int = 5,
                 threshold: float = 0.0, seed: int = 0, classes: int = 0,
                 position_axes: int = 0) -> None:
        self.edges = edges.to(torch.float64)
        units, device = edges.shape[0], edges.device
        self.k, self.n_bands, self.per_band = k, bands, per_band
        self.threshold, self.seed, self.classes = float(threshold), seed, classes
        self.top = TopK(units, k, position_axes, device=device)
        self.bottom = TopK(units, k, position_axes, device=device)
        self.counts = torch.zeros(units, edges.shape[1] + 1, dtype=torch.int64, device=device)
        self.firing = torch.zeros(units, dtype=torch.int64, device=device)
        self.count = 0
        self.mean = torch.zeros(units, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(units, dtype=torch.float64, device=device)
        self.band_edges = _edges(self.edges[:, 0], self.edges[:, -1], bands)
        self.band_keys = torch.full((units, bands, per_band), _MASK63, dtype=torch.int64,
                                    device=device)
        self.band_indices = torch.full_like(self.band_keys, _EMPTY)
        self.class_sum = torch.zeros(units, classes, dtype=torch.float64, device=device)
        self.class_count = torch.zeros(classes, dtype=torch.int64, device=device)
        self.class_top = [TopK(units, k, position_axes, device=device) for _ in range(classes)]

    @property
    def units(self) -> int:
        return self.edges.shape[0]

    def update(self, values: torch.Tensor, indices: torch.Tensor,
               positions: torch.Tensor | None = None, labels: torch.Tensor | None = None
               ) -> None:
        """Add a batch: ``values (B, U)``, distinct global ``indices (B,)`` and, as for
        :meth:`TopK.update`, ``positions (B, U, P)``; ``labels (B,)`` in ``0..classes - 1``
        with classes."""
        self.top.update(values, indices, positions)          # checks values and indices
        self.bottom.update(-values, indices, positions)
        v = values.to(torch.float64)
        # Bins by the reported edges: bin j holds edges[j] <= v < edges[j + 1], the last
        # also v == edges[-1]; column 0 counts the values below, the last those above.
        bins = self.edges.shape[1] - 1
        column = torch.searchsorted(self.edges, v.t().contiguous(), right=True)
        column = torch.where(v.t() == self.edges[:, -1:], bins, column)
        self.counts.scatter_add_(1, column, torch.ones_like(column))
        self.firing += (v > self.threshold).sum(0)
        n = v.shape[0]
        batch_mean = v.mean(0)
        batch_m2 = ((v - batch_mean) ** 2).sum(0)
        self._combine(n, batch_mean, batch_m2)
        self._add_bands(v, indices.to(self.edges.device, torch.int64))
        if self.classes:
            self._add_classes(values, v, indices, positions, labels)

    def _combine(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Chan et al.'s update of the running mean and sum of squared deviations."""
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total

    def _add_bands(self, v: torch.Tensor, indices: torch.Tensor) -> None:
        band = torch.searchsorted(self.band_edges, v.t().contiguous(), right=True) - 1
        band = torch.where(v.t() == self.band_edges[:, -1:], self.n_bands - 1, band)
        keys = band_hash(indices, self.seed).expand(self.units, -1)
        for b in range(self.n_bands):
            inside = band == b
            batch_keys = torch.where(inside, keys, _MASK63)
            batch_indices = torch.where(inside, indices, _EMPTY)
            self.band_keys[:, b], self.band_indices[:, b] = _smallest(
                torch.cat([self.band_keys[:, b], batch_keys], 1),
                torch.cat([self.band_indices[:, b], batch_indices], 1), self.per_band)

    def _add_classes(self, values, v, indices, positions, labels) -> None:
        if labels is None:
            raise DataError("labels: the statistics were set up for classes; give each "
                            "batch's labels")
        labels = torch.as_tensor(labels, device=self.edges.device).long()
        if labels.shape != (v.shape[0],) or (labels < 0).any() or (labels >= self.classes).any():
            raise DataError(f"labels must be ({v.shape[0]},) integers in 0..{self.classes - 1}")
        self.class_sum.index_add_(1, labels, v.t())
        self.class_count += torch.bincount(labels, minlength=self.classes)
        for c in labels.unique().tolist():
            rows = labels == c
            self.class_top[c].update(values[rows], indices[rows],
                                     None if positions is None else positions[rows])

    def merge(self, other: RunningStatistics) -> RunningStatistics:
        """A new state holding both (neither is changed); both must share their settings
        and edges (bit for bit)."""
        if not isinstance(other, RunningStatistics):
            raise TypeError(f"can only merge RunningStatistics, got {type(other).__name__}")
        for name in ("k", "n_bands", "per_band", "threshold", "seed", "classes"):
            if getattr(self, name) != getattr(other, name):
                raise DataError(f"cannot merge statistics with different {name}")
        if not torch.equal(self.edges, other.edges):
            raise DataError("cannot merge statistics with different histogram edges")
        out = RunningStatistics.__new__(RunningStatistics)
        out.__dict__.update(self.__dict__)
        out.top, out.bottom = self.top.merge(other.top), self.bottom.merge(other.bottom)
        out.counts, out.firing = self.counts + other.counts, self.firing + other.firing
        out.count, out.mean, out.m2 = self.count, self.mean, self.m2
        if other.count:
            out._combine(other.count, other.mean, other.m2)
        out.band_keys, out.band_indices = self.band_keys.clone(), self.band_indices.clone()
        for b in range(self.n_bands):
            out.band_keys[:, b], out.band_indices[:, b] = _smallest(
                torch.cat([self.band_keys[:, b], other.band_keys[:, b]], 1),
                torch.cat([self.band_indices[:, b], other.band_indices[:, b]], 1),
                self.per_band)
        out.class_sum = self.class_sum + other.class_sum
        out.class_count = self.class_count + other.class_count
        out.class_top = [a.merge(b) for a, b in zip(self.class_top, other.class_top)]
        return out

    def result(self, images: Data, *, units: torch.Tensor | None = None,
               activation=None) -> UnitStatistics:
        """The :class:`UnitStatistics` of this state; ``images`` gives the top and bottom
        examples' means (see :meth:`TopK.result`)."""
        if self.count < self.k:
            raise DataError(f"k={self.k} is larger than the number of inputs ({self.count})")
        act = activation or (lambda v: v)
        top = self.top.result(images, units=units, activation=act)
        bottom = self.bottom.result(images, units=units, activation=lambda v: act(-v))
        class_mean = class_top = None
        if self.classes:
            class_mean = self.class_sum / self.class_count.to(torch.float64)
            class_top = torch.full((self.units, self.classes, self.k), _EMPTY,
                                   dtype=torch.int64, device=self.edges.device)
            for c, state in enumerate(self.class_top):
                class_top[:, c, :state.count] = state.indices
        return UnitStatistics(
            top=top, bottom=bottom, edges=self.edges.clone(),
            histogram=self.counts[:, 1:-1].clone(), below=self.counts[:, 0].clone(),
            above=self.counts[:, -1].clone(), frequency=self.firing / self.count,
            mean=self.mean.clone(), std=(self.m2.clamp(min=0) / self.count).sqrt(),
            bands=self.band_indices.clone(), count=self.count, units=top.units,
            class_mean=class_mean, class_top=class_top)


def _edges(lows: torch.Tensor, highs: torch.Tensor, bins: int) -> torch.Tensor:
    """``bins + 1`` equal-width edges per unit from ``lows`` to ``highs`` (float64); a
    unit whose range is one value gets that value +- 0.5."""
    flat = highs <= lows
    lows, highs = torch.where(flat, lows - 0.5, lows), torch.where(flat, highs + 0.5, highs)
    steps = torch.arange(bins + 1, dtype=torch.float64, device=lows.device) / bins
    edges = lows[:, None] + (highs - lows)[:, None] * steps
    edges[:, -1] = highs
    return edges


@validated(k=POSITIVE, bins=Interval(int, 1, 4096), bands=Interval(int, 1, 1000),
           per_band=Interval(int, 1, 1000), seed=SEED, batch_size=POSITIVE)
def unit_statistics(model: nn.Module | Probe, data: Data, layer: Key, *, k: int = 9,
                    bins: int = 64, bands: int = 10, per_band: int = 5,
                    threshold: float = 0.0, labels: torch.Tensor | None = None,
                    seed: int = 0, units: Units = None, batch_size: int = 1000,
                    loading: Loading | None = None, progress: bool = False
                    ) -> UnitStatistics:
    """Every unit's statistics over ``data`` (a tensor or a dataset) in one pass (see the
    module's notes): top and bottom examples, histogram, firing frequency (share of inputs
    whose score is above ``threshold``), mean and standard deviation (of the population),
    examples from ``bands`` bands of values, and with ``labels (N,)`` (or a dataset's
    ``labels``) per-class means and top examples.

    Example:
        >>> st = unit_statistics(cnn, images, "features.3")        # doctest: +SKIP
        >>> st.histogram.shape, st.frequency[:4], st.bands.shape    # (U, 64), ..., (U, 10, 5)
    """
    seam = probe(model, stream.input_shape(data))
    info = seam.layer(layer)
    ids = resolve_units(units, info.units, seam.device)
    n = stream.count(data)
    if n < k:
        raise ValueError(f"k={k} is larger than the number of inputs ({n})")
    if labels is None and isinstance(getattr(data, "labels", None), torch.Tensor):
        labels = data.labels
    classes = 0
    if labels is not None:
        labels = torch.as_tensor(labels).long()
        if labels.shape != (n,) or labels.min() < 0:
            raise ValueError(f"labels must be ({n},) integers >= 0, got shape "
                             f"{tuple(labels.shape)}")
        classes = int(labels.max()) + 1
    chosen = {layer: None if units is None else ids}

    def scores(batch: torch.Tensor, locate: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's scores and, with ``locate``, their positions ``(B, U, P)``."""
        nowhere = {layer: lambda v: v.new_empty(v.shape[1], 0, dtype=torch.long)}
        found = seam.scores(check_inputs(batch, seam.input_shape).to(seam.device, seam.dtype),
                            chosen, shortlists=None if locate else nowhere)[layer]
        if found.positions is None or not locate:
            return found.values, None
        return found.values, torch.stack(torch.unravel_index(found.positions,
                                                             info.unit_shape), -1)

    with torch.no_grad():
        head = stream.head(data)
        lows, highs = [], []
        for start in range(0, len(head), batch_size):      # the histogram's range
            values = scores(head[start:start + batch_size], locate=False)[0].double()
            lows.append(values.amin(0))
            highs.append(values.amax(0))
        state = RunningStatistics(_edges(torch.stack(lows).amin(0), torch.stack(highs).amax(0),
                                         bins), k, bands, per_band, threshold, seed, classes,
                                  len(info.unit_shape))
        bar = tqdm(total=n, desc="statistics", unit="input", unit_scale=True,
                   disable=not progress, leave=False)
        with bar:
            for start, batch in stream.batches(data, batch_size, loading=loading,
                                               device=seam.device):
                values, positions = scores(batch)
                indices = torch.arange(start, start + len(batch), device=values.device)
                state.update(values, indices, positions,
                             None if labels is None else labels[start:start + len(batch)])
                bar.update(len(batch))
    return state.result(data, units=ids, activation=lambda v: seam.activation(layer, v))
