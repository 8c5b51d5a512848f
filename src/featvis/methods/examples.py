"""Method 1: dataset examples, the top-k inputs that activate each unit most.

Streams over the data keeping a running top-k per unit, so memory is O(units x k + batch),
never O(N x units). Ties go to the lower dataset index, exactly: the running candidates are
kept in index order and, among values equal to the k-th largest, the earliest positions win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from tqdm.auto import tqdm

from ..data import check_images, iter_batches
from ..units import Units, layer_of, model_device, resolve_units

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


def _merge_rows(kept: torch.Tensor, batch: torch.Tensor, positions: torch.Tensor
                ) -> torch.Tensor:
    """Rows of the virtual concatenation ``[kept (U, m, D) per unit ; batch (B, D)]`` at
    ``positions (U, k)``, without materializing the concatenation."""
    m = kept.shape[1]
    rows = batch[(positions - m).clamp(min=0)]
    if m == 0:
        return rows
    old = kept.gather(1, positions.clamp(max=m - 1)[..., None].expand(-1, -1, kept.shape[2]))
    return torch.where((positions >= m)[..., None], rows, old)


def top_examples(model: torch.nn.Module, images: torch.Tensor | Iterable[torch.Tensor],
                 layer: int, k: int = 9, units: Units = None, batch_size: int = 1000,
                 progress: bool = False) -> TopExamples:
    """The ``k`` inputs with the highest activation ``h_d[i]`` for each unit.

    ``images`` is a tensor ``(N, D)`` or an iterable of such batches (e.g. a ``DataLoader``);
    a tensor is streamed in batches of ``batch_size``.
    """
    probe = layer_of(model, layer)
    device = model_device(model)
    units = resolve_units(units, probe.n_units, device)
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(images, torch.Tensor) and images.shape[0] < k:
        raise ValueError(f"k={k} is larger than the number of inputs ({images.shape[0]})")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n_units = units.numel()
    values = torch.empty(n_units, 0, device=device)
    indices = torch.empty(n_units, 0, dtype=torch.long, device=device)
    stream_images = None if isinstance(images, torch.Tensor) else \
        torch.empty(n_units, 0, probe.input_size, device=device)
    seen = 0
    with torch.no_grad():
        batches = iter_batches(images, batch_size)
        for batch in tqdm(batches, desc=f"examples {probe.name}", unit="batch",
                          disable=not progress, leave=False):
            batch = check_images(batch, probe.input_size, unit_range=False)
            batch = batch.to(device=device, dtype=torch.float32)
            acts = probe.activation(probe.logits(batch, units)).t()        # (U, B)
            candidates = torch.cat([values, acts], 1)
            keep = min(k, candidates.shape[1])
            positions = _select_topk(candidates, keep)
            batch_index = torch.arange(seen, seen + batch.shape[0], device=device)
            all_index = torch.cat([indices, batch_index.expand(n_units, -1)], 1)
            if stream_images is not None:
                stream_images = _merge_rows(stream_images, batch, positions)
            values = candidates.gather(1, positions)
            indices = all_index.gather(1, positions)
            seen += batch.shape[0]
    if seen < k:
        raise ValueError(f"k={k} is larger than the number of inputs ({seen})")
    values, order = values.sort(dim=1, descending=True, stable=True)
    indices = indices.gather(1, order)
    if stream_images is None:
        mean = images[indices.to(images.device)].to(device=device, dtype=torch.float32).mean(1)
    else:
        mean = stream_images.mean(1)
    return TopExamples(values=values, indices=indices, mean=mean, units=units)
