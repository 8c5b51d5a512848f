"""A mergeable top-k per unit: the state behind dataset examples, in one process or many.

:class:`TopK` keeps, for each of ``units`` units, the best ``k`` entries (value, global
example index, position) seen so far, in one total order: value descending, then example
index ascending. A unit never holds the same example twice (see below), so this order is
strict and the position (where on its map or token sequence a unit took the value;
nothing for a dense unit) never needs to break a tie. The k best of a set are therefore one
fixed set, whatever the batches it came in, however it was split into shards and in
whichever order or tree the shards are merged: :meth:`TopK.merge` is associative and
commutative and gives, bit for bit, what a single pass over all the data gives (values are
only ever selected, never computed).

Each global example index must be counted once: the distributed design gives each index to
one shard. A repeated index is an error, refused with a :class:`~featvis.errors.DataError`
wherever it is cheap to see: inside a batch, and between a unit's kept entries and the
candidates that meet them (an update's batch, the other side of a merge). A repeat that
neither side keeps for any unit cannot be seen and does no harm to the result.

States are saved as safetensors with JSON metadata (``featvis.topk/2``; the ``/1`` files of
featvis 0.x kept two position columns for every unit and are refused: mine again); :meth:`TopK.load`
checks a file it did not necessarily write (header size, dtypes, shapes, ranges, order)
before trusting it, and never unpickles.
"""

from __future__ import annotations

import json
import os
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from .._version import __version__
from ..data.stream import Data, count, is_dataset, take
from ..errors import CheckpointError, DataError, first_line, is_int
from ..params import check_int
from ..io.fileio import atomic_write_bytes
from ..io.safetensors_file import featvis_metadata, read_safetensors

__all__ = ["TopK", "TopExamples", "FORMAT", "MAX_HEADER_BYTES", "entries_problem"]

FORMAT = "featvis.topk/2"
MAX_HEADER_BYTES = 4 * 2**20      # a real header is well under a kB, plus the caller's info
MAX_UNITS_OR_K = 2**40            # what a file may claim for units or k
MAX_POSITION_AXES = 8             # what a file may claim for a unit's position axes
VALUE_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
                "F64": torch.float64}
NAMES = ("values", "indices", "positions")
UNIT_CHUNK = 256                  # units whose k inputs are gathered at once for the mean


@dataclass
class TopExamples:
    """``values (U, k)`` activations in descending order, ``indices (U, k)`` into the data,
    ``mean (U, *input_shape)`` the plain mean of each unit's k inputs, ``units (U,)``, and
    for units with positions ``positions (U, k, P)``: where in the layer's output each
    maximum is, one column per position axis (a channel's map: row and column, ``P = 2``;
    a feature over tokens: the token, ``P = 1``); ``None`` for dense units."""

    values: torch.Tensor
    indices: torch.Tensor
    mean: torch.Tensor
    units: torch.Tensor
    positions: torch.Tensor | None = None

    @property
    def images(self) -> torch.Tensor:
        """The method's pictures: the mean of each unit's top examples."""
        return self.mean


def _select_topk(values: torch.Tensor, k: int) -> torch.Tensor:
    """Positions ``(U, k)``, ascending, of the k largest entries per row; among entries equal
    to the k-th largest value the earliest positions win."""
    kth = values.topk(k, dim=1, sorted=False).values.min(1, keepdim=True).values
    greater = values > kth
    needed = k - greater.sum(1, keepdim=True)
    tied = values == kth
    chosen = greater | (tied & (tied.cumsum(1) <= needed))
    return chosen.nonzero()[:, 1].view(values.shape[0], k)


def _batch_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Like :func:`_select_topk` on ``scores (U, B)``, but with a fast ``topk`` for every row
    whose k-th value is not tied across the cut; only rows with such a tie take the exact
    (slower) path."""
    if scores.shape[1] <= k:
        return torch.arange(scores.shape[1], device=scores.device).expand(scores.shape[0], -1)
    values, positions = scores.topk(k, dim=1, sorted=False)
    kth = values.min(1, keepdim=True).values
    tied_cut = (scores == kth).sum(1) != (values == kth).sum(1)
    if tied_cut.any():
        rows = tied_cut.nonzero()[:, 0]
        positions[rows] = _select_topk(scores[rows], k)
    return positions.sort(1).values


def _best(values: torch.Tensor, indices: torch.Tensor, k: int) -> torch.Tensor:
    """Columns ``(U, <=k)`` of the first ``k`` entries of each row in the order (value
    descending, index ascending); :class:`DataError` if an index repeats within a row."""
    by_index = indices.argsort(dim=1, stable=True)
    ordered = indices.gather(1, by_index)
    repeated = ordered[:, 1:] == ordered[:, :-1]
    if repeated.any():
        unit, column = repeated.nonzero()[0].tolist()
        raise DataError(f"example {ordered[unit, column].item()} is counted twice for unit "
                        f"{unit}; each example index must be in one shard and one batch only")
    by_value = values.gather(1, by_index).sort(dim=1, descending=True, stable=True).indices
    return by_index.gather(1, by_value[:, :k])


def _gather(t: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``t (U, n[, P])`` at ``columns (U, m)`` of each row."""
    if t.dim() == 3:
        return t.gather(1, columns.unsqueeze(2).expand(-1, -1, t.shape[2]))
    return t.gather(1, columns)


