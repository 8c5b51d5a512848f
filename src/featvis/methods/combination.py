"""Method 5: linear combination of the layer below's visualizations (Lee et al. 2008).

``V_1 = W_1``; for d >= 2, ``V_d[i] = sum_{k in top-k of W_d[i, :]} W_d[i, k] V_{d-1}[k]``.
Biases and non-linearities are ignored. With ``k=None`` every weight is kept and
``V_d = W_d ... W_1`` (pylearn2's product image).
"""

from __future__ import annotations

import torch

from ..errors import check_int
from ..models.dbn import DBN
from ..units import Units, resolve_units
from .filters import check_k, incoming_weights

__all__ = ["linear_combination", "RANKINGS"]

RANKINGS = ("value", "abs")


def _sparsify(weight: torch.Tensor, k: int | None, rank_by: str) -> torch.Tensor:
    """``weight`` with all but the top-k entries of each row set to zero."""
    if k is None:
        return weight
    score = weight if rank_by == "value" else weight.abs()
    keep = score.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros_like(weight).scatter_(1, keep, weight.gather(1, keep))


def linear_combination(dbn: DBN, layer: int, k: int | None = 10, rank_by: str = "value",
                       units: Units = None) -> torch.Tensor:
    """``(U, D)`` input-space images of units of ``layer``; layer 1 gives its filters.

    ``rank_by="value"`` keeps the k largest weights (the original write-up), ``"abs"`` the k
    largest in magnitude; ``k=None`` keeps all of them.
    """
    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by must be one of {RANKINGS}, got {rank_by!r}")
    layer = dbn.check_layer(layer)
    if k is not None:
        check_int("k", k)
        for d in range(2, layer + 1):           # every layer's k before any product
            check_k(k, dbn.sizes[d - 1], d)
    units = resolve_units(units, dbn.sizes[layer], dbn.rbms[0].weight.device)
    images = incoming_weights(dbn, 1)
    if layer == 1:
        return images[units].clone()
    for d in range(2, layer + 1):
        weight = incoming_weights(dbn, d)
        if d == layer:
            weight = weight[units]
        images = _sparsify(weight, k, rank_by) @ images
    return images
