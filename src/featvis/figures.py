"""Figures that say whether a picture shows the model: how alike a layer's pictures are,
whether they change when the weights are re-drawn, and how pure a unit's top examples are.

* :func:`distinctness`: the mean centred cosine between the pictures of different units
  (1: every unit looks the same, so the pictures say nothing about any one unit).
* :func:`centred_cosine` and :func:`jaccard_overlap`: how much of each unit's pictures (or
  index sets) survives re-drawing the weights, for the sanity check of Adebayo et al. (2018)
  (:func:`featvis.pipeline.sanity.randomized_similarity`).
* :func:`class_purity`: how much of a unit's top-k dataset examples share one label.
* :func:`locality` and :func:`random_locality`: how much of a filter's energy sits in a
  small disc around its peak, against the same figure for random Gaussian filters.
* :func:`gabor_fit`: how well 2-D Gabor functions fit a layer's filters, and how their
  orientations and frequencies spread (first-layer V1 cells are Gabor-like).

A picture is *flat* when all its pixels are equal: centred, it is the zero vector, with no
direction. Its cosine with any picture counts as 1, so a blank picture (which shows nothing)
can only make a figure look worse, never better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .params import check_float, check_int

__all__ = ["distinctness", "example_distinctness", "centred_cosine", "jaccard_overlap",
           "Purity", "class_purity", "locality", "random_locality", "GaborFit", "GABOR_COLUMNS",
           "gabor_fit", "MAX_UNITS", "SUSPECT", "FLAT"]

MAX_UNITS = 50   # distinctness looks at the first 50 units: 2,450 ordered pairs
SUSPECT = 0.5    # a distinctness or randomized similarity above this is flagged
FLAT = 0.01      # a picture (or a contrast) varying by under this share of its range is flat


def _centred(pictures: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, ...)`` -> unit-norm centred rows ``(U, D)`` in float64 (zero for a flat
    picture) and the ``(U,)`` mask of flat pictures."""
    if not torch.isfinite(pictures).all():
        raise ValueError("pictures contain NaN or infinite values")
    rows = pictures.detach().flatten(1).double()
    blank = (rows == rows[:, :1]).all(1)
    return F.normalize(rows - rows.mean(1, keepdim=True), dim=1), blank


def distinctness(pictures: torch.Tensor, *, max_units: int = MAX_UNITS) -> float:
    """The mean centred cosine over ordered pairs ``i != j`` of the first
    ``min(max_units, U)`` pictures ``(U, ...)`` (each flattened, minus its mean pixel).

    1 means every unit looks the same; about 0 means unrelated pictures. A flat picture's
    cosine with any other counts as 1 (see the module's notes)."""
    if pictures.dim() < 2 or pictures.shape[0] < 2:
        raise ValueError(f"distinctness needs (U, ...) pictures of 2 or more units, got shape "
                         f"{tuple(pictures.shape)}")
    check_int("max_units", max_units, minimum=2)
    rows, blank = _centred(pictures[:max_units])
    gram = (rows @ rows.t()).masked_fill(blank[:, None] | blank[None, :], 1.0)
    n = rows.shape[0]
    return ((gram.sum() - gram.diagonal().sum()) / (n * (n - 1))).item()


def example_distinctness(means: torch.Tensor, data_mean: torch.Tensor, *,
                         max_units: int = MAX_UNITS) -> float:
    """:func:`distinctness` of the means of units' top dataset examples ``(U, ...)`` minus
    the data's mean input: every such mean resembles the average input, which would hide
    how the units differ."""
    if data_mean.numel() != math.prod(means.shape[1:]):
        raise ValueError(f"data_mean has {data_mean.numel()} values, one picture has "
                         f"{math.prod(means.shape[1:])}")
    shift = data_mean.to(means.device, means.dtype).reshape(1, *means.shape[1:])
    return distinctness(means - shift, max_units=max_units)


