"""Method 2: activation maximization (Erhan et al. 2009).

``x* = argmax_x f_i(x)`` subject to ``||x||_2 = rho`` (or to a box ``lo <= x <= hi``), by
projected gradient ascent on the probe's objective: a DBN unit's pre-activation (same argmax
as the activation, better gradients), a module's output, a channel's mean (or centre).
Every unit x restart is one row of a single batch, so the whole layer is optimized by one
forward and backward pass per step instead of a Python loop over units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import check_float, check_int
from ..probe import SPATIAL, Key, probe
from ..units import Units, resolve_units

__all__ = ["Maximization", "maximize", "OPTIMIZERS"]

OPTIMIZERS = ("normalized", "adam")


@dataclass
class Maximization:
    """``images (U, *input_shape)`` best restart per unit, ``all (U, R, *input_shape)`` every
    restart's optimum, ``activation (U,)`` the objective reached by the best restart (a DBN
    reports its unit's probability), ``invariance (U,)`` mean pairwise cosine between the
    restarts' optima (NaN for a single restart)."""

    images: torch.Tensor
    all: torch.Tensor
    activation: torch.Tensor
    invariance: torch.Tensor
    units: torch.Tensor


def _mean_pairwise_cosine(x: torch.Tensor) -> torch.Tensor:
    """``(U, R, D)`` -> ``(U,)``: mean cosine over the ``R (R - 1) / 2`` distinct pairs."""
    r = x.shape[1]
    if r < 2:
        return x.new_full((x.shape[0],), float("nan"))
    unit = F.normalize(x, dim=2)
    gram = unit @ unit.transpose(1, 2)
    return (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)) / (r * (r - 1))


def _starts(units: torch.Tensor, restarts: int, dim: int, seed: int) -> torch.Tensor:
    """``U[0, 1]`` starting points ``(U * R, D)``; unit u's rows come from a generator seeded
    by ``(seed, u)``, so they do not depend on the other units asked for."""
    generator = torch.Generator()
    rows = []
    for unit in units.tolist():           # one small draw per unit; the work is batched below
        generator.manual_seed((seed * 1_000_003 + unit) % 2**63)
        rows.append(torch.rand(restarts, dim, generator=generator))
    return torch.cat(rows)


def _bounds(bounds: object) -> tuple[float, float] | None:
    if bounds is None:
        return None
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"bounds must be a pair (lo, hi), got {bounds!r}")
    lo = check_float("bounds[0]", bounds[0], -math.inf)
    hi = check_float("bounds[1]", bounds[1], lo)
    return lo, hi


def maximize(model: torch.nn.Module, layer: Key, units: Units = None, rho: float | None = None,
             steps: int = 300, lr: float = 0.05, restarts: int = 9, seed: int = 0,
             progress: bool = False, *, bounds: tuple[float, float] | None = None,
             input_shape: tuple[int, ...] | None = None, spatial: str = "mean",
             optimizer: str = "normalized") -> Maximization:
    """Maximize each unit's objective on the sphere ``||x|| = rho`` or in the box ``bounds``.

    Start ``x ~ U[0, 1]`` (rescaled to norm ``rho``, or to the box); step
    ``x += lr * r * g / ||g||`` with ``r = rho`` (half the box's diagonal for a box), then
    project back onto the constraint; ``optimizer="adam"`` takes Adam steps of size ``lr``
    instead. A DBN's ``rho`` defaults to its ``input_norm``; any other module needs ``rho``
    or ``bounds`` and ``input_shape`` (one input's shape). A channel's objective is the
    mean of its map (``spatial="center"``: its centre position). The starting points
    depend on ``(seed, unit, restart)`` only, so a unit's result is the same alone or in a
    batch.

    Example:
        >>> mx = maximize(cnn, "features.0", rho=10.0, input_shape=(1, 28, 28))  # doctest: +SKIP
        >>> mx.images.shape                                     # (channels, 1, 28, 28)
    """
    seam = probe(model, input_shape)
    info = seam.layer(layer)
    device, dtype = seam.device, seam.dtype
    units = resolve_units(units, info.units, device)
    box = _bounds(bounds)
    if rho is None and box is None:
        rho = seam.default_rho()
        if rho is None:
            raise ValueError("maximize needs a constraint: pass rho= (e.g. the mean L2 norm of "
                             "the training inputs) or bounds=(lo, hi)")
    if rho is not None and box is not None:
        raise ValueError("pass rho= or bounds=, not both")
    if rho is not None:
        rho = check_float("rho", rho)
    lr = check_float("lr", lr)
    check_int("steps", steps)
    check_int("restarts", restarts)
    seed = check_int("seed", seed, minimum=None)
    if spatial not in SPATIAL:
        raise ValueError(f"spatial must be one of {SPATIAL}, got {spatial!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")

    shape = seam.input_shape
    n_units, dim = units.numel(), math.prod(shape)

    def project(x: torch.Tensor) -> torch.Tensor:
        if box is not None:
            return x.clamp_(*box)
        return F.normalize(x, dim=1).mul_(rho)

    starts = _starts(units, restarts, dim, seed).to(device, dtype)
    x = project(starts.mul_(box[1] - box[0]).add_(box[0]) if box is not None else starts)
    radius = rho if box is None else 0.5 * (box[1] - box[0]) * math.sqrt(dim)
    row_units = units.repeat_interleave(restarts)

    def objective(x: torch.Tensor) -> torch.Tensor:
        return seam.objective(x.view(-1, *shape), layer, row_units, spatial)

    x.requires_grad_(True)
    adam = torch.optim.Adam([x], lr=lr, maximize=True) if optimizer == "adam" else None
    for _ in tqdm(range(steps), desc=f"maximize {info.name}", unit="step",
                  disable=not progress, leave=False):
        with torch.enable_grad():       # grad of x only: the model's .grad stay untouched
            (grad,) = torch.autograd.grad(objective(x).sum(), x)
        with torch.no_grad():
            if adam is not None:
                x.grad = grad
                adam.step()
            else:
                x.add_(F.normalize(grad, dim=1), alpha=lr * radius)
            x.copy_(project(x.clone()))
    x = x.detach()
    with torch.no_grad():
        reached = objective(x).view(n_units, restarts)
        best = reached.argmax(1)
        optima = x.view(n_units, restarts, dim)
        return Maximization(
            images=optima[torch.arange(n_units, device=device), best].view(n_units, *shape),
            all=optima.view(n_units, restarts, *shape),
            activation=seam.activation(layer, reached.gather(1, best[:, None])[:, 0]),
            invariance=_mean_pairwise_cosine(optima),
            units=units,
        )

