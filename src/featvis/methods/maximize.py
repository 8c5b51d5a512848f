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

from ..data import picture_shape
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
    restarts' optima (NaN for a single restart), ``saturation (U,)`` the fraction of the best
    picture's pixels at a bound of the box (NaN without one), ``dead (U,)`` True for a unit
    whose gradient was exactly zero for every restart at the first step (its picture is only
    the starting point: report it, never show it as a feature)."""

    images: torch.Tensor
    all: torch.Tensor
    activation: torch.Tensor
    invariance: torch.Tensor
    units: torch.Tensor
    saturation: torch.Tensor | None = None
    dead: torch.Tensor | None = None


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


def _on_sphere_in_box(y: torch.Tensor, rho: float, box: tuple[float, float],
                      iterations: int = 30) -> torch.Tensor:
    """Rows ``clamp(t * y, lo, hi)`` with ``t >= 0`` chosen per row so that the norm is
    ``rho`` (the box contains 0, so the norm grows with ``t``): solved exactly for the
    current set of clamped pixels, which only grows, in a few fixed-point iterations."""
    lo, hi = box
    t = rho / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
    for _ in range(iterations):
        x = (t * y).clamp_(lo, hi)
        free = (x > lo) & (x < hi)
        fixed = x.masked_fill(free, 0).pow(2).sum(1, keepdim=True)
        scale = y.masked_fill(~free, 0).pow(2).sum(1, keepdim=True).clamp_min(1e-30)
        t_next = ((rho * rho - fixed).clamp_min(0) / scale).sqrt()
        if torch.allclose(t_next, t, rtol=1e-7, atol=0):
            break
        t = t_next
    return (t * y).clamp_(lo, hi)


def _total_variation(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Per row, the sum of absolute differences between neighbouring pixels of the picture."""
    pictures = x.view(-1, *picture_shape(shape))
    return ((pictures[..., 1:, :] - pictures[..., :-1, :]).abs().flatten(1).sum(1)
            + (pictures[..., :, 1:] - pictures[..., :, :-1]).abs().flatten(1).sum(1))


def _similarity_to_other_restarts(x: torch.Tensor, restarts: int) -> torch.Tensor:
    """Per row, the mean cosine with the unit's other restarts (0 for a single restart)."""
    if restarts < 2:
        return x.new_zeros(x.shape[0])
    unit = F.normalize(x, dim=1).view(-1, restarts, x.shape[1])
    gram = unit @ unit.transpose(1, 2)
    return ((gram.sum(2) - gram.diagonal(dim1=1, dim2=2)) / (restarts - 1)).reshape(-1)


def maximize(model: torch.nn.Module, layer: Key, units: Units = None, rho: float | None = None,
             steps: int = 300, lr: float = 0.05, restarts: int = 9, seed: int = 0,
             progress: bool = False, *, bounds: tuple[float, float] | None = None,
             input_shape: tuple[int, ...] | None = None, spatial: str = "mean",
             optimizer: str = "normalized", l2: float = 0.0, tv: float = 0.0,
             diversity: float = 0.0) -> Maximization:
    """Maximize each unit's objective on the sphere ``||x|| = rho``, in the box ``bounds``,
    or on both (their intersection).

    Start ``x ~ U[0, 1]`` and project it onto the constraint; step
    ``x += lr * r * g / ||g||`` with ``r = rho`` (half the box's diagonal for a box alone),
    then project back; ``optimizer="adam"`` takes Adam steps of size ``lr`` instead. With
    both constraints the box must contain 0 and reach norm ``rho``; afterwards every pixel
    lies in the box exactly and the norm is ``rho`` to ``1e-4 rho``. Penalties, off by
    default, are subtracted from the objective: ``l2 * ||x||^2``, ``tv`` times the total
    variation of the picture, ``diversity`` times the mean cosine with the unit's other
    restarts. A DBN's ``rho`` defaults to its ``input_norm`` when neither constraint is
    given; any other module needs ``rho`` or ``bounds``, and ``input_shape`` (one input's
    shape). A channel's objective is the mean of its map (``spatial="center"``: its centre
    position). The starting points depend on ``(seed, unit, restart)`` only, so a unit's
    result is the same alone or in a batch.

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
    if rho is not None:
        rho = check_float("rho", rho)
    lr = check_float("lr", lr)
    l2, tv, diversity = (check_float(name, value, low_inclusive=True) for name, value in
                         (("l2", l2), ("tv", tv), ("diversity", diversity)))
    check_int("steps", steps)
    check_int("restarts", restarts)
    seed = check_int("seed", seed, minimum=None)
    if spatial not in SPATIAL:
        raise ValueError(f"spatial must be one of {SPATIAL}, got {spatial!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")

    shape = seam.input_shape
    n_units, dim = units.numel(), math.prod(shape)
    if rho is not None and box is not None:
        if not box[0] <= 0 <= box[1]:
            raise ValueError(f"with rho, bounds must contain 0, got {box}")
        reach = math.sqrt(dim) * max(-box[0], box[1])
        if rho > reach:
            raise ValueError(f"the sphere ||x|| = {rho:g} and the box {box} do not meet: the "
                             f"box reaches norm {reach:g} at most")

    def project(x: torch.Tensor) -> torch.Tensor:
        if box is None:
            return F.normalize(x, dim=1).mul_(rho)
        if rho is None:
            return x.clamp_(*box)
        return _on_sphere_in_box(x, rho, box)

    starts = _starts(units, restarts, dim, seed).to(device, dtype)
    x = project(starts.mul_(box[1] - box[0]).add_(box[0]) if box is not None and rho is None
                else starts)
    radius = rho if rho is not None else 0.5 * (box[1] - box[0]) * math.sqrt(dim)
    row_units = units.repeat_interleave(restarts)

    def objective(x: torch.Tensor) -> torch.Tensor:
        return seam.objective(x.view(-1, *shape), layer, row_units, spatial)

    def penalized(x: torch.Tensor) -> torch.Tensor:
        total = objective(x)
        if l2:
            total = total - l2 * x.pow(2).sum(1)
        if tv:
            total = total - tv * _total_variation(x, shape)
        if diversity:
            total = total - diversity * _similarity_to_other_restarts(x, restarts)
        return total

    x.requires_grad_(True)
    adam = torch.optim.Adam([x], lr=lr, maximize=True) if optimizer == "adam" else None
    with torch.enable_grad():           # the objective alone: a penalty is never zero
        (grad,) = torch.autograd.grad(objective(x).sum(), x)
    dead = (grad == 0).all(1).view(n_units, restarts).all(1)
    for _ in tqdm(range(steps), desc=f"maximize {info.name}", unit="step",
                  disable=not progress, leave=False):
        with torch.enable_grad():       # grad of x only: the model's .grad stay untouched
            (grad,) = torch.autograd.grad(penalized(x).sum(), x)
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
        images = optima[torch.arange(n_units, device=device), best]
        saturation = images.new_full((n_units,), math.nan) if box is None else \
            ((images <= box[0]) | (images >= box[1])).float().mean(1)
        return Maximization(
            images=images.view(n_units, *shape),
            all=optima.view(n_units, restarts, *shape),
            activation=seam.activation(layer, reached.gather(1, best[:, None])[:, 0]),
            invariance=_mean_pairwise_cosine(optima),
            units=units,
            saturation=saturation,
            dead=dead,
        )
