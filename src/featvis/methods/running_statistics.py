"""The mergeable state behind every unit's statistics (:func:`featvis.unit_statistics`, the
``statistics`` method of a run), gathered in the mining pass beside the top examples: the
bottom examples, a histogram of each unit's scores, how often it fires, its mean and
spread, examples from each band of its values, and with labels its mean and top examples
per class.

Every statistic is of the unit's score as mining ranks it (a channel's maximum over its
positions). The histogram's range is fixed before the pass, from the data's head (the first
2,000 inputs, :func:`featvis.data.stream.head`): one extra forward pass over at most 2,000
inputs, no sketch to merge, and the same edges for every shard and rank; values outside the
range are counted below or above it. :class:`RunningStatistics` merges associatively and
commutatively: counts, top, bottom and band members are bit-identical to a single pass
however the data is split; mean and standard deviation are accumulated in float64 (Chan et
al.'s pairwise update) and agree to about 1e-12 relative.

A band's members are the ``per_band`` examples whose value falls in the band with the
smallest hash of ``(seed, index)``, a fixed pseudo-random choice that any split of the
data makes alike (a bottom-k sketch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from ..data.stream import Data, count
from ..errors import DataError
from ..io.fingerprint import fingerprint
from ..params import SEED, Interval, validated
from .topk import TopExamples, TopK, entries_problem

__all__ = ["StatisticsPlan", "UnitStatistics", "RunningStatistics", "band_hash",
           "histogram_edges", "class_labels", "top_of",
           "plan_record", "MAX_CLASSES"]

MAX_CLASSES = 100                # classes with statistics of their own (more: none per class)
_EMPTY = -1                      # the index of an unfilled band slot
_MASK63 = (1 << 63) - 1
Locate = Callable[[torch.Tensor], torch.Tensor]    # batch rows (U, m) -> positions (U, m, P)


@dataclass(frozen=True)
class StatisticsPlan:
    """Which statistics to gather beside the top examples: a histogram of ``bins`` bins,
    ``bands`` bands of ``per_band`` examples drawn under ``seed``, scores above
    ``threshold`` counted as firing."""

    bins: int = 64
    bands: int = 10
    per_band: int = 5
    threshold: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_plan(**asdict(self))

    def record(self) -> dict:
        """As JSON (what shards and mining states record)."""
        return asdict(self)


@validated(bins=Interval(int, 1, 4096), bands=Interval(int, 1, 1000),
           per_band=Interval(int, 1, 1000), seed=SEED,
           threshold=Interval(float, None))
def _check_plan(bins: int, bands: int, per_band: int, threshold: float, seed: int) -> None:
    """Refuse settings outside their declarations."""


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
    """The mergeable state of every unit's statistics, for ``units`` units with histogram
    ``edges (U, bins + 1)`` (ascending per unit), ``k`` top and bottom examples, ``bands``
    bands of ``per_band`` examples, scores above ``threshold`` counted as firing,
    ``classes`` labels (0: none) and ``position_axes`` as :class:`TopK`. Its ``top`` is
    what mining keeps: a run mines its examples and statistics in one pass."""

    TENSORS = ("edges", "counts", "firing", "mean", "m2", "band_keys", "band_indices",
               "class_sum", "class_count")

    def __init__(self, edges: torch.Tensor, k: int = 9, bands: int = 10, per_band: int = 5,
                 threshold: float = 0.0, seed: int = 0, classes: int = 0,
                 position_axes: int = 0, *, dtype: torch.dtype = torch.float32) -> None:
        self.edges = edges.to(torch.float64)
        units, device = edges.shape[0], edges.device
        self.k, self.n_bands, self.per_band = k, bands, per_band
        self.threshold, self.seed, self.classes = float(threshold), seed, classes
        self.top = TopK(units, k, position_axes, device=device, dtype=dtype)
        self.bottom = TopK(units, k, position_axes, device=device, dtype=dtype)
        self.counts = torch.zeros(units, edges.shape[1] + 1, dtype=torch.int64, device=device)
        self.firing = torch.zeros(units, dtype=torch.int64, device=device)
        self.count = 0
        self.mean = torch.zeros(units, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(units, dtype=torch.float64, device=device)
        self.band_edges = histogram_edges(self.edges[:, 0], self.edges[:, -1], bands)
        self.band_keys = torch.full((units, bands, per_band), _MASK63, dtype=torch.int64,
                                    device=device)
        self.band_indices = torch.full_like(self.band_keys, _EMPTY)
        self.class_sum = torch.zeros(units, classes, dtype=torch.float64, device=device)
        self.class_count = torch.zeros(classes, dtype=torch.int64, device=device)
        self.class_top = [TopK(units, k, position_axes, device=device, dtype=dtype)
                          for _ in range(classes)]
        self._rows: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def units(self) -> int:
        return self.edges.shape[0]

    @property
    def plan(self) -> StatisticsPlan:
        """The settings this state gathers (besides its edges, ``k`` and classes)."""
        return StatisticsPlan(self.edges.shape[1] - 1, self.n_bands, self.per_band,
                              self.threshold, self.seed)

    def shortlist(self, values: torch.Tensor) -> torch.Tensor:
        """The rows ``(U, m)`` of a batch ``values (B, U)`` whose positions :meth:`update`
        with ``locate`` needs: those that can enter the top or the bottom (every row where
        classes are kept: any row may enter its class's top)."""
        if self.classes:
            self._rows = None
            return torch.arange(values.shape[0], device=values.device).expand(self.units, -1)
        self._rows = self.top.candidates(values), self.bottom.candidates(-values)
        return torch.cat(self._rows, 1)

    def update(self, values: torch.Tensor, indices: torch.Tensor,
               positions: torch.Tensor | None = None, labels: torch.Tensor | None = None, *,
               locate: Locate | None = None) -> None:
        """Add a batch: ``values (B, U)``, distinct global ``indices (B,)`` and, as for
        :meth:`TopK.update`, ``positions (B, U, P)`` or ``locate`` (the positions of the
        rows :meth:`shortlist` named for this batch, indices increasing); ``labels (B,)``
        in ``0..classes - 1`` with classes."""
        rows, self._rows = self._rows, None
        if locate is None:
            self.top.update(values, indices, positions)          # checks values and indices
            self.bottom.update(-values, indices, positions)
        else:
            self.top._update(values, indices, None, locate, None if rows is None else rows[0])
            self.bottom._update(-values, indices, None, locate,
                                None if rows is None else rows[1])
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
            self._add_classes(values, v, indices, positions, labels, locate)

    def _combine(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Chan et al.'s update of the running mean and sum of squared deviations."""
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total

    def _add_bands(self, v: torch.Tensor, indices: torch.Tensor) -> None:
        """Each band's ``per_band`` smallest keys among its members and the batch's: the
        batch sorted once by (band, key) per unit, each band's first entries taken."""
        (u, n), bands, per = v.t().shape, self.n_bands, self.per_band
        band = torch.searchsorted(self.band_edges, v.t().contiguous(), right=True) - 1
        band = torch.where(v.t() == self.band_edges[:, -1:], bands - 1, band)  # -1, bands: out
        keys = band_hash(indices, self.seed)
        by_key = keys.argsort().expand(u, -1)                 # distinct keys: one order
        order = by_key.gather(1, band.gather(1, by_key).argsort(dim=1, stable=True))
        grouped = band.gather(1, order)                        # (U, B) ascending bands
        ids = torch.arange(bands, device=v.device)
        first = torch.searchsorted(grouped, ids.expand(u, -1).contiguous())    # (U, bands)
        slot = first.unsqueeze(2) + torch.arange(per, device=v.device)        # (U, bands, m)
        held = slot.clamp(max=n - 1).flatten(1)
        column = order.gather(1, held).view(u, bands, per)
        inside = (slot < n) & (grouped.gather(1, held).view(u, bands, per) == ids.view(1, -1, 1))
        self.band_keys, self.band_indices = self._smallest_per_band(
            torch.where(inside, keys[column], _MASK63),
            torch.where(inside, indices[column], _EMPTY))

    def _smallest_per_band(self, keys: torch.Tensor, indices: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each band's ``per_band`` smallest (key, index) of its members and the candidates
        ``(U, bands, m)``."""
        u, bands = keys.shape[:2]
        keys, indices = _smallest(torch.cat([self.band_keys, keys], 2).flatten(0, 1),
                                  torch.cat([self.band_indices, indices], 2).flatten(0, 1),
                                  self.per_band)
        return keys.view(u, bands, -1), indices.view(u, bands, -1)

    def _add_classes(self, values, v, indices, positions, labels, locate) -> None:
        if labels is None:
            raise DataError("labels: the statistics were set up for classes; give each "
                            "batch's labels")
        labels = torch.as_tensor(labels, device=self.edges.device).long()
        if labels.shape != (v.shape[0],) or (labels < 0).any() or (labels >= self.classes).any():
            raise DataError(f"labels must be ({v.shape[0]},) integers in 0..{self.classes - 1}")
        self.class_sum.index_add_(1, labels, v.t())
        self.class_count += torch.bincount(labels, minlength=self.classes)
        for c in labels.unique().tolist():
            rows = (labels == c).nonzero()[:, 0]
            if locate is None:
                self.class_top[c].update(values[rows], indices[rows],
                                         None if positions is None else positions[rows])
            else:
                self.class_top[c]._update(values[rows], indices[rows], None,
                                          lambda columns, rows=rows: locate(rows[columns]))

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
        out = self._copy()
        out.top, out.bottom = self.top.merge(other.top), self.bottom.merge(other.bottom)
        out.counts, out.firing = self.counts + other.counts, self.firing + other.firing
        if other.count:
            out._combine(other.count, other.mean, other.m2)
        out.band_keys, out.band_indices = self._smallest_per_band(other.band_keys,
                                                                  other.band_indices)
        out.class_sum = self.class_sum + other.class_sum
        out.class_count = self.class_count + other.class_count
        out.class_top = [a.merge(b) for a, b in zip(self.class_top, other.class_top)]
        return out

    def _copy(self) -> RunningStatistics:
        out = RunningStatistics.__new__(RunningStatistics)
        out.__dict__.update(self.__dict__)
        out.class_top = list(self.class_top)
        return out

    # -- as tensors (shard files, mining states, ranks) ------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the state by name (the tops' as ``top.values`` ...,
        ``class3.indices`` ...), and ``count`` (0-d): what :meth:`from_tensors` reads."""
        out = {name: getattr(self, name) for name in self.TENSORS}
        out["count"] = torch.tensor(self.count, dtype=torch.int64)
        tops = {"top": self.top, "bottom": self.bottom,
                **{f"class{c}": t for c, t in enumerate(self.class_top)}}
        for prefix, state in tops.items():
            for name in ("values", "indices", "positions"):
                out[f"{prefix}.{name}"] = getattr(state, name)
        return {name: t.detach().cpu().contiguous() for name, t in out.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], k: int, plan: StatisticsPlan,
                     classes: int, position_axes: int) -> RunningStatistics:
        """The state whose :meth:`tensors` these are, for those settings; a one-line
        ``ValueError`` naming what does not fit them (a file's tensors are read as
        hostile: names, dtypes, shapes, sums, band members against their hash)."""
        edges = tensors.get("edges")
        if not (isinstance(edges, torch.Tensor) and edges.dtype == torch.float64
                and edges.dim() == 2 and edges.shape[1] == plan.bins + 1):
            raise ValueError(f"edges must be float64 (U, {plan.bins + 1})")
        if not (edges.isfinite().all() and (edges[:, 1:] > edges[:, :-1]).all()):
            raise ValueError("edges must be finite and increasing")
        values = tensors.get("top.values")
        dtype = values.dtype if isinstance(values, torch.Tensor) and \
            values.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) \
            else torch.float32
        u, i64, f64 = edges.shape[0], torch.int64, torch.float64
        expected = {"edges": (f64, (u, plan.bins + 1)), "counts": (i64, (u, plan.bins + 2)),
                    "firing": (i64, (u,)), "mean": (f64, (u,)), "m2": (f64, (u,)),
                    "band_keys": (i64, (u, plan.bands, plan.per_band)),
                    "band_indices": (i64, (u, plan.bands, plan.per_band)),
                    "class_sum": (f64, (u, classes)), "class_count": (i64, (classes,)),
                    "count": (i64, ())}
        tops = ["top", "bottom", *(f"class{c}" for c in range(classes))]
        names = set(expected) | {f"{p}.{n}" for p in tops
                                 for n in ("values", "indices", "positions")}
        if set(tensors) != names:
            odd = sorted(set(tensors) ^ names)[0]
            raise ValueError(f"tensor {odd!r} is {'unexpected' if odd in tensors else 'missing'}")
        for name, (kind, shape) in expected.items():       # before anything is allocated
            t = tensors[name]
            if t.dtype != kind or tuple(t.shape) != shape:
                raise ValueError(f"{name} must be {kind} {shape}, found {t.dtype} "
                                 f"{tuple(t.shape)}")
        state = cls(edges, k, plan.bands, plan.per_band, plan.threshold, plan.seed, classes,
                    position_axes, dtype=dtype)
        for name in cls.TENSORS:
            setattr(state, name, tensors[name].clone())
        state.count = int(tensors["count"])
        for prefix, top in zip(tops, [state.top, state.bottom, *state.class_top]):
            _fill(top, {n: tensors[f"{prefix}.{n}"] for n in ("values", "indices", "positions")},
                    prefix)
        state._check()
        return state

    def _check(self) -> None:
        """``ValueError`` unless the state's parts agree with each other."""
        n = self.count
        if n < 0 or (self.counts < 0).any() or (self.counts > n).any() or \
                (self.counts.sum(1) != n).any():      # each <= n: the sums cannot wrap
            raise ValueError(f"every unit's histogram counts must sum to count={n}")
        if (self.firing < 0).any() or (self.firing > n).any():
            raise ValueError("firing must be in 0..count")
        if not (self.mean.isfinite().all() and self.m2.isfinite().all() and (self.m2 >= 0).all()):
            raise ValueError("mean and m2 must be finite, m2 >= 0")
        if self.classes and ((self.class_count < 0).any() or self.class_count.sum() != n
                             or not self.class_sum.isfinite().all()):
            raise ValueError("class counts must sum to count, class sums be finite")
        if self.top.count != min(self.k, n) or self.bottom.count != self.top.count:
            raise ValueError(f"top and bottom must hold min(k, count) = {min(self.k, n)}")
        if self.classes and ((self.class_count > n).any() or any(
                t.count != min(self.k, int(c)) for t, c in zip(self.class_top, self.class_count))):
            raise ValueError("each class's top must hold min(k, its count)")
        members = self.band_indices.sort(2).values
        if ((members[..., 1:] == members[..., :-1]) & (members[..., 1:] >= 0)).any():
            raise ValueError("a band holds an example twice")
        filled = self.band_indices != _EMPTY
        if (self.band_indices < _EMPTY).any() or not torch.equal(
                torch.where(filled, band_hash(self.band_indices.clamp(min=0), self.seed),
                            _MASK63), self.band_keys):
            raise ValueError("band keys must be the hashes of their members")

    # -- results -----------------------------------------------------------------------------
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


def top_of(state: TopK | RunningStatistics) -> TopK:
    """A layer's top-k as mining keeps it: on its own, or as its statistics' top."""
    return state.top if isinstance(state, RunningStatistics) else state


def class_labels(images: Data, labels: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, int]:
    """The labels of the statistics' classes (given, or a dataset's ``labels``) and their
    number (0: none; also above :data:`MAX_CLASSES`, where no per-class statistics are
    kept); ``ValueError`` unless one integer >= 0 per input."""
    if labels is None and isinstance(getattr(images, "labels", None), torch.Tensor):
        labels = images.labels
    if labels is None:
        return None, 0
    n = count(images)
    labels = torch.as_tensor(labels)
    if labels.shape != (n,) or labels.is_floating_point() or labels.min() < 0:
        raise ValueError(f"labels must be ({n},) integers >= 0, got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    classes = int(labels.max()) + 1
    return (labels.long(), classes) if classes <= MAX_CLASSES else (None, 0)


def plan_record(plan: StatisticsPlan, labels: torch.Tensor | None, classes: int) -> dict:
    """What shards and mining states record of the statistics they gather: the plan, the
    classes and the labels' fingerprint (two labellings never mix)."""
    return {**plan.record(), "classes": classes,
            "labels_sha256": None if labels is None else fingerprint({"labels": labels})}


def _fill(state: TopK, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Put a top-k's tensors into ``state`` after checking them as :meth:`TopK.load` does."""
    values, indices, positions = (tensors[n] for n in ("values", "indices", "positions"))
    u, p = state.units, state.position_axes
    n = values.shape[1] if values.dim() == 2 else -1
    if not (values.dtype == state.dtype and values.shape == (u, n) and 0 <= n <= state.k
            and indices.dtype == torch.long and indices.shape == (u, n)
            and positions.dtype == torch.long and positions.shape == (u, n, p)):
        raise ValueError(f"{prefix}: values, indices and positions must be ({u}, n <= "
                         f"{state.k}[, {p}]) {state.dtype} and int64")
    problem = entries_problem(values, indices, positions)
    if problem:
        raise ValueError(f"{prefix}: {problem}")
    state.values, state.indices, state.positions = values, indices, positions


def histogram_edges(lows: torch.Tensor, highs: torch.Tensor, bins: int) -> torch.Tensor:
    """``bins + 1`` equal-width edges per unit from ``lows`` to ``highs`` (as float64); a
    unit whose range is one value gets that value +- 0.5."""
    lows, highs = lows.to(torch.float64), highs.to(torch.float64)
    flat = highs <= lows
    lows, highs = torch.where(flat, lows - 0.5, lows), torch.where(flat, highs + 0.5, highs)
    steps = torch.arange(bins + 1, dtype=torch.float64, device=lows.device) / bins
    edges = lows[:, None] + (highs - lows)[:, None] * steps
    edges[:, -1] = highs
    return edges
