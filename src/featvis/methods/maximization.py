"""Method 2: activation maximization (Erhan et al. 2009).

``x* = argmax_x f_i(x)`` subject to ``||x||_2 = rho`` (or to a box ``lo <= x <= hi``), by
projected gradient ascent on the probe's objective: a DBN unit's pre-activation (same argmax
as the activation, better gradients), a module's output, a channel's mean (or centre).
Every unit x restart is one row of a single batch, so the whole layer is optimized by one
forward and backward pass per step instead of a Python loop over units. Image priors for
pictures (random transforms, a 1/f Fourier and a decorrelated-colour parameterization) live
in :mod:`.parameterization`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.tensors import picture_shape
from ..params import (POSITIVE, RATE, SEED, WEIGHT, Interval, Options, Pair, Param,
                      Steps, check_float, check_int, validated)
from ..figures import FLAT
from ..io.safejson import json_float
from ..seam import Key, Probe, directed, probe
from ..units import Units, resolve_units, unit_generator
from .input_gradients import OneChannelConvolutions
from .objectives import SPATIAL_CHOICES, Batch, Objective, similarity_to_other_restarts
from .objectives import diversity as diversity_penalty
from .objectives import l2 as l2_penalty
from .objectives import tv as tv_penalty
from .registry import SANITY, Method, Page
from .parameterization import (Transform, color_filter, fourier_filter, hashed_uniforms,
                               standard_transforms, transform)

__all__ = ["Maximization", "maximize", "OPTIMIZERS", "PARAMS"]

OPTIMIZERS = ("normalized", "adam")
PARAMS = ("pixel", "fourier")


@dataclass
class Maximization:
    """``images (U, *input_shape)`` best restart per unit, ``all (U, R, *input_shape)`` every
    restart's optimum, ``activation (U,)`` the objective reached by the best restart (a DBN
    reports its unit's probability), ``invariance (U,)`` mean pairwise cosine between the
    restarts' optima (NaN for a single restart), ``saturation (U,)`` the fraction of the best
    picture's pixels at a bound of the box (NaN without one), ``dead (U,)`` True for a unit
    whose objective's gradient was exactly zero for every restart at the first step (on the
    transformed pictures, with transforms; its picture is then only the starting point:
    report it, never show it as a feature), ``snapshots`` step ->
    ``(U, *input_shape)`` the best restart's picture after that many steps (0: the start)."""

    images: torch.Tensor
    all: torch.Tensor
    activation: torch.Tensor
    invariance: torch.Tensor
    units: torch.Tensor
    saturation: torch.Tensor | None = None
    dead: torch.Tensor | None = None
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)


def _mean_pairwise_cosine(x: torch.Tensor) -> torch.Tensor:
    """``(U, R, D)`` -> ``(U,)``: mean cosine over the ``R (R - 1) / 2`` distinct pairs."""
    units, restarts = x.shape[:2]
    if restarts < 2:
        return x.new_full((units,), float("nan"))
    return similarity_to_other_restarts(x.flatten(0, 1), restarts).view(units, -1).mean(1)


def _starts(units: torch.Tensor, restarts: int, dim: int, seed: int) -> torch.Tensor:
    """``U[0, 1]`` starting points ``(U * R, D)``; unit u's rows come from a generator seeded
    by ``(seed, u)``, so they do not depend on the other units asked for."""
    # One small draw per unit; the work is batched below.
    return torch.cat([torch.rand(restarts, dim, generator=unit_generator(seed, unit))
                      for unit in units.tolist()])


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


@dataclass(frozen=True, eq=False)
class _UnitObjective(Objective):
    """Each row's unit of one layer, as :meth:`featvis.seam.Probe.objective` prepares it
    (an affine layer read from its input), on the pictures the model sees."""

    read: Callable[[torch.Tensor], torch.Tensor]

    reads_model = True

    def __call__(self, batch: Batch) -> torch.Tensor:
        with OneChannelConvolutions():      # a grayscale first layer's input gradient, faster
            return self.read(batch.seen.view(-1, *batch.shape))


def _transforms(transforms: object) -> list[Transform]:
    if transforms is None:
        return []
    if transforms == "standard":
        return standard_transforms()
    if (isinstance(transforms, str) or not isinstance(transforms, Sequence)
            or not all(isinstance(t, Transform) for t in transforms)):
        raise ValueError(f"transforms must be None, 'standard' or a list of Transform, got "
                         f"{transforms!r}")
    return list(transforms)


