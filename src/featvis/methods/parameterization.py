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

from ..data.tensors import check_inputs

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
    """Grow the canvas by ``pixels`` on every side, filled with ``value``, so that later
    shifts, scalings and rotations bring in that value; :func:`transform` crops back to the
    centre at the end."""

    def __init__(self, pixels: int, value: float = 0.0):
        self.pixels, self.value = int(pixels), float(value)

    def __call__(self, pictures: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p = self.pixels
        return F.pad(pictures, (p, p, p, p), value=self.value)

    def __repr__(self) -> str:
        return f"Pad({self.pixels}, value={self.value:g})"


class Affine(Transform):
    """A random affine map of each row's pixel coordinates about the picture's centre.
    :func:`transform` composes consecutive ones (and the pads between them) into one
    resampling: one interpolation, and no pass over a padded canvas."""

    def matrix(self, u: torch.Tensor) -> torch.Tensor:
        """``(N, 2, 3)``: where each output position ``(x, y, 1)`` samples its input, in
        pixels from the centre."""
        raise NotImplementedError

    def __call__(self, pictures: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return transform(pictures, [self], u)


def _linear(matrix: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 2)`` linear maps as ``(N, 2, 3)`` affine ones."""
    return F.pad(matrix, (0, 1))


class Jitter(Affine):
    """Shift each row by whole pixels, uniform in ``[-pixels, pixels]`` on each axis (rows
    first), bringing in the canvas's fill (a :class:`Pad`'s value, else 0) at the edges."""

    draws = 2

    def __init__(self, pixels: int):
        self.pixels = int(pixels)

    def matrix(self, u: torch.Tensor) -> torch.Tensor:
        shift = (u * (2 * self.pixels + 1)).floor() - self.pixels        # (N, 2): rows, cols
        eye = torch.eye(2, dtype=u.dtype, device=u.device).expand(len(u), 2, 2)
        return torch.cat([eye, -shift.flip(1)[:, :, None]], 2)

    def __repr__(self) -> str:
        return f"Jitter({self.pixels})"


class Scale(Affine):
    """Zoom each row about its centre by a factor uniform in ``[low, high]``."""

    draws = 1

    def __init__(self, low: float, high: float):
        self.low, self.high = float(low), float(high)

    def matrix(self, u: torch.Tensor) -> torch.Tensor:
        inverse = 1 / (self.low + (self.high - self.low) * u[:, 0])
        return _linear(torch.eye(2, dtype=u.dtype, device=u.device) * inverse[:, None, None])

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
        return _linear(torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)],
                                   1))

    def __repr__(self) -> str:
        return f"Rotate({self.degrees:g})"


def standard_transforms() -> list[Transform]:
    """``transforms="standard"``: pad 4, jitter 4, scale 0.95-1.05, rotate 5 degrees,
    jitter 2 (then the crop back to the input's size)."""
    return [Pad(4), Jitter(4), Scale(0.95, 1.05), Rotate(5.0), Jitter(2)]


def _then(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The sampling map of applying ``first`` then ``second``: output p samples the input
    at ``first(second(p))``."""
    linear = first[:, :, :2]
    return torch.cat([linear @ second[:, :, :2],
                      linear @ second[:, :, 2:] + first[:, :, 2:]], 2)


def _render(source: torch.Tensor, matrix: torch.Tensor | None, canvas: tuple[int, int],
            size: tuple[int, int], fill: float) -> torch.Tensor:
    """The centre ``size`` window of a ``canvas`` whose pixel at ``p`` (from the canvas's
    centre, which is the source's) is ``source`` at ``matrix @ (p, 1)``: bilinear, ``fill``
    outside the source. Without a matrix, a window whole pixels from the source's is cut
    (and padded with ``fill``) instead of interpolated."""
    _, _, hs, ws = source.shape
    (hc, wc), (h, w) = canvas, size
    top, left = (hc - h) // 2, (wc - w) // 2
    # The window's pixel (i, j) from the centre, in the source's pixels: i + offset[0], ...
    offset = (top - (hc - 1) / 2, left - (wc - 1) / 2)
    if matrix is None:
        row, col = (offset[0] + (hs - 1) / 2, offset[1] + (ws - 1) / 2)
        if row == int(row) and col == int(col):
            row, col = int(row), int(col)
            return F.pad(source, (-col, col + w - ws, -row, row + h - hs), value=fill)
        matrix = _linear(torch.eye(2, device=source.device).expand(len(source), 2, 2))
    m = matrix.to(source.dtype)
    xs = torch.arange(w, device=source.device, dtype=source.dtype) + offset[1]
    ys = torch.arange(h, device=source.device, dtype=source.dtype) + offset[0]
    # grid_sample's normalized coordinates (align_corners=False) are pixels from the centre
    # times 2 / side.
    xs, ys = xs[None, None, :], ys[None, :, None]
    gx = (m[:, 0, 0, None, None] * xs + m[:, 0, 1, None, None] * ys + m[:, 0, 2, None, None])
    gy = (m[:, 1, 0, None, None] * xs + m[:, 1, 1, None, None] * ys + m[:, 1, 2, None, None])
    grid = torch.stack([gx * (2 / ws), gy * (2 / hs)], 3)                  # (N, h, w, 2)
    shifted = source - fill if fill else source
    out = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out + fill if fill else out


def transform(pictures: torch.Tensor, transforms: Sequence[Transform],
              u: torch.Tensor) -> torch.Tensor:
    """Apply ``transforms`` in order, transform k reading its columns of the uniforms ``u``
    ``(N, sum of draws)``, then crop back to the centre ``(H, W)``. Pads and :class:`Affine`
    maps only change where each output pixel samples the input: a run of them, the final crop
    included, is one resampling of the input at their composed map, whatever the pads' size.
    Any other transform sees the canvas as it is at its turn."""
    size = tuple(pictures.shape[-2:])
    source, canvas, fill, pending = pictures, size, 0.0, None
    column = 0
    for t in transforms:
        drawn = u[:, column:column + t.draws]
        column += t.draws
        if isinstance(t, Pad):
            if t.value != fill:
                source, pending, fill = _render(source, pending, canvas, canvas, fill), None, \
                    t.value
            canvas = (canvas[0] + 2 * t.pixels, canvas[1] + 2 * t.pixels)
        elif isinstance(t, Affine):
            step = t.matrix(drawn).to(torch.float64)
            pending = step if pending is None else _then(pending, step)
        else:
            source = t(_render(source, pending, canvas, canvas, fill), drawn)
            canvas, pending = tuple(source.shape[-2:]), None
    return _render(source, pending, canvas, size, fill)


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