def centred_cosine(trained: torch.Tensor, randomized: torch.Tensor) -> torch.Tensor:
    """``(U,)`` centred cosine between each unit's two pictures (1 if either is flat)."""
    a, blank_a = _centred(trained)
    b, blank_b = _centred(randomized)
    return (a * b).sum(1).masked_fill(blank_a | blank_b, 1.0)


def jaccard_overlap(trained: torch.Tensor, randomized: torch.Tensor) -> torch.Tensor:
    """``(U,)`` Jaccard overlap ``|A & B| / |A | B|`` of each unit's two index sets ``(U, k)``
    (indices distinct within a row)."""
    shared = (trained[:, :, None] == randomized[:, None, :]).any(2).sum(1).double()
    return shared / (trained.shape[1] + randomized.shape[1] - shared)


class Purity(NamedTuple):
    """Per unit ``(U,)``: ``share`` of the most common label among its top-k examples,
    ``entropy_bits`` of their label distribution, ``top_class`` that label (ties to the
    lower label)."""

    share: torch.Tensor
    entropy_bits: torch.Tensor
    top_class: torch.Tensor


def class_purity(indices: torch.Tensor, labels: torch.Tensor) -> Purity:
    """The label purity of each unit's top-k dataset examples: ``indices (U, k)`` into the
    data (e.g. :attr:`TopExamples.indices`), ``labels (N,)`` integer labels of the data."""
    if (indices.dim() != 2 or indices.numel() == 0 or indices.is_floating_point()
            or indices.dtype == torch.bool):
        raise ValueError(f"indices must be a non-empty (U, k) tensor of integers, got "
                         f"{indices.dtype} of shape {tuple(indices.shape)}")
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be (N,) integer labels, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)}")
    if indices.min() < 0 or indices.max() >= labels.shape[0]:
        raise ValueError(f"indices must be in 0..{labels.shape[0] - 1} (one per label)")
    classes, codes = labels.to(indices.device)[indices].unique(return_inverse=True)
    p = F.one_hot(codes, classes.numel()).sum(1).double() / indices.shape[1]    # (U, C)
    share, best = p.max(1)
    return Purity(share=share, entropy_bits=-torch.special.xlogy(p, p).sum(1) / math.log(2),
                  top_class=classes[best])


def _side(shape: tuple[int, ...], name: str = "filters") -> int:
    """The side of ``(F, side, side)`` or ``(F, side*side)`` square filters, ``F >= 1``;
    a one-line ``ValueError`` naming ``name`` for any other shape."""
    side = (math.isqrt(shape[1]) if len(shape) == 2 else shape[1] if len(shape) == 3 else 0)
    if (len(shape) not in (2, 3) or shape[0] < 1 or side < 1 or side * side != math.prod(
            shape[1:])):
        raise ValueError(f"{name} must be (F, side, side) or (F, side*side) square filters, "
                         f"got shape {tuple(shape)}")
    return side


