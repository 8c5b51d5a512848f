"""Turning tensors into pictures: per-tile scaling, grids, bordered cells, PNG files.

Signed images (filters, combinations, maximization results) use symmetric scaling,
``0.5 + 0.5 * x / max|x|``, so zero is mid-grey and the sign is kept; non-negative images
(example means, samples) use min-max scaling. Display choices live here only.
"""

from __future__ import annotations

import io
import math
import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..data.tensors import picture_shape
from ..io.fileio import atomic_write_bytes

__all__ = ["SCALES", "Grid", "scale_tiles", "tile", "signed_border_grid", "encode_png",
           "save_png"]

SCALES = ("symmetric", "minmax")
POSITIVE = (255, 215, 0)    # yellow border: positive weight (pylearn2 top_filters)
NEGATIVE = (255, 0, 255)    # magenta border: negative weight
BOX = (255, 48, 48)         # red outline: the region of an example a unit responded to


class Grid(np.ndarray):
    """A uint8 picture grid (what :func:`tile` returns) that knows its ``layout``: ``(rows,
    cols, height, width, spacing)``, the cells' count and size in its pixels, so that a page
    can show one cell of it. A view or a copy of it is a plain grid again (layout ``None``)."""

    layout: tuple[int, int, int, int, int] | None = None


def _with_layout(canvas: np.ndarray, rows: int, cols: int, cell: tuple[int, ...],
                 spacing: int) -> Grid:
    grid = canvas.view(Grid)
    grid.layout = (rows, cols, cell[0], cell[1], spacing)
    return grid


