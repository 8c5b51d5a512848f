"""Method 1: dataset examples, the top-k inputs that activate each unit most.

Streams over the data keeping a running top-k per unit, so memory is O(units x k + batch),
never O(N x units). Several layers are mined in the same pass over the data. Inputs are
ranked by the pre-activation (same order as the activation, without the ties a saturated
float32 sigmoid would make). Ties go to the lower dataset index, exactly: the running
candidates are kept in index order and, among values equal to the k-th largest, the
earliest positions win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from ..data import check_images, iter_batches
from ..errors import check_int
from ..units import Units, layer_logits, layer_of, model_device, model_dtype, resolve_units

__all__ = ["TopExamples", "top_examples"]


@dataclass
class TopExamples:
    """``values (U, k)`` activations in descending order, ``indices (U, k)`` into the data,
    ``mean (U, D)`` the plain mean of each unit's k inputs, ``units (U,)``."""

    values: torch.Tensor
    indices: torch.Tensor
    mean: torch.Tensor
    units: torch.Tensor


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
    """The best ``k`` (value, index) pairs per unit seen so far, kept in index order.

    With ``keep_rows`` it also keeps the selected inputs themselves (for data that is only
    streamed once and cannot be indexed afterwards).
    """

    def __init__(self, units: torch.Tensor, k: int, dim: int, keep_rows: bool,
                 dtype: torch.dtype) -> None:
        device = units.device
        self.units, self.k = units, k
        self.values = torch.empty(units.numel(), 0, device=device, dtype=dtype)
        self.indices = torch.empty(units.numel(), 0, dtype=torch.long, device=device)
        self.rows = torch.empty(units.numel(), 0, dim, device=device, dtype=dtype) \
            if keep_rows else None

    def update(self, scores: torch.Tensor, batch: torch.Tensor, start: int) -> None:
        """Merge the scores ``(B, U)`` of inputs ``start .. start + B - 1``."""
        m = self.values.shape[1]
        scores = scores.t()
        best_rows = _batch_topk(scores, self.k)                  # (U, <=k), ascending
        candidates = torch.cat([self.values, scores.gather(1, best_rows)], 1)
        positions = _select_topk(candidates, min(self.k, candidates.shape[1]))
        rows = best_rows.gather(1, (positions - m).clamp(min=0))  # row in this batch
        kept = positions < m
        old = positions.clamp(max=max(m - 1, 0))
        self.indices = rows + start if m == 0 else \
            torch.where(kept, self.indices.gather(1, old), rows + start)
        if self.rows is not None:
            fresh = batch[rows]
            self.rows = fresh if m == 0 else torch.where(
                kept[..., None], self.rows.gather(1, old[..., None].expand_as(fresh)), fresh)
        self.values = candidates.gather(1, positions)

    def result(self, images: torch.Tensor | None, activation) -> TopExamples:
        scores, order = self.values.sort(dim=1, descending=True, stable=True)
        values = activation(scores)
        indices = self.indices.gather(1, order)
        if self.rows is None:
            # In chunks of units: the gathered inputs never exceed ~256 x k rows at once.
            mean = torch.cat([images[chunk.to(images.device)].to(values.device, values.dtype)
                              .mean(1) for chunk in indices.split(256)])
        else:
            mean = self.rows.mean(1)
        return TopExamples(values=values, indices=indices, mean=mean, units=self.units)


def top_examples(model: torch.nn.Module, images: torch.Tensor | Iterable[torch.Tensor],
                 layer: int | Sequence[int], k: int = 9,
                 units: Units | Mapping[int, Units] = None,
                 batch_size: int = 1000, progress: bool = False
                 ) -> TopExamples | dict[int, TopExamples]:
    """The ``k`` inputs with the highest activation ``h_d[i]`` for each unit.

    ``images`` is a tensor ``(N, D)`` or an iterable of such batches (e.g. a ``DataLoader``);
    a tensor is streamed in batches of ``batch_size``. ``layer`` may be a list of layers,
    mined in one pass over the data; the result is then a dict by layer, and ``units`` may
    map each layer to its own units (a single ``units`` applies to every layer).
    """
    single = not isinstance(layer, Iterable) or isinstance(layer, str)
    layers = [layer] if single else list(layer)
    if not layers:
        raise ValueError("layer: no layers given")
    probes = {d: layer_of(model, d) for d in layers}      # checks every layer before work
    device, dtype = model_device(model), model_dtype(model)
    check_int("k", k)
    check_int("batch_size", batch_size)
    if isinstance(images, torch.Tensor) and images.shape[0] < k:
        raise ValueError(f"k={k} is larger than the number of inputs ({images.shape[0]})")
    if not isinstance(images, Iterable):
        check_images(images)                  # e.g. None: refused, naming its type
    dim = next(iter(probes.values())).input_size
    streamed = not isinstance(images, torch.Tensor)
    wanted = units if isinstance(units, Mapping) else dict.fromkeys(probes, units)
    extra = [d for d in wanted if d not in probes]
    if extra:
        raise ValueError(f"units: layer {extra[0]!r} is not among the layers asked for")
    best = {d: _RunningTopK(resolve_units(wanted.get(d), p.n_units, device), k, dim, streamed,
                            dtype) for d, p in probes.items()}
    seen = 0
    with torch.no_grad():
        for batch in tqdm(iter_batches(images, batch_size), desc="examples", unit="batch",
                          disable=not progress, leave=False):
            batch = check_images(batch, dim, unit_range=False).to(device, dtype)
            acts = layer_logits(model, batch,
                                {d: None if wanted.get(d) is None else b.units
                                 for d, b in best.items()})
            for d, running in best.items():
                running.update(acts[d], batch, seen)
            seen += batch.shape[0]
    if seen < k:
        raise ValueError(f"k={k} is larger than the number of inputs ({seen})")
    results = {d: running.result(None if streamed else images, probes[d].activation)
               for d, running in best.items()}
    return next(iter(results.values())) if single else results