def _rows(filters: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Square filters -> detached float32 rows ``(F, side*side)`` (row-major: pixel ``y *
    side + x``) and ``side``."""
    side = _side(tuple(filters.shape))
    rows = filters.detach().reshape(filters.shape[0], side * side).float()
    if not torch.isfinite(rows).all():
        raise ValueError("filters contain NaN or infinite values")
    return rows, side


def _grid(side: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's column ``x`` and row ``y`` ``(side*side,)``, in row-major order."""
    index = torch.arange(side * side, device=device)
    return (index % side).float(), torch.div(index, side, rounding_mode="floor").float()


def locality(filters: torch.Tensor) -> float:
    """The median share of a filter's energy within a disc around its peak: 1 for a filter
    that is one spot, about ``pi r^2 / side^2`` for one spread evenly.

    ``filters`` are ``(F, side, side)`` or ``(F, side*side)``. A filter's energy is ``(w -
    mean(w))^2`` per pixel; its peak is the pixel of most energy (the first, on ties); the
    disc holds the pixels at Euclidean distance ``<= r = side // 4`` from the peak (clipped
    by the border; ``r = 0``, the peak alone, below side 4). A flat filter, with no energy,
    counts as share 0. The median over filters is the mean of the middle two for an even
    count. Compare with :func:`random_locality` for the same shape."""
    rows, side = _rows(filters)
    energy = (rows - rows.mean(1, keepdim=True)).square()
    xs, ys = _grid(side, rows.device)
    peak = energy.argmax(1, keepdim=True)                                       # (F, 1)
    near = (xs - xs[peak]).square() + (ys - ys[peak]).square() <= (side // 4) ** 2
    total = energy.sum(1)
    share = torch.where(total > 0, (energy * near).sum(1) / total.clamp_min(1e-30),
                        torch.zeros_like(total))
    return share.quantile(0.5).item()


def random_locality(shape: tuple[int, ...], *, draws: int = 1000, seed: int = 0) -> float:
    """:func:`locality` of ``draws`` filters of i.i.d. ``N(0, 1)`` pixels, each shaped like
    one of ``shape``'s ``(F, side, side)`` or ``(F, side*side)`` filters: the figure that
    filters with no spatial structure reach by chance (seeded by ``seed``)."""
    shape = tuple(shape)
    _side(shape, "shape")
    draws = check_int("draws", draws)
    generator = torch.Generator().manual_seed(check_int("seed", seed, minimum=None))
    return locality(torch.randn((draws, *shape[1:]), generator=generator))


GABOR_COLUMNS = ("x0", "y0", "theta", "frequency", "sigma_x", "sigma_y", "phase", "amplitude")


@dataclass(frozen=True)
class GaborFit:
    """The 2-D Gabor fitted to each of ``F`` filters (see :func:`gabor_fit`).

    * ``params (F, 8)``: the columns of :data:`GABOR_COLUMNS`: centre ``x0`` (column) and
      ``y0`` (row) in pixels; ``theta`` in ``[0, pi)``, the direction of the carrier's wave
      vector from the x axis (towards +y; the stripes run across it); ``frequency`` in
      cycles per pixel; the envelope's ``sigma_x`` (along the wave vector) and ``sigma_y``
      (along the stripes) in pixels; ``phase`` in ``(-pi, pi]``; ``amplitude >= 0``.
    * ``offset (F,)``: the constant ``c`` added to each Gabor.
    * ``r2 (F,)``: ``1 - SS_res / SS_tot`` of each fit (0 for a flat filter, whose fit has
      amplitude 0 and other parameters that mean nothing).
    * ``threshold``: the ``r2`` a fit needs to count as good; ``share``: the fraction of
      filters whose fit is good.
    * ``orientation_spread``: the circular variance ``1 - |mean(exp(2i theta))|`` of the good
      fits' orientations, in ``[0, 1]``: 0 when all share one orientation, near 1 when they
      cover ``[0, pi)`` evenly (angles doubled, as ``theta`` and ``theta + pi`` are the same
      orientation).
    * ``frequency_spread``: the interquartile range of the good fits' frequencies, in cycles
      per pixel. Both spreads are NaN without good fits.
    """

    params: torch.Tensor
    offset: torch.Tensor
    r2: torch.Tensor
    threshold: float
    share: float
    orientation_spread: float
    frequency_spread: float

    @property
    def good(self) -> torch.Tensor:
        """``(F,)`` mask of the fits with ``r2 >= threshold``."""
        return self.r2 >= self.threshold


def _carrier(p: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The envelope times the cosine and the sine carrier ``(..., D)`` of Gabors whose
    ``(..., 6)`` parameters are ``x0, y0, theta, frequency, sigma_x, sigma_y``."""
    x0, y0, theta, freq, sx, sy = (column[..., None] for column in p.unbind(-1))
    dx, dy = xs - x0, ys - y0
    cos, sin = theta.cos(), theta.sin()
    along, across = dx * cos + dy * sin, dy * cos - dx * sin
    envelope = torch.exp(-0.5 * ((along / sx).square() + (across / sy).square()))
    angle = (2 * math.pi) * freq * along
    return envelope * angle.cos(), envelope * angle.sin()


def _solve(p: torch.Tensor, centred: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor):
    """Least squares over the linear parameters: the best ``a cos + b sin + c`` for Gabors
    ``p (..., F, 6)`` and centred filters ``(F, D)``. Returns the explained sum of squares
    ``(..., F)``, ``a``, ``b`` and the two carriers' mean pixels (for ``c``).

    With amplitude, phase and offset solved in closed form, a starting point is scored by
    its six other parameters alone: no grid over phases is needed."""
    cos, sin = _carrier(p, xs, ys)
    cos_mean, sin_mean = cos.mean(-1, keepdim=True), sin.mean(-1, keepdim=True)
    u, v = cos - cos_mean, sin - sin_mean
    uu, vv, uv = u.square().sum(-1), v.square().sum(-1), (u * v).sum(-1)
    ridge = 1e-4 * (uu + vv) + 1e-12         # keeps the 2x2 system solvable as frequency -> 0
    uu, vv = uu + ridge, vv + ridge
    bu, bv = (u * centred).sum(-1), (v * centred).sum(-1)
    det = uu * vv - uv.square()
    a, b = (vv * bu - uv * bv) / det, (uu * bv - uv * bu) / det
    return a * bu + b * bv, a, b, cos_mean[..., 0], sin_mean[..., 0]


def _starts(centred: torch.Tensor, side: int, generator: torch.Generator,
            n_random: int) -> torch.Tensor:
    """Starting points ``(K, F, 6)`` for each filter: two centres (the energy centroid and
    the peak of the 3x3-blurred energy) times orientation and frequency from the spectrum's
    peak or from a grid of 8 x 3, times 3 widths; and ``n_random`` random points."""
    n, device = centred.shape[0], centred.device
    xs, ys = _grid(side, device)
    energy = centred.square()
    total = energy.sum(1)
    middle = torch.full_like(total, (side - 1) / 2)
    safe = total.clamp_min(1e-30)
    centroid = torch.stack([torch.where(total > 0, (energy * xs).sum(1) / safe, middle),
                            torch.where(total > 0, (energy * ys).sum(1) / safe, middle)], -1)
    blurred = F.avg_pool2d(energy.view(n, 1, side, side), 3, 1, 1, count_include_pad=False)
    top = blurred.flatten(1).argmax(1)
    centres = torch.stack([centroid, torch.stack([xs[top], ys[top]], -1)])       # (2, F, 2)

    pad = max(64, 4 * side)                  # zero-padding: a finer grid of frequencies
    power = torch.fft.rfft2(centred.view(n, side, side), s=(pad, pad)).abs().flatten(1)
    width = pad // 2 + 1
    best = power.argmax(1)
    ky = torch.fft.fftfreq(pad, device=device)[torch.div(best, width, rounding_mode="floor")]
    kx = torch.fft.rfftfreq(pad, device=device)[best % width]
    spectral = torch.stack([torch.atan2(ky, kx), torch.hypot(kx, ky).clamp(max=0.5)], -1)
    angles = torch.arange(8, device=device) * (math.pi / 8)
    freqs = torch.tensor([0.1, 0.2, 0.33], device=device)
    grid = torch.cartesian_prod(angles, freqs)[:, None].expand(-1, n, -1)        # (24, F, 2)
    waves = torch.cat([spectral[None], grid])                                     # (25, F, 2)
    sigmas = torch.tensor([side / 10, side / 5, side / 3], device=device).clamp(0.5, side)

    c, w, s = centres.shape[0], waves.shape[0], sigmas.shape[0]
    starts = torch.cat([centres[:, None, None].expand(c, w, s, n, 2),
                        waves[None, :, None].expand(c, w, s, n, 2),
                        sigmas[None, None, :, None, None].expand(c, w, s, n, 2)], -1)
    u = torch.rand((n_random, n, 6), generator=generator, device=device)
    scale = torch.tensor([side - 1, side - 1, math.pi, 0.5, side / 2 - 1, side / 2 - 1],
                         device=device)
    offset = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0], device=device)
    randoms = (u * scale + offset).clamp(max=side)
    return torch.cat([starts.reshape(c * w * s, n, 6), randoms])


def _model(q: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gabors ``(N, D)`` for parameters ``q (N, 9)``: ``x0, y0, theta, frequency, sigma_x,
    sigma_y, a, b, c`` with ``a cos + b sin`` the carrier and ``c`` the offset, and their
    Jacobian ``(N, D, 9)`` (by hand: one pass, no autograd)."""
    x0, y0, theta, freq, sx, sy, a, b, c = (column[:, None] for column in q.unbind(1))
    dx, dy = xs - x0, ys - y0
    cos, sin = theta.cos(), theta.sin()
    along, across = dx * cos + dy * sin, dy * cos - dx * sin
    envelope = torch.exp(-0.5 * ((along / sx).square() + (across / sy).square()))
    angle = (2 * math.pi) * freq * along
    even, odd = envelope * angle.cos(), envelope * angle.sin()
    wave = a * even + b * odd                                  # the Gabor less its offset
    slope = b * even - a * odd                                 # its derivative in the angle
    d_along = (2 * math.pi) * freq * slope - along / sx.square() * wave
    d_across = -across / sy.square() * wave
    jacobian = torch.stack([sin * d_across - cos * d_along, -sin * d_along - cos * d_across,
                            across * d_along - along * d_across,
                            (2 * math.pi) * along * slope,
                            along.square() / sx.pow(3) * wave,
                            across.square() / sy.pow(3) * wave,
                            even, odd, torch.ones_like(even)], -1)
    return wave + c, jacobian


def _fit_block(centred: torch.Tensor, side: int, steps: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The best Gabor ``(F, 9)`` (as :func:`_model`'s ``q``, for the centred filters) and
    its residual sum of squares ``(F,)`` for each centred filter ``(F, D)``."""
    device, n = centred.device, centred.shape[0]
    xs, ys = _grid(side, device)
    # Score every start with its best linear parameters; keep each filter's best 4.
    starts = _starts(centred, side, generator, n_random=16)
    chunk = max(1, (1 << 22) // (n * side * side))
    scores = torch.cat([_solve(part, centred, xs, ys)[0] for part in starts.split(chunk)])
    keep = scores.topk(min(4, starts.shape[0]), dim=0).indices                  # (M, F)
    start = starts.gather(0, keep[..., None].expand(-1, -1, 6))
    _, a, b, cos_mean, sin_mean = _solve(start, centred, xs, ys)
    q = torch.cat([start, a[..., None], b[..., None],
                   (-a * cos_mean - b * sin_mean)[..., None]], -1).flatten(0, 1)  # (N, 9)

    # Levenberg-Marquardt, each fit with its own damping; a step that does not lower the
    # residual is refused and the damping raised.
    target = centred.repeat(keep.shape[0], 1)
    low = torch.tensor([0, 0, -math.inf, 0, 0.5, 0.5] + [-math.inf] * 3, device=device)
    high = torch.tensor([side - 1, side - 1, math.inf, 0.5, side, side] + [math.inf] * 3,
                        device=device)
    model, jacobian = _model(q, xs, ys)
    residual = target - model
    loss = residual.square().sum(1)
    damping = torch.full_like(loss, 1e-3)
    for _ in range(steps):
        normal = jacobian.transpose(1, 2) @ jacobian                            # (N, 9, 9)
        diagonal = normal.diagonal(dim1=1, dim2=2)
        floor = 1e-9 * diagonal.sum(1, keepdim=True) + 1e-30
        system = normal + torch.diag_embed(damping[:, None] * diagonal + floor)
        gradient = jacobian.transpose(1, 2) @ residual[..., None]
        step, info = torch.linalg.solve_ex(system, gradient)
        trial = torch.maximum(torch.minimum(q + step[..., 0], high), low)
        trial_model, trial_jacobian = _model(trial, xs, ys)
        trial_residual = target - trial_model
        trial_loss = trial_residual.square().sum(1)
        better = (trial_loss < loss) & (info == 0)
        q = torch.where(better[:, None], trial, q)
        jacobian = torch.where(better[:, None, None], trial_jacobian, jacobian)
        residual = torch.where(better[:, None], trial_residual, residual)
        loss = torch.where(better, trial_loss, loss)
        damping = torch.where(better, damping / 3, damping * 3).clamp(1e-9, 1e9)
    best = loss.view(-1, n).argmin(0)                                            # (F,)
    pick = torch.arange(n, device=device)
    return q.view(-1, n, 9)[best, pick], loss.view(-1, n)[best, pick]


def gabor_fit(filters: torch.Tensor, *, r2_threshold: float = 0.7, steps: int = 30,
              seed: int = 0) -> GaborFit:
    """Fit ``A exp(-(x'^2 / 2 sigma_x^2 + y'^2 / 2 sigma_y^2)) cos(2 pi f x' + phase) + c``
    to each ``(F, side, side)`` or ``(F, side*side)`` filter, ``x' = (x - x0) cos theta +
    (y - y0) sin theta``, ``y' = -(x - x0) sin theta + (y - y0) cos theta``, ``x`` the column
    and ``y`` the row of a pixel: how Gabor-like (V1-like) a layer's filters are.

    All filters are fitted at once. About 170 starting points per filter (a grid around the
    spectrum's peak and the energy's centre, and 16 random ones seeded by ``seed``) are
    scored with amplitude, phase and offset solved by least squares; the best 4 go through
    ``steps`` Levenberg-Marquardt steps, kept to the centre in ``[0, side - 1]``, sigmas in
    ``[0.5, side]`` and frequency in ``[0, 0.5]`` cycles per pixel; each filter keeps its
    best fit. A fit is good when its ``r2 >= r2_threshold``. See :class:`GaborFit`.
    """
    rows, side = _rows(filters)
    threshold = check_float("r2_threshold", r2_threshold, 0.0, 1.0)
    steps = check_int("steps", steps, minimum=0)
    generator = torch.Generator(device=rows.device).manual_seed(
        check_int("seed", seed, minimum=None))
    mean = rows.mean(1, keepdim=True)
    centred = rows - mean
    total = centred.square().sum(1)
    block = max(1, (1 << 19) // (side * side))     # filters at once: bounds the Jacobians
    fits = [_fit_block(part, side, steps, generator) for part in centred.split(block)]
    q, loss = torch.cat([f[0] for f in fits]), torch.cat([f[1] for f in fits])
    turns = torch.div(q[:, 2], math.pi, rounding_mode="floor")
    theta = q[:, 2] - math.pi * turns            # theta + pi is the same Gabor with -b
    over = theta >= math.pi                      # rounding can land on pi itself
    theta, turns = torch.where(over, theta - math.pi, theta).clamp_min(0), turns + over
    a, b = q[:, 6], torch.where(turns.remainder(2) == 1, -q[:, 7], q[:, 7])
    params = torch.stack([q[:, 0], q[:, 1], theta, q[:, 3], q[:, 4], q[:, 5],
                          torch.atan2(-b, a), torch.hypot(a, b)], 1)
    r2 = torch.where(total > 0, 1 - loss / total.clamp_min(1e-30), torch.zeros_like(total))
    good = r2 >= threshold
    if good.any():
        doubled = 2 * theta[good]
        resultant = torch.hypot(doubled.cos().mean(), doubled.sin().mean()).item()
        quartiles = params[good, 3].quantile(torch.tensor([0.25, 0.75], device=rows.device))
        orientation, frequency = 1 - resultant, (quartiles[1] - quartiles[0]).item()
    else:
        orientation = frequency = math.nan
    return GaborFit(params=params, offset=mean[:, 0] + q[:, 8], r2=r2, threshold=threshold,
                    share=good.float().mean().item(), orientation_spread=orientation,
                    frequency_spread=frequency)