def _snapshot_steps(snapshots: object, steps: int) -> set[int]:
    if not isinstance(snapshots, (tuple, list, range, set, frozenset)):
        raise ValueError(f"snapshots must be a sequence of steps, got {snapshots!r}")
    chosen = {check_int("a snapshot step", s, minimum=0) for s in snapshots}
    if chosen and max(chosen) > steps:
        raise ValueError(f"snapshot steps must be <= steps = {steps}, got {max(chosen)}")
    return chosen


def _tangent(v: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Rows of ``v`` without their component along ``normal``."""
    along = (v * normal).sum(1, keepdim=True)
    return v - along / normal.pow(2).sum(1, keepdim=True).clamp_min(1e-30) * normal


def _two_metric(grad: torch.Tensor, x: torch.Tensor,
                precondition: Callable[[torch.Tensor], torch.Tensor], rho: float | None,
                box: tuple[float, float] | None) -> torch.Tensor:
    """The preconditioned ascent direction under the constraints (two-metric projection):
    pixels held at a bound by their gradient are frozen and the sphere's normal is removed
    before and after ``precondition``, so the direction ascends, and vanishes exactly where
    the constrained problem is stationary (a plain preconditioned step before a Euclidean
    projection would stop elsewhere)."""
    free = torch.ones_like(x, dtype=torch.bool) if box is None else \
        ~(((x <= box[0]) & (grad < 0)) | ((x >= box[1]) & (grad > 0)))
    g, normal = grad * free, x * free
    if rho is not None:
        g = _tangent(g, normal)
    d = precondition(g) * free
    return _tangent(d, normal) if rho is not None else d


@validated(rho=Interval(float, 0.0, low_open=True, none=True), steps=POSITIVE, lr=RATE,
           restarts=POSITIVE, seed=SEED, spatial=SPATIAL_CHOICES,
           optimizer=Options(OPTIMIZERS), l2=WEIGHT, tv=WEIGHT, diversity=WEIGHT,
           cosine_power=Interval(float, 0.0))
def maximize(model: nn.Module | Probe, layer: Key | None = None, units: Units = None,
             rho: float | None = None,
             steps: int = 300, lr: float = 0.05, restarts: int = 9, seed: int = 0,
             progress: bool = False, *, bounds: tuple[float, float] | None = None,
             input_shape: tuple[int, ...] | None = None, spatial: str | int = "positive",
             optimizer: str = "normalized", l2: float = 0.0, tv: float = 0.0,
             diversity: float = 0.0, transforms: str | Sequence[Transform] | None = None,
             snapshots: Sequence[int] = (), param: str = "pixel",
             decorrelate: torch.Tensor | None = None,
             directions: torch.Tensor | None = None, cosine_power: float = 0.0,
             objective: Objective | None = None) -> Maximization:
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
    shape). A channel's objective is the mean of its map's positive part (``spatial=
    "positive"``, with a 1% leak of the negative part so that a map negative everywhere
    still has a gradient): the objective of a channel followed by a ReLU, whose optimum
    tiles the channel's pattern, where the plain mean (``"mean"``) of a convolution's own
    output is linear, with a flat picture as its optimum; ``"center"`` takes the centre
    position (the receptive field's pattern alone), and an integer the position of that
    index: for a feature over tokens, one token (``0``, a class token in front; ``-1``, the
    last), for a map the flat row-major index. The other reductions apply to tokens as to
    a map's positions. The starting points depend on
    ``(seed, unit, restart)`` only, so a unit's result is the same alone or in a batch.

    Image priors, off by default (then the result is the plain ascent's, bit for bit); the
    input is seen as a picture ``(C, H, W)`` (``featvis.data.picture_shape``):

    - ``transforms``: ``"standard"`` (pad 4, jitter 4, scale 0.95-1.05, rotate 5 degrees,
      jitter 2: see :mod:`.parameterization`) or a list of ``Transform``: every step the
      objective is taken on randomly transformed pictures (cropped back to the input's
      size), penalties on the pictures themselves. Row i's draws at step t depend only on
      ``(seed, unit, restart, t)``, so they are reproducible and batch-independent. The
      reported ``activation`` and the choice of the best restart use untransformed pictures.
    - ``param="fourier"``: ascend on the picture's Fourier coefficients ``z``, ``x =
      irfft2(s * z)`` with the 1/f spectrum ``s``, so low frequencies move first;
      ``decorrelate=M`` (3 channels; ``fit_color_decorrelation``): ascend on decorrelated
      colours ``y``, ``rgb = M y`` per pixel. Both are computed as the pixel motion of that
      step (the gradient filtered by ``s**2`` and ``M M^T``), and the state stays in pixels,
      projected exactly onto the box and the sphere after every step as above. To keep the
      optimum of the constrained problem, the filtered step is a two-metric projection:
      pixels held at a bound by their gradient are frozen and the sphere's normal is removed
      (the box optimum of a linear unit is still its weights' sign pattern).
    - ``snapshots``: steps (``0 <= step <= steps``) after which the best restart's pictures
      are kept in ``.snapshots``; ``snapshots[steps]`` equals ``images``.

    ``directions (V, U)``: maximize directions in the layer's unit space instead of its
    units (``units`` then picks directions): the projection of the layer's output on each,
    reduced over positions by ``spatial``. ``cosine_power`` p > 0 maximizes lucent's ``dot
    x cos^p`` instead (the cosine between the output and the direction, or the unit's axis,
    floored at 0.1), which favours activations along the direction over large ones.

    ``objective`` (:mod:`featvis.objectives`, instead of ``layer``): maximize that, one goal
    for every restart in one batch (the result has one row); the layers it declares are
    hooked in one forward pass. The keyword penalties are objectives too: ``l2=w`` is ``-
    w * l2()``, and so are ``tv`` and ``diversity``.

    Example:
        >>> mx = maximize(cnn, "features.0", rho=10.0, input_shape=(1, 28, 28))  # doctest: +SKIP
        >>> mx.images.shape                                     # (channels, 1, 28, 28)
    """
    seam = probe(model, input_shape)
    if objective is not None:
        if layer is not None or units is not None or directions is not None:
            raise ValueError("objective: give it instead of layer, units and directions")
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be a featvis.objectives.Objective, got "
                            f"{type(objective).__name__}")
        if objective.model_part() is None:
            raise ValueError(f"objective: {objective!r} reads no layer of the model")
        objective.check(seam)
        name = "objective"
    elif layer is None:
        raise ValueError("maximize needs a layer (and units) or an objective")
    else:
        if directions is not None:
            seam = directed(seam, {layer: directions})
        name = seam.layer(layer).name
    device, dtype = seam.device, seam.dtype
    units = torch.zeros(1, dtype=torch.long, device=device) if objective is not None else \
        resolve_units(units, seam.layer(layer).units, device)
    box = _bounds(bounds)
    if rho is None and box is None:
        rho = seam.default_rho()
        if rho is None:
            raise ValueError("maximize needs a constraint: pass rho= (e.g. the mean L2 norm of "
                             "the training inputs) or bounds=(lo, hi)")
    if param not in PARAMS:
        raise ValueError(f"param must be one of {PARAMS}, got {param!r}")
    chain = _transforms(transforms)
    keep = _snapshot_steps(snapshots, steps)

    shape = seam.input_shape
    preconditioned = param == "fourier" or decorrelate is not None
    pictures = picture_shape(shape) if chain or preconditioned else None
    if decorrelate is not None:
        decorrelate = torch.as_tensor(decorrelate)
        if tuple(decorrelate.shape) != (3, 3) or pictures[0] != 3:
            raise ValueError(f"decorrelate needs a (3, 3) matrix and 3-channel pictures, got "
                             f"{tuple(decorrelate.shape)} for pictures {pictures}")
        decorrelate = decorrelate.to(device, dtype)
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
    row_restarts = torch.arange(restarts, device=device).repeat(n_units)
    draws = sum(t.draws for t in chain)

    goal = objective if objective is not None else _UnitObjective(
        seam.objective(layer, row_units, spatial, cosine_power=cosine_power))
    total = goal
    for weight, penalty in ((l2, l2_penalty), (tv, tv_penalty), (diversity, diversity_penalty)):
        if weight:
            total = total - weight * penalty()
    reading = goal.model_part()

    def value(of: Objective, x: torch.Tensor, seen_x: torch.Tensor) -> torch.Tensor:
        """``of`` on pictures ``x (B, D)``, which the model sees as ``seen_x``."""
        with OneChannelConvolutions():
            outputs = seam.outputs(seen_x.view(-1, *shape), list(of.layers)) \
                if of.layers else {}
        return of(Batch(x, shape, outputs, restarts, seen_x))

    def seen(x: torch.Tensor, step: int) -> torch.Tensor:
        """The pictures the model sees at ``step``: ``x`` randomly transformed."""
        if not chain:
            return x
        u = hashed_uniforms(seed, row_units, row_restarts, step, draws)
        return transform(x.view(-1, *pictures), chain, u).reshape(x.shape)

    def precondition(g: torch.Tensor) -> torch.Tensor:
        g = g.view(-1, *pictures)
        if param == "fourier":
            g = fourier_filter(g)
        if decorrelate is not None:
            g = color_filter(g, decorrelate)
        return g.reshape(len(g), -1)

    def best(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every restart's objective ``(U, R)``, the best restart and its pictures ``(U, D)``."""
        reached = value(reading, x, x).view(n_units, restarts)
        chosen = reached.argmax(1)
        return reached, chosen, x.view(n_units, restarts, dim)[
            torch.arange(n_units, device=device), chosen]

    x.requires_grad_(True)
    adam = torch.optim.Adam([x], lr=lr, maximize=True) if optimizer == "adam" else None
    with torch.enable_grad():           # the objective alone: a penalty is never zero
        (grad,) = torch.autograd.grad(value(reading, x, seen(x, 0)).sum(), x)
    dead = (grad == 0).all(1).view(n_units, restarts).all(1)
    # Without penalties that is step 0's gradient too: not computed twice.
    first = grad if total is reading else None
    kept = {}

    def snapshot(step: int) -> None:
        if step in keep:
            with torch.no_grad():
                kept[step] = best(x.detach())[2].view(n_units, *shape)

    snapshot(0)
    for step in tqdm(range(steps), desc=f"maximize {name}", unit="step",
                     disable=not progress, leave=False):
        if step == 0 and first is not None:
            grad = first
        else:
            with torch.enable_grad():   # grad of x only: the model's .grad stay untouched
                (grad,) = torch.autograd.grad(value(total, x, seen(x, step)).sum(), x)
        with torch.no_grad():
            if preconditioned:
                grad = _two_metric(grad, x, precondition, rho, box)
            if adam is not None:
                x.grad = grad
                adam.step()
            else:
                # The direction of any nonzero gradient, however small (a unit above a
                # sparse layer that is off: 1e-20), which F.normalize's eps would stop
                # and whose squares underflow: scaled to a largest entry of 1 first.
                peak = grad.abs().amax(1, keepdim=True)
                x.add_(F.normalize(grad / torch.where(peak > 0, peak, 1), dim=1),
                       alpha=lr * radius)
            x.copy_(project(x.clone()))
        snapshot(step + 1)
    x = x.detach()
    with torch.no_grad():
        reached, chosen, images = best(x)
        best_value = reached.gather(1, chosen[:, None])[:, 0]
        optima = x.view(n_units, restarts, dim)
        saturation = images.new_full((n_units,), math.nan) if box is None else \
            ((images <= box[0]) | (images >= box[1])).float().mean(1)
        return Maximization(
            images=images.view(n_units, *shape),
            all=optima.view(n_units, restarts, *shape),
            activation=best_value if objective is not None else seam.activation(
                layer, best_value),
            invariance=_mean_pairwise_cosine(optima),
            units=units,
            saturation=saturation,
            dead=dead,
            snapshots=kept,
        )


# -- as a method of visualize ----------------------------------------------------------------
SATURATED = 0.9        # a picture with more pixels at a bound is flagged
DECLARED = {
    "rho": Param(Interval(float, 0.0, low_open=True, none=True), None,
                 "maximization's norm (default: a DBN's input norm, else the mean norm of "
                 "the inputs)"),
    "bounds": Param(Pair(words=("data",), none_word="none", none=True), "data",
                    "keep maximization's pixels in LO..HI, the inputs' range (data) or none "
                    "(the sphere alone)"),
    "steps": Param(Interval(int, 1, 100_000), 300, "maximization steps"),
    "restarts": Param(Interval(int, 1, 1000), 9, "maximization restarts"),
    "transforms": Param(Options(("standard",), none=True), None,
                        "maximize through random pad, jitter, scale and rotate (lucent's "
                        "standard transforms)"),
    "spatial": Param(SPATIAL_CHOICES, "positive",
                     "maximization's objective for a unit with positions (a channel's map, a "
                     "feature over tokens): the mean of its positive part, its mean, its "
                     "centre, or the position of an index (0: a class token)"),
    "snapshots": Param(Steps(64), (), "also show maximization's pictures after these steps"),
    "param": Param(Options(PARAMS), "pixel",
                   "maximization climbs the pixels, or the picture's Fourier coefficients "
                   "under a 1/f spectrum (low frequencies first: fewer high-frequency "
                   "patterns a transformer or a deep CNN picks up as noise)"),
}


def _compute(probe: Probe, key: Key, units: Sequence[int], *, rho, bounds, steps, restarts,
             transforms, spatial, snapshots, param, seed: int, progress: bool) -> Maximization:
    return maximize(probe, key, units=units, rho=rho, bounds=bounds, steps=steps,
                    restarts=restarts, seed=seed, progress=progress,
                    input_shape=probe.input_shape, transforms=transforms, snapshots=snapshots,
                    spatial=spatial, param=param)


def _rerun(probe: Probe, key: Key, units: torch.Tensor, *, rho: float | None = None,
           bounds: tuple[float, float] | None = None, spatial: str | int = "positive",
           param: str = "pixel") -> torch.Tensor:
    return maximize(probe, key, units=units, rho=rho, bounds=bounds, steps=SANITY["steps"],
                    restarts=SANITY["restarts"], input_shape=probe.input_shape,
                    spatial=spatial, param=param).images


def _write(page: Page, mx: Maximization) -> None:
    bounds = page.params["bounds"]
    progress = [page.show(mx.snapshots[step]) for step in sorted(mx.snapshots)]
    pixels = mx.images.flatten(1)                    # as the model sees them
    span = bounds[1] - bounds[0] if bounds else (pixels.max() - pixels.min()).item()
    flat = pixels.std(1) < FLAT * span
    shown = page.show(mx.images)
    scale = "symmetric" if bounds is None else "minmax"     # a signed picture, or an image
    page.section(page.tile(shown, scale=scale), "the input that maximizes each unit")
    for j in range(len(page.units)):
        info = page.detail(j)
        info["maximize"] = {"activation": json_float(mx.activation[j].item()),
                            "invariance": json_float(mx.invariance[j].item()),
                            "saturation": json_float(mx.saturation[j].item())}
        saturated = (info["maximize"]["saturation"] or 0) > SATURATED
        info["maximize"]["dead"] = bool(mx.dead[j])
        info["maximize"]["flat"] = bool(flat[j])
        caption = "the best of the restarts"
        if mx.dead[j]:
            caption = ("DEAD UNIT: its gradient is zero wherever the search started, so this "
                       "is only a starting point, not what the unit responds to")
        elif flat[j]:
            caption = (f"FLAT PICTURE: its pixels vary by under {FLAT:.0%} of their range; "
                       "the unit shows nothing here")
        elif saturated:
            caption += (f" — over {SATURATED:.0%} of its pixels sit at a bound: it shows the "
                        "box more than the unit")
        steps = ", ".join(str(step) for step in sorted(mx.snapshots))
        along = [("maximize_progress", page.tile(torch.stack([p[j] for p in progress]),
                                                 scale=scale, cols=len(progress)),
                  f"the best restart after {steps} steps", "strip")] if progress else []
        page.panel(j, [("maximize", page.tile(shown[j:j + 1], scale=scale), caption, "single"),
                       *along],
                   [("activation reached", info["maximize"]["activation"]),
                    ("invariance (cosine between restarts)", info["maximize"]["invariance"]),
                    ("pixels at a bound", info["maximize"]["saturation"]),
                    ("dead unit", info["maximize"]["dead"]),
                    ("flat picture", info["maximize"]["flat"])])
    page.figure("mean activation reached", mx.activation.mean().item(),
                "the activation of each unit's picture, averaged: compare it with the best "
                "dataset example's; far below means the search did not turn units on")
    page.figure("mean invariance (cosine between restarts)", mx.invariance.nanmean().item(),
                "how alike the restarts' pictures are: near 1, one optimum; low, many "
                "equally good pictures (or noise)")
    page.figure("mean share of pixels at a bound", mx.saturation.nanmean().item(),
                "pixels pushed to the box's limits: a digit is about 80% zeros, so high "
                "values are not bad in themselves")
    page.figure("dead units (zero gradient at every start)", mx.dead.sum().item(),
                "units the search could not move: their pictures are starting points")
    page.figure("flat pictures (std under 1% of the range)", flat.sum().item(),
                "pictures that show nothing: 0 is good")
    page.keep(shown)


MAXIMIZE = Method(
    "maximize", "Activation maximization",
    "The input under a norm (or box) constraint that maximizes the unit's activation, found "
    "by projected gradient ascent (Erhan et al. 2009).",
    _compute, requires={"maximize"}, params=DECLARED, write=_write, rerun=_rerun, split=True)

