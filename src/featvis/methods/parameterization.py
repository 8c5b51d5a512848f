"""Image priors for activation maximization: random transforms, a 1/f (Fourier) and a
decorrelated-colour parameterization, all on batches of pictures ``(N, C, H, W)``.

The transforms draw their random numbers from a counter-based hash of ``(seed, unit,
restart, step, draw)``, so a row's draws do not depend on the other rows of the batch nor
on the device, and the same seed gives the same pictures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..data import check_inputs

__all__ = ["Transform", "Affine", "Pad", "Jitter", "Scale", "Rotate", "standard_transforms",
           "transform", "hashed_uniforms", "fourier_filter", "color_filter",
           "fit_color_decorrelation"]

_MASK = 0xFFFFFFFF


def _mix(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finalizer on int64 tensors (every product stays below 2**63)."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _MASK
    h = h ^ (h >> 15)
    h = (h * 0x2C1B3C6D) & _MASK
    return h ^ (h >> 16)


def hashed_uniforms(seed: int, units: torch.Tensor, restarts: torch.Tensor, step: int,
                    count: int) -> torch.Tensor:
    """``(N, count)`` float64 numbers in ``[0, 1)``, row i a hash of ``(seed, units[i],
    restarts[i], step, k)`` for draw k: reproducible, batch- and device-independent."""
    seed %= 2**64
    h = torch.full_like(units, seed & _MASK, dtype=torch.int64)
    for key in (seed >> 32, units.long() & _MASK, restarts.long() & _MASK, step & _MASK):
        h = _mix(h ^ key)
    h = _mix(h[:, None] ^ torch.arange(count, device=units.device))
    return h.double() / 2**32


class Transform:
    """A random transform of pictures ``(N, C, H, W)`` using ``draws`` uniforms per row."""

    draws = 0

    def __call__(self, pictures: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Pad(Transform):
    """Pad every side by ``pixels`` with ``value``, so that later shifts, scalings and
    rotations bring in that value instead of the opposite edge; the pipeline crops back
    to the centre at the end."""

    def __init__(self, pixels: int, value: float = 0.0):
        self.pixels, self.value = int(pixels), float(value)

    def __call__(self, pictures: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p = self.pixels
        return F.pad(pictures, (p, p, p, p), value=self.value)

    def __repr__(self) -> str:
        return f"Pad({self.pixels}, value={self.value:g})"


class Jitter(Transform):
    """Shift each row by whole pixels, uniform in ``[-pixels, pixels]`` on each axis, wrapping
    around (``torch.roll`` per row)."""

    draws = 2

    def __init__(self, pixels: int):
        self.pixels = int(pixels)

    def __call__(self, pictures: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        n, c, h, w = pictures.shape
        shift = (u * (2 * self.pixels + 1)).floor().long() - self.pixels
        device = pictures.device
        rows = (torch.arange(h, device=device) - shift[:, :1]) % h
        cols = (torch.arange(w, device=device) - shift[:, 1:]) % w
        out = pictures.gather(2, rows[:, None, :, None].expand(n, c, h, w))
        return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))

    def __repr__(self) -> str:
        return f"Jitter({self.pixels})"


def _resample(pictures: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample each row at ``matrix @ (x, y)`` in normalized coordinates (bilinear, 0
    outside); the grid is built by broadcasting (``F.affine_grid``'s batched product of
    ``(H W, 3)`` by ``(3, 2)`` costs more than the resampling)."""
    n, _, h, w = pictures.shape
    matrix = matrix.to(pictures.dtype)
    xs = (torch.arange(w, device=pictures.device, dtype=pictures.dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=pictures.device, dtype=pictures.dtype) * 2 + 1) / h - 1
    grid = (matrix[:, None, None, :, 0] * xs[None, None, :, None]
            + matrix[:, None, None, :, 1] * ys[None, :, None, None])      # (N, H, W, 2)
    return F.grid_sample(pictures, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


class Affine(Transform):
    """A random linear map about the picture's centre: consecutive ones are composed by
    :func:`transform` and resampled once (one interpolation, not one per transform)."""

    def matrix(self, u: torch.Tensor) -> torch.Tensor:
        """``(N, 2, 2)``: where each output position samples its input, in normalized
        coordinates."""
        raise NotImplementedError

    def __call__(self, pictures: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return _resample(pictures, self.matrix(u))


class Scale(Affine):
    """Zoom each row about its centre by a factor uniform in ``[low, high]``."""

    draws = 1

    def __init__(self, low: float, high: float):
        self.low, self.high = float(low), float(high)

    def matrix(self, u: torch.Tensor) -> torch.Tensor:
        inverse = 1 / (self.low + (self.high - self.low) * u[:, 0])
        return torch.eye(2, dtype=u.dtype, device=u.device) * inverse[:, None, None]

    def __repr__(self) -> str:
        return f"Scale({self.low:g}, {self.high:g})"


class Rotate(Affine):
    """Rotate each row about its centre by an angle uniform in ``[-degrees, degrees]``."""

    draws = 1

    def __init__(self, degrees: float):
        self.degrees = float(degrees)

    def matrix(self, u: torch.Tensor) -> torch.Tensor:
        angle = math.radians(self.degrees) * (2 * u[:, 0] - 1)
        cos, sin = angle.cos(), angle.sin()
        return torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)

    def __repr__(self) -> str:
        return f"Rotate({self.degrees:g})"


def standard_transforms() -> list[Transform]:
    """``transforms="standard"``: pad 4, jitter 4, scale 0.95-1.05, rotate 5 degrees,
    jitter 2 (then the crop back to the input's size)."""
    return [Pad(4), Jitter(4), Scale(0.95, 1.05), Rotate(5.0), Jitter(2)]



def transform(pictures: torch.Tensor, transforms: Sequence[Transform],
              u: torch.Tensor) -> torch.Tensor:
    """Apply ``transforms`` in order, transform k reading its columns of the uniforms ``u``
    ``(N, sum of draws)``, then crop back to the centre ``(H, W)``. A run of consecutive
    :class:`Affine` transforms is one resampling by their composed matrix."""
    h, w = pictures.shape[-2:]
    column, pending = 0, None
    for t in transforms:
        drawn = u[:, column:column + t.draws]
        column += t.draws
        if isinstance(t, Affine):
            # Applying A then B samples the input at A (B p): the matrices compose as A @ B.
            pending = t.matrix(drawn) if pending is None else pending @ t.matrix(drawn)
            continue
        if pending is not None:
            pictures, pending = _resample(pictures, pending), None
        pictures = t(pictures, drawn)
    if pending is not None:
        pictures = _resample(pictures, pending)
    top, left = (pictures.shape[-2] - h) // 2, (pictures.shape[-1] - w) // 2
    return pictures[..., top:top + h, left:left + w]


def fourier_filter(pictures: torch.Tensor, decay: float = 1.0) -> torch.Tensor:
    """Filter pictures by the spectrum ``s(f)**2``, ``s = 1 / max(f, 1 / max(H, W))**decay``
    scaled to 1 at the lowest frequency: the pixel motion of a gradient step on the image's
    Fourier coefficients ``z`` when ``x = irfft2(s * z)``."""
    h, w = pictures.shape[-2:]
    fy = torch.fft.fftfreq(h, device=pictures.device, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, device=pictures.device, dtype=torch.float64)[None, :]
    floor = 1 / max(h, w)
    s2 = ((fy.square() + fx.square()).sqrt().clamp_min(floor) / floor).pow(-2 * decay)
    spectrum = torch.fft.rfft2(pictures, norm="ortho") * s2.to(pictures.dtype)
    return torch.fft.irfft2(spectrum, s=(h, w), norm="ortho")


def color_filter(pictures: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Multiply each pixel's colour by ``matrix @ matrix.T``: the pixel motion of a gradient
    step on the decorrelated colours ``y`` when ``rgb = matrix @ y``."""
    return torch.einsum("ij,njhw->nihw", matrix @ matrix.T, pictures)


def fit_color_decorrelation(images: torch.Tensor) -> torch.Tensor:
    """The symmetric square root ``M`` (``M @ M.T`` = covariance) of the colour covariance of
    the pixels of images ``(N, 3, H, W)``, for ``maximize(..., decorrelate=M)``."""
    images = check_inputs(images)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got shape {tuple(images.shape)}")
    colours = images.transpose(0, 1).reshape(3, -1).double()
    if colours.shape[1] < 2:
        raise ValueError("need at least 2 pixels to fit a colour covariance")
    values, vectors = torch.linalg.eigh(torch.cov(colours))
    root = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    return root.to(images.dtype)
