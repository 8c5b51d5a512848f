"""Method 5: linear combination of the layer below's pictures (Lee et al. 2008).

A first layer's pictures are its filters; above it, ``V[i] = sum_{j in top of W[i, :]}
W[i, j] V_below[j]``. Biases and non-linearities are ignored. With ``top=None`` every weight
is kept and a DBN's ``V_d = W_d ... W_1`` (pylearn2's product image). The chain follows the
probe's layers below: a DBN's RBMs, or ``nn.Linear`` modules over a first Linear or Conv2d.
A model with pictures of its own (:meth:`featvis.seam.Probe.bases`) gives those: a
convolutional DBN's bases, each filter's positive weights upsampled by the pooling below and
convolved with the bases below (Lee et al. 2009's display; every positive weight is kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..params import Options, validated
from ..seam import Key, Probe, probe
from ..units import Units, resolve_units
from .registry import Method, Page
from .top_weights import UNSET, TOP, check_top, renamed_top

__all__ = ["Combination", "linear_combination", "RANKINGS"]

RANKINGS = ("value", "abs")


@dataclass
class Combination:
    """``images (U, *shape)``: a picture per unit, in the shape of the first layer's filters
    (one input's shape, or a first conv's kernels); ``units (U,)``."""

    images: torch.Tensor
    units: torch.Tensor


def _sparsify(weight: torch.Tensor, top: int | None, rank_by: str) -> torch.Tensor:
    """``weight`` with all but the ``top`` entries of each row set to zero."""
    if top is None:
        return weight
    score = weight if rank_by == "value" else weight.abs()
    keep = score.sort(dim=1, descending=True, stable=True).indices[:, :top]
    return torch.zeros_like(weight).scatter_(1, keep, weight.gather(1, keep))


@validated(rank_by=Options(RANKINGS))
def linear_combination(model: nn.Module | Probe, layer: Key, top: int | None = 10,
                       rank_by: str = "value", units: Units = None, *,
                       input_shape: tuple[int, ...] | None = None,
                       k: int = UNSET) -> Combination:  # type: ignore[assignment]
    """Input-space pictures of units of ``layer``; a first layer gives its filters.

    ``rank_by="value"`` keeps the ``top`` largest weights (the original write-up), ``"abs"``
    the ``top`` largest in magnitude; ``top=None`` keeps all of them (neither applies to a
    model's own bases, see the module docstring). ``input_shape`` (one input's shape) is
    needed for a module other than a DBN.
    """
    top = renamed_top(top, k, 10)
    seam = probe(model, input_shape)
    own = seam.bases(layer)
    if own is not None:
        units = resolve_units(units, own.shape[0], seam.device)
        return Combination(own[units].clone(), units)
    chain = [layer]                       # this layer, then each layer below to the first
    while (below := seam.below(chain[-1])) is not None:
        chain.append(below)
    weights = [seam.incoming_weights(key) for key in chain[:-1]]
    if top is not None:
        for weight, below in zip(weights, chain[1:]):     # every top before any product
            check_top(top, weight.shape[1], below)
    images = seam.filters(chain[-1])
    units = resolve_units(units, weights[0].shape[0] if weights else images.shape[0],
                          seam.device)
    shape = images.shape[1:]
    if not weights:
        return Combination(images[units].clone(), units)
    images = images.flatten(1)
    for position in reversed(range(len(weights))):         # from the first layer up
        weight = weights[position][units] if position == 0 else weights[position]
        images = _sparsify(weight, top, rank_by) @ images
    return Combination(images.view(-1, *shape), units)


# -- as a method of visualize ----------------------------------------------------------------
def _compute(probe: Probe, key: Key, units: Sequence[int], *, top: int) -> Combination:
    return linear_combination(probe, key, top=top, units=units)


def _write(page: Page, combo: Combination) -> None:
    page.section(page.tile(combo.images), "one tile per unit")
    for j in range(len(page.units)):
        page.panel(j, [("combination", page.tile(combo.images[j:j + 1]), "linear combination",
                        "single")])
    page.keep(combo.images)


def _rerun(probe: Probe, key: Key, units: torch.Tensor, *, top: int = 10) -> torch.Tensor:
    return linear_combination(probe, key, units=units, top=top).images


COMBINATION = Method(
    "combination", "Linear combination",
    "The weighted sum of the layer below's pictures over the unit's strongest connections, "
    "applied recursively from the first-layer filters (Lee, Ekanadham & Ng 2008).",
    _compute, requires={"bases"}, params={"top": TOP}, write=_write, rerun=_rerun)
