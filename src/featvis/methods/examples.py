"""Method 1: dataset examples, the top-k inputs that activate each unit most.

Streams over the data keeping a running top-k per unit, so memory is O(units x k + batch),
never O(N x units). Several layers are mined in the same pass over the data. Inputs are
ranked by the probe's score: a DBN's pre-activation (same order as the activation, without
the ties a saturated float32 sigmoid would make), a module's output, and for a channel its
maximum over positions (the first maximum in row-major order, whose position is returned).
Ties go to the lower dataset index, exactly: the running candidates are kept in index order
and, among values equal to the k-th largest, the earliest positions win.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from ..data import check_inputs, iter_batches
from ..errors import check_int
from ..probe import Key, Probe, probe
from ..units import Units, resolve_units

__all__ = ["TopExamples", "top_examples"]


@dataclass
class TopExamples:
    """``values (U, k)`` activations in descending order, ``indices (U, k)`` into the data,
    ``mean (U, *input_shape)`` the plain mean of each unit's k inputs, ``units (U,)``, and
    for channels ``positions (U, k, 2)``: the row and column of each maximum in the layer's
    output map (``None`` for dense units)."""

    values: torch.Tensor
    indices: torch.Tensor
    mean: torch.Tensor
    units: torch.Tensor
    positions: torch.Tensor | None = None
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


class _RunningTopK:
    """The best ``k`` (value, index[, position]) per unit seen so far, kept in index order.

    With ``keep_rows`` it also keeps the selected inputs themselves (for data that is only
    streamed once and cannot be indexed afterwards).
    """

    def __init__(self, units: torch.Tensor, k: int, input_shape: tuple[int, ...],
                 keep_rows: bool, dtype: torch.dtype) -> None:
        device = units.device
        self.units, self.k, self.input_shape = units, k, input_shape
        self.values = torch.empty(units.numel(), 0, device=device, dtype=dtype)
        self.indices = torch.empty(units.numel(), 0, dtype=torch.long, device=device)
        self.positions: torch.Tensor | None = None
        self.rows = torch.empty(units.numel(), 0, math.prod(input_shape), device=device,
                                dtype=dtype) if keep_rows else None

    def update(self, scores: torch.Tensor, positions: torch.Tensor | None,
               batch: torch.Tensor, start: int) -> None:
        """Merge the scores ``(B, U)`` (and flat map positions) of inputs ``start ..``."""
        m = self.values.shape[1]
        scores = scores.t()
        best_rows = _batch_topk(scores, self.k)                  # (U, <=k), ascending
        candidates = torch.cat([self.values, scores.gather(1, best_rows)], 1)
        chosen = _select_topk(candidates, min(self.k, candidates.shape[1]))
        rows = best_rows.gather(1, (chosen - m).clamp(min=0))    # row in this batch
        kept = chosen < m
        old = chosen.clamp(max=max(m - 1, 0))

        def merge(current: torch.Tensor | None, fresh: torch.Tensor) -> torch.Tensor:
            if m == 0:
                return fresh
            index = old.view(*old.shape, *[1] * (fresh.dim() - 2)).expand_as(fresh)
            mask = kept.view(*kept.shape, *[1] * (fresh.dim() - 2))
            return torch.where(mask, current.gather(1, index), fresh)

        self.indices = merge(self.indices, rows + start)
        if positions is not None:
            self.positions = merge(self.positions, positions.t().gather(1, rows))
        if self.rows is not None:
            self.rows = merge(self.rows, batch.flatten(1)[rows])
        self.values = candidates.gather(1, chosen)

    def result(self, images: torch.Tensor | None, activation,
               map_width: int | None) -> TopExamples:
        scores, order = self.values.sort(dim=1, descending=True, stable=True)
        indices = self.indices.gather(1, order)
        if self.rows is None:
            # In chunks of units: the gathered inputs never exceed ~256 x k rows at once.
            mean = torch.cat([images[chunk.to(images.device)].to(scores.device, scores.dtype)
                              .mean(1) for chunk in indices.split(256)])
        else:
            mean = self.rows.mean(1).view(-1, *self.input_shape)
        positions = None
        if self.positions is not None:
            flat = self.positions.gather(1, order)
            positions = torch.stack([flat // map_width, flat % map_width], 2)
        return TopExamples(values=activation(scores), indices=indices, mean=mean,
                           units=self.units, positions=positions)


def _first_batch(batches: Iterable[torch.Tensor]
                 ) -> tuple[torch.Tensor | None, Iterable[torch.Tensor]]:
    """The first batch (to learn one input's shape) and an iterable of all the batches."""
    batches = iter(batches)
    first = next(batches, None)
    return first, itertools.chain([] if first is None else [first], batches)


def top_examples(model: torch.nn.Module, images: torch.Tensor | Iterable[torch.Tensor],
                 layer: Key | Sequence[Key], k: int = 9,
                 units: Units | Mapping[Key, Units] = None,
                 batch_size: int = 1000, progress: bool = False
                 ) -> TopExamples | dict[Key, TopExamples]:
    """The ``k`` inputs with the highest activation of each unit.

    ``images`` is a tensor ``(N, *input_shape)`` or an iterable of such batches (e.g. a
    ``DataLoader``); a tensor is streamed in batches of ``batch_size``. ``layer`` is a layer
    key (a DBN's depth, a module's dotted name) or a list of them, mined in one pass over
    the data; the result is then a dict by layer, and ``units`` may map each layer to its
    own units (a single ``units`` applies to every layer).

    Example:
        >>> ex = top_examples(cnn, images, "features.0", k=9)   # doctest: +SKIP
        >>> ex.indices.shape, ex.positions.shape                # (C, 9), (C, 9, 2)
    """
    single = not isinstance(layer, Iterable) or isinstance(layer, str)
    keys = [layer] if single else list(layer)
    if not keys:
        raise ValueError("layer: no layers given")
    check_int("k", k)
    check_int("batch_size", batch_size)
    if isinstance(images, torch.Tensor) and images.shape[0] < k:
        raise ValueError(f"k={k} is larger than the number of inputs ({images.shape[0]})")
    if not isinstance(images, Iterable):
        check_inputs(images)                  # e.g. None: refused, naming its type
    seam: Probe = probe(model, images.shape[1:] if isinstance(images, torch.Tensor) else None)
    batches: Iterable[torch.Tensor] = iter_batches(images, batch_size)
    if seam.input_shape is None:      # a module fed batches: one input's shape from the first
        first, batches = _first_batch(batches)
        if first is None:
            raise ValueError(f"k={k} is larger than the number of inputs (0)")
        seam = probe(model, check_inputs(first).shape[1:])
    infos = {key: seam.layer(key) for key in keys}          # every layer checked first
    wanted = units if isinstance(units, Mapping) else dict.fromkeys(infos, units)
    extra = [key for key in wanted if key not in infos]
    if extra:
        raise ValueError(f"units: layer {extra[0]!r} is not among the layers asked for")
    streamed = not isinstance(images, torch.Tensor)
    device, dtype = seam.device, seam.dtype
    best = {key: _RunningTopK(resolve_units(wanted.get(key), info.units, device), k,
                              seam.input_shape, streamed, dtype)
            for key, info in infos.items()}
    seen = 0
    with torch.no_grad():
        for batch in tqdm(batches, desc="examples", unit="batch", disable=not progress,
                          leave=False):
            batch = check_inputs(batch, seam.input_shape).to(device, dtype)
            scores = seam.scores(batch, {key: None if wanted.get(key) is None else b.units
                                         for key, b in best.items()})
            for key, running in best.items():
                running.update(scores[key].values, scores[key].positions, batch, seen)
            seen += batch.shape[0]
    if seen < k:
        raise ValueError(f"k={k} is larger than the number of inputs ({seen})")
    results = {key: running.result(None if streamed else images,
                                   lambda v, key=key: seam.activation(key, v),
                                   infos[key].unit_shape[-1] if infos[key].unit_shape else None)
               for key, running in best.items()}
    return next(iter(results.values())) if single else results