class TopK:
    """The best ``k`` (value, example index, position) of each of ``units`` units seen so far.

    ``values (U, n)``, ``indices (U, n)`` (int64) and ``positions (U, n, P)`` (int64: the
    index of each maximum along each of the units' ``P = position_axes`` position axes, none
    for dense units) hold the ``n = count <= k`` entries of each unit in order (value
    descending, index ascending); every unit holds the same number. Treat them as
    read-only. ``info`` is the caller's JSON-ready dict (model and data fingerprints,
    settings) that :meth:`save` writes.

    Example:
        >>> state = TopK(500, k=9, position_axes=0)        # doctest: +SKIP
        >>> state.update(acts, torch.arange(start, start + len(acts)))
        >>> merged = state.merge(TopK.load("shard1.safetensors"))
    """

    def __init__(self, units: int, k: int, position_axes: int = 0, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 info: dict | None = None) -> None:
        self.units = check_int("units", units)
        self.k = check_int("k", k)
        self.position_axes = check_int("position_axes", position_axes, minimum=0)
        if dtype not in VALUE_DTYPES.values():
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        if info is not None and not isinstance(info, dict):
            raise ValueError(f"info must be a dict, got {type(info).__name__}")
        self.dtype, self.device = dtype, torch.device(device)
        self.info: dict = json.loads(_json(info or {}))     # as a file gives it back
        self.values = torch.empty(self.units, 0, dtype=dtype, device=self.device)
        self.indices = torch.empty(self.units, 0, dtype=torch.long, device=self.device)
        self.positions = torch.empty(self.units, 0, self.position_axes, dtype=torch.long,
                                     device=self.device)

    @property
    def count(self) -> int:
        """How many entries each unit holds: ``min(k, examples seen)``."""
        return self.values.shape[1]

    def __repr__(self) -> str:
        return (f"TopK(units={self.units}, k={self.k}, position_axes={self.position_axes}, "
                f"count={self.count}, dtype={self.dtype}, device={self.device})")

    # -- updating ----------------------------------------------------------------------------
    def update(self, values: torch.Tensor, indices: torch.Tensor,
               positions: torch.Tensor | None = None) -> None:
        """Add a batch: ``values (B, U)``, their global example ``indices (B,)`` (distinct,
        ``>= 0``, any order) and, for units with positions, ``positions (B, U, P)`` (``>=
        0``; ``None`` for dense units). Values are cast to the state's dtype; NaN is
        refused."""
        self._update(values, indices, positions)

    def candidates(self, values: torch.Tensor) -> torch.Tensor:
        """The rows ``(U, <=k)`` of a batch ``values (B, U)`` given in index order that can
        enter the state: the only rows whose positions :meth:`_update` asks ``locate``."""
        return _batch_topk(values.to(self.device, self.dtype).t(), self.k)

    def _update(self, values: torch.Tensor, indices: torch.Tensor,
                positions: torch.Tensor | None,
                locate: Callable[[torch.Tensor], torch.Tensor] | None = None,
                candidates: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """:meth:`update`, returning where each kept entry came from, for callers that keep
        something per entry (the inputs themselves): ``(source (U, n), m)``, ``source < m``
        the previous entry ``source``, else row ``source - m`` of this batch. Instead of
        ``positions``, ``locate(rows (U, c)) -> (U, c, P)`` may give the positions of the
        batch rows that can reach the state only; ``candidates``, those rows if the caller
        has them from :meth:`candidates` (for indices in increasing order)."""
        values, indices, positions = self._check_batch(values, indices, positions,
                                                       located=locate is not None)
        m, n = self.count, values.shape[0]
        if n == 0:
            return torch.arange(m, device=self.device).expand(self.units, m), m
        none = torch.zeros((), dtype=torch.bool, device=self.device)
        negative, increasing, later = torch.stack([
            indices.min() < 0, (indices[1:] > indices[:-1]).all(),
            indices[0] > self.indices.max() if m else ~none]).tolist()
        if negative:
            raise DataError(f"indices must be >= 0, got {indices.min().item()}")
        rows = None                         # batch row of each sorted column, if reordered
        if not increasing:
            if candidates is not None:
                raise ValueError("candidates are rows of a batch in index order")
            rows = indices.argsort()
            indices = indices[rows]
            repeated = indices[1:] == indices[:-1]
            if repeated.any():
                raise DataError(f"example {indices[1:][repeated][0].item()} appears twice in "
                                "one batch")
            values = values[rows]
            positions = None if positions is None else positions[rows]
            if locate is not None:
                unsorted = locate
                locate = lambda columns: unsorted(rows[columns])    # noqa: E731
        # Columns are now in index order, so the batch's exact k best (ties to lower index)
        # come from a fast topk, and only they can reach the state. topk ranks NaN above
        # every number, so a NaN anywhere in the batch is among them.
        scores = values.t()
        columns = _batch_topk(scores, self.k) if candidates is None else candidates  # (U, <=k)
        fresh_values = scores.gather(1, columns)
        if locate is not None:
            fresh_positions = locate(columns).to(self.device, torch.long)
        elif positions is None:
            fresh_positions = torch.empty((*columns.shape, 0), dtype=torch.long,
                                          device=self.device)
        else:
            fresh_positions = _gather(positions.transpose(0, 1), columns)
        nan, below = torch.stack([fresh_values.isnan().any(),
                                  none if positions is None else (fresh_positions < 0).any()
                                  ]).tolist()
        if nan:
            raise DataError("values contain NaN; the top examples of a NaN are undefined")
        if below:
            raise DataError(f"positions must be >= 0, got {fresh_positions.min().item()}")
        # Every index of this batch is after every kept one (the usual stream): then ties in
        # value already stand in index order side by side, and one stable sort suffices.
        take = self._absorb(fresh_values, indices[columns], fresh_positions,
                            in_index_order=increasing and later)
        batch_rows = columns if rows is None else rows[columns]
        source = torch.where(take < m, take, m + batch_rows.gather(1, (take - m).clamp(min=0)))
        return source, m

    def _check_batch(self, values: object, indices: object, positions: object,
                     located: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The batch on this state's device and dtype, or a one-line :class:`DataError` if
        its types or shapes are wrong (``located``: positions come from a ``locate``)."""
        if not (isinstance(values, torch.Tensor) and values.is_floating_point()
                and values.dim() == 2 and values.shape[1] == self.units):
            raise DataError(f"values must be a floating tensor (B, {self.units}), got "
                            f"{_describe(values)}")
        n = values.shape[0]
        indices = torch.as_tensor(indices, device=self.device)
        if indices.dtype.is_floating_point or indices.dtype == torch.bool \
                or indices.dtype.is_complex or tuple(indices.shape) != (n,):
            raise DataError(f"indices must be an integer tensor ({n},), got "
                            f"{_describe(indices)}")
        p = self.position_axes
        if located:
            if not p:
                raise DataError("positions must be None for dense units (position_axes=0)")
        elif p:
            if not (isinstance(positions, torch.Tensor) and not positions.is_floating_point()
                    and positions.dtype != torch.bool
                    and tuple(positions.shape) == (n, self.units, p)):
                raise DataError(f"positions must be an integer tensor ({n}, {self.units}, {p}) "
                                f"for units with {p} position axes, got "
                                f"{_describe(positions)}")
            positions = positions.to(self.device, torch.long)
        elif positions is not None:
            raise DataError("positions must be None for dense units (position_axes=0)")
        return values.to(self.device, self.dtype), indices.long(), positions

    def _absorb(self, values: torch.Tensor, indices: torch.Tensor, positions: torch.Tensor,
                in_index_order: bool = False) -> torch.Tensor:
        """Keep the k best of the current entries and these candidates ``(U, c)``; returns
        the columns ``(U, n)`` taken from the two side by side (current ones first).
        ``in_index_order``: the candidates are in index order, all after the current ones."""
        values = torch.cat([self.values, values], 1)
        indices = torch.cat([self.indices, indices], 1)
        positions = torch.cat([self.positions, positions], 1)
        if in_index_order:
            take = values.sort(dim=1, descending=True, stable=True).indices[:, :self.k]
        else:
            take = _best(values, indices, self.k)
        self.values, self.indices = values.gather(1, take), indices.gather(1, take)
        self.positions = _gather(positions, take)
        return take

    def merge(self, other: TopK) -> TopK:
        """A new state holding the k best of both (neither is changed). Both must agree on
        ``units``, ``k``, ``position_axes``, dtype and ``info``; an example index in both is a
        :class:`DataError` (see the module's notes). The result is on this state's device."""
        if not isinstance(other, TopK):
            raise TypeError(f"can only merge a TopK, got {type(other).__name__}")
        for name in ("units", "k", "position_axes", "dtype", "info"):
            if (getattr(self, name) != getattr(other, name) if name != "info"
                    else _json(self.info) != _json(other.info)):
                raise DataError(f"cannot merge top-k states with different {name} "
                                f"({reprlib.repr(getattr(self, name))} and "
                                f"{reprlib.repr(getattr(other, name))})")
        out = self._like()
        out.values, out.indices, out.positions = self.values, self.indices, self.positions
        out._absorb(other.values.to(self.device), other.indices.to(self.device),
                    other.positions.to(self.device))
        return out

    def _like(self) -> TopK:
        return TopK(self.units, self.k, self.position_axes, device=self.device,
                    dtype=self.dtype, info=self.info)

    # -- results -----------------------------------------------------------------------------
    def result(self, images: Data, *, units: torch.Tensor | None = None,
               activation: Callable[[torch.Tensor], torch.Tensor] | None = None
               ) -> TopExamples:
        """The :class:`TopExamples` of this state: ``mean`` from ``images``, a tensor whose
        row ``i`` is global example ``i`` or a dataset whose item ``i`` is (only the top
        examples are read); ``units`` the unit ids to report (default ``0..U-1``) and
        ``activation`` what turns the ranked values into activations (default: none).
        :class:`DataError` if fewer than ``k`` examples were seen."""
        self._check_full()
        if not (isinstance(images, torch.Tensor) and images.dim() >= 1 or is_dataset(images)):
            raise DataError(f"images must be a tensor or a dataset indexed by example, got "
                            f"{_describe(images)}")
        if self.count and self.indices.max().item() >= count(images):
            raise DataError(f"images holds {count(images)} examples, but example "
                            f"{self.indices.max().item()} is among the top {self.k}")
        # In chunks of units: the gathered inputs never exceed ~256 x k rows at once.
        mean = torch.cat([take(images, chunk).to(self.device, self.dtype).mean(1)
                          for chunk in self.indices.split(UNIT_CHUNK)])
        return self._examples(mean, units, activation)

    def _check_full(self) -> None:
        if self.count < self.k:
            raise DataError(f"k={self.k} is larger than the number of examples seen "
                            f"({self.count})")

    def _examples(self, mean: torch.Tensor, units: torch.Tensor | None,
                  activation: Callable[[torch.Tensor], torch.Tensor] | None) -> TopExamples:
        """The result, given each unit's mean input."""
        self._check_full()
        if units is None:
            units = torch.arange(self.units, device=self.device)
        elif not isinstance(units, torch.Tensor) or tuple(units.shape) != (self.units,):
            raise DataError(f"units must be a tensor ({self.units},) of unit ids, got "
                            f"{_describe(units)}")
        values = self.values.clone() if activation is None else activation(self.values)
        return TopExamples(values=values, indices=self.indices.clone(), mean=mean,
                           units=units,
                           positions=self.positions.clone() if self.position_axes else None)

    # -- files -------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The bytes of this state's ``featvis.topk/2`` safetensors file."""
        meta = {"format": FORMAT, "featvis_version": __version__, "units": self.units,
                "k": self.k, "position_axes": self.position_axes, "count": self.count,
                "info": self.info}
        text = _json(meta)
        tensors = {name: getattr(self, name).detach().cpu().contiguous() for name in NAMES}
        data = safetensors_bytes(tensors, metadata={"featvis": text})
        header = int.from_bytes(data[:8], "little")
        if header > MAX_HEADER_BYTES:
            raise ValueError(f"info is too large: a header of {header} bytes, above the "
                             f"{MAX_HEADER_BYTES} that load reads")
        return data

    def save(self, path: str | os.PathLike) -> None:
        """Write this state to ``path`` (temporary file, fsync, rename)."""
        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> TopK:
        """A state written by :meth:`save`; a one-line :class:`CheckpointError` for any file
        that is not a sound one. The header's size is checked before it is parsed, and the
        metadata against the tensors' dtypes and shapes before any tensor is read, so memory
        stays within the file's real size whatever it claims."""
        path = Path(path)
        state = read_safetensors(path, lambda f: _read(path, f), "top-k", MAX_HEADER_BYTES)
        _check_state(path, state)
        if torch.device(device) != state.device:
            state.device = torch.device(device)
            for name in NAMES:
                setattr(state, name, getattr(state, name).to(state.device))
        return state


def _json(obj: object) -> str:
    """``obj`` as canonical JSON (sorted keys), or a one-line ``ValueError`` about info."""
    try:
        return json.dumps(obj, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"info must be JSON-ready (finite numbers, strings, lists, dicts): "
                         f"{first_line(exc)}") from None


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} {tuple(x.shape)}"
    return type(x).__name__


def _refuse(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: inconsistent top-k file ({problem})")


def _read(path: Path, f: safe_open) -> TopK:
    """The state in an open safetensors file, its metadata and header checked first."""
    meta = featvis_metadata(path, f.metadata() or {}, "top-k", (FORMAT,))
    for name in ("units", "k"):
        if not (is_int(meta.get(name)) and 1 <= meta[name] <= MAX_UNITS_OR_K):
            raise _refuse(path, f"{name} must be an integer in 1..{MAX_UNITS_OR_K}, got "
                                f"{reprlib.repr(meta.get(name))}")
    units, k, count = meta["units"], meta["k"], meta.get("count")
    if not (is_int(count) and 0 <= count <= k):
        raise _refuse(path, f"count must be an integer in 0..k={k}, got {reprlib.repr(count)}")
    axes = meta.get("position_axes")
    if not (is_int(axes) and 0 <= axes <= MAX_POSITION_AXES):
        raise _refuse(path, f"position_axes must be an integer in 0..{MAX_POSITION_AXES}, got "
                            f"{reprlib.repr(axes)}")
    if not isinstance(meta.get("info", {}), dict):
        raise _refuse(path, f"info must be an object, got {reprlib.repr(meta['info'])}")
    names = set(f.keys())
    if names != set(NAMES):
        odd = sorted(names ^ set(NAMES))[0]
        raise _refuse(path, f"tensor {odd!r} is {'unexpected' if odd in names else 'missing'}")
    expected = {"values": ((units, count), tuple(VALUE_DTYPES)),
                "indices": ((units, count), ("I64",)),
                "positions": ((units, count, axes), ("I64",))}
    for name, (shape, dtypes) in expected.items():
        info = f.get_slice(name)
        found = (tuple(info.get_shape()), info.get_dtype())
        if found[0] != shape or found[1] not in dtypes:
            raise _refuse(path, f"{name} must be {'/'.join(dtypes)} of shape {shape}, found "
                                f"{found[1]} {found[0]}")
    state = TopK(units, k, axes, dtype=VALUE_DTYPES[f.get_slice("values").get_dtype()],
                 info=meta.get("info", {}))
    state.values, state.indices, state.positions = (f.get_tensor(name) for name in NAMES)
    return state


def entries_problem(v: torch.Tensor, i: torch.Tensor, p: torch.Tensor) -> str | None:
    """What is wrong with top-k entries ``values (U, n)``, ``indices (U, n)``, ``positions
    (U, n, P)`` read from a file (NaN, a negative index or position, the strict order
    broken, an example held twice), or ``None``."""
    if v.isnan().any():
        return "values contain NaN"
    if (i < 0).any():
        return f"indices must be >= 0, found {i.min().item()}"
    if (p < 0).any():
        return f"positions must be >= 0, found {p.min().item()}"
    ordered = (v[:, :-1] > v[:, 1:]) | ((v[:, :-1] == v[:, 1:]) & (i[:, :-1] < i[:, 1:]))
    if not ordered.all():
        unit = (~ordered).nonzero()[0, 0].item()
        return (f"the entries of unit {unit} are not in order (value descending, then index "
                "ascending)")
    by_index = i.sort(1).values
    repeated = by_index[:, 1:] == by_index[:, :-1]
    if repeated.any():
        unit = repeated.nonzero()[0, 0].item()
        return f"unit {unit} holds example {by_index[:, 1:][repeated][0].item()} twice"
    return None


def _check_state(path: Path, state: TopK) -> None:
    """:class:`CheckpointError` unless the entries are in range and in the strict order."""
    problem = entries_problem(state.values, state.indices, state.positions)
    if problem:
        raise _refuse(path, problem)
