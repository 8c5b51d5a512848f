"""Method 2: activation maximization (Erhan et al. 2009).

``x* = argmax_x a_d[i](x)`` subject to ``||x||_2 = rho``, by projected gradient ascent on
the pre-activation (same argmax as the activation, better gradients). Every unit x restart
is one row of a single batch, so the whole layer is optimized by one sequence of matrix
products instead of a Python loop over units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import check_float, check_int
from ..units import Units, layer_of, model_device, model_dtype, resolve_units

__all__ = ["Maximization", "maximize"]


@dataclass
class Maximization:
    """``images (U, D)`` best restart per unit, ``all (U, R, D)`` every restart's optimum,
    ``activation (U,)`` post-non-linearity activation of the best restart, ``invariance (U,)``
    mean pairwise cosine between the restarts' optima (NaN for a single restart)."""

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


def maximize(model: torch.nn.Module, layer: int, units: Units = None, rho: float | None = None,
             steps: int = 300, lr: float = 0.05, restarts: int = 9, seed: int = 0,
             progress: bool = False) -> Maximization:
    """Maximize each unit's pre-activation on the sphere ``||x|| = rho``.

    Start ``x ~ U[0, 1]`` rescaled to norm ``rho``; step ``x += lr * rho * g / ||g||``, then
    project back ``x = rho * x / ||x||``. ``rho=None`` uses the model's ``input_norm``. The
    starting points depend on ``(seed, unit, restart)`` only, not on which other units are
    asked for, so a unit's result is the same alone or in a batch.
    """
    probe = layer_of(model, layer)
    device = model_device(model)
    units = resolve_units(units, probe.n_units, device)
    if rho is None:
        rho = getattr(model, "input_norm", None)
        if rho is None:
            raise ValueError("rho is not known for this model (no input_norm recorded by "
                             "fit): pass rho=, e.g. the mean L2 norm of the training inputs")
    rho, lr = check_float("rho", rho), check_float("lr", lr)
    check_int("steps", steps)
    check_int("restarts", restarts)
    seed = check_int("seed", seed, minimum=None)

    n_units, dim = units.numel(), probe.input_size
    x = F.normalize(_starts(units, restarts, dim, seed).to(device, model_dtype(model)),
                    dim=1).mul_(rho)
    row_units = units.repeat_interleave(restarts)
    step = lr * rho
    for _ in tqdm(range(steps), desc=f"maximize {probe.name}", unit="step",
                  disable=not progress, leave=False):
        x.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(probe.logits_rowwise(x, row_units).sum(), x)
        with torch.no_grad():
            x = x.detach().add_(F.normalize(grad, dim=1), alpha=step)
            x = F.normalize(x, dim=1).mul_(rho)
    with torch.no_grad():
        logits = probe.logits_rowwise(x, row_units).view(n_units, restarts)
        best = logits.argmax(1)
        optima = x.view(n_units, restarts, dim)
        return Maximization(
            images=optima[torch.arange(n_units, device=device), best],
            all=optima,
            activation=probe.activation(logits.gather(1, best[:, None])[:, 0]),
            invariance=_mean_pairwise_cosine(optima),
            units=units,
        )