def scale_tiles(images: torch.Tensor, scale: str = "symmetric") -> np.ndarray:
    """``(N, D)`` floats -> ``(N, D)`` uint8, each tile (all its channels) scaled on its own."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    x = images.detach().to("cpu", torch.float64)
    if scale == "symmetric":
        peak = x.abs().amax(1, keepdim=True).clamp_min(1e-12)
        unit = 0.5 + 0.5 * x / peak
    else:
        low = x.amin(1, keepdim=True)
        unit = (x - low) / (x.amax(1, keepdim=True) - low).clamp_min(1e-12)
    return np.rint(unit.numpy() * 255).astype(np.uint8)


def _grid_shape(n: int, cols: int | None) -> tuple[int, int]:
    if cols is None:
        rows = max(1, math.isqrt(n))
        return rows, math.ceil(n / rows)
    if cols <= 0:
        raise ValueError(f"cols must be positive, got {cols}")
    return math.ceil(n / cols), cols


def _assemble(cells: np.ndarray, rows: int, cols: int, spacing: int, background) -> np.ndarray:
    """Place ``cells (N, h, w[, 3])`` row by row on a canvas with ``spacing`` px gaps."""
    n, h, w = cells.shape[:3]
    extra = cells.shape[3:]
    # Every cell with its right and bottom gap, in one array; then rows of cells side by side.
    padded = np.empty((rows * cols, h + spacing, w + spacing) + extra, np.uint8)
    padded[...] = background
    padded[:n, :h, :w] = cells
    canvas = padded.reshape((rows, cols, h + spacing, w + spacing) + extra).swapaxes(1, 2)
    canvas = canvas.reshape((rows * (h + spacing), cols * (w + spacing)) + extra)
    return np.ascontiguousarray(canvas[:canvas.shape[0] - spacing, :canvas.shape[1] - spacing])


def _cells(images: torch.Tensor, shape: Sequence[int] | None, scale: str, spacing: int,
           upscale: int) -> np.ndarray:
    """Checked, scaled and upscaled pictures of ``images (N, ...)``: ``(N, h, w)`` grey, or
    ``(N, h, w, 3)`` for 3 channels; other channel counts side by side, one grey tile each."""
    if images.dim() < 2 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch of images, got {tuple(images.shape)}")
    c, h, w = picture_shape(images.shape[1:] if shape is None else shape)
    if c * h * w != images[0].numel():
        raise ValueError(f"tile shape {tuple(shape)} does not match image size "
                         f"{images[0].numel()}")
    if spacing < 0 or upscale < 1:
        raise ValueError("spacing must be >= 0 and upscale >= 1")
    cells = scale_tiles(images.reshape(images.shape[0], -1), scale).reshape(-1, c, h, w)
    if c == 3:
        cells = cells.transpose(0, 2, 3, 1)
    elif c == 1:
        cells = cells[:, 0]
    else:           # each channel a grey tile, one pixel apart
        apart = np.zeros((len(cells), c, h, w + 1), np.uint8)
        apart[..., :w] = cells
        cells = apart.transpose(0, 2, 1, 3).reshape(len(cells), h, c * (w + 1))[..., :-1]
    return cells.repeat(upscale, axis=1).repeat(upscale, axis=2) if upscale > 1 else cells


def tile(images: torch.Tensor, shape: Sequence[int] | None = None, scale: str = "symmetric",
         cols: int | None = None, spacing: int = 1, upscale: int = 1,
         background: int = 0, boxes: torch.Tensor | None = None) -> Grid:
    """A grid of ``images (N, ...)`` as a uint8 ``(H, W)`` (or ``(H, W, 3)``) array, filled
    row by row.

    ``shape`` is one picture's ``(h, w)`` or ``(C, h, w)`` (default: from the images, see
    :func:`picture_shape`); ``cols=None`` gives ``rows = floor(sqrt(N))`` and as many columns
    as needed; tiles are separated by ``spacing`` pixels of ``background``, each enlarged
    ``upscale`` times (nearest neighbour). ``boxes (N, 4)``: a red outline on each picture
    (top, left, height, width in its pixels, clipped to it; height 0: none), which makes
    the grid RGB; pictures of other than 1 or 3 channels are left without.
    """
    cells = _cells(images, shape, scale, spacing, upscale)
    channels = picture_shape(images.shape[1:] if shape is None else shape)[0]
    if boxes is not None and channels in (1, 3):
        cells = _outline(cells if channels == 3 else np.repeat(cells[..., None], 3, axis=3),
                         boxes, upscale)
    rows, cols = _grid_shape(len(cells), cols)
    return _with_layout(_assemble(cells, rows, cols, spacing, background), rows, cols,
                        cells.shape[1:3], spacing)


def _outline(cells: np.ndarray, boxes: torch.Tensor, upscale: int) -> np.ndarray:
    """``cells (N, h, w, 3)`` with the outline of ``boxes (N, 4)`` (in pixels before the
    ``upscale``) drawn in :data:`BOX`, one upscaled pixel wide; the edges of a box that
    reaches out of its picture are drawn where they lie inside it."""
    h, w = cells.shape[1:3]
    for cell, (top, left, height, width) in zip(cells, boxes.tolist()):
        if height <= 0 or width <= 0:
            continue
        y0, x0 = top * upscale, left * upscale
        y1, x1 = (top + height) * upscale, (left + width) * upscale
        rows, cols = slice(max(0, y0), max(0, y1)), slice(max(0, x0), max(0, x1))
        for edge in (cell[max(0, y0):max(0, y0 + upscale), cols] if y0 >= 0 else None,
                     cell[max(0, y1 - upscale):y1, cols] if y1 <= h else None,
                     cell[rows, max(0, x0):max(0, x0 + upscale)] if x0 >= 0 else None,
                     cell[rows, max(0, x1 - upscale):x1] if x1 <= w else None):
            if edge is not None:
                edge[...] = BOX
    return cells


def signed_border_grid(images: torch.Tensor, signs: torch.Tensor, cols: int,
                       shape: Sequence[int] | None = None, scale: str = "symmetric",
                       border: int = 1, spacing: int = 1, upscale: int = 1) -> Grid:
    """RGB grid ``(H, W, 3)`` of ``images (N, ...)``, each framed yellow (sign >= 0) or
    magenta (sign < 0): the ranked-filters overview, one row per unit."""
    cells = _cells(images, shape, scale, spacing, upscale)
    if cells.ndim == 3:
        cells = cells[..., None]
    n, h, w = cells.shape[:3]
    framed = np.empty((n, h + 2 * border, w + 2 * border, 3), np.uint8)
    colours = np.where((signs.detach().cpu().numpy() >= 0)[:, None], POSITIVE, NEGATIVE)
    framed[...] = colours[:, None, None, :]
    framed[:, border:border + h, border:border + w] = cells
    rows, cols = _grid_shape(n, cols)
    return _with_layout(_assemble(framed, rows, cols, spacing, 0), rows, cols,
                        framed.shape[1:3], spacing)


def encode_png(array: np.ndarray) -> bytes:
    """A uint8 ``(H, W)`` or ``(H, W, 3)`` array as the bytes of a PNG file."""
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H, W) or (H, W, 3) array, got "
                         f"{array.dtype} {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 ``(H, W)`` or ``(H, W, 3)`` array as a PNG file, atomically."""
    atomic_write_bytes(path, encode_png(array))
