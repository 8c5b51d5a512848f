"""Transforms of maximization's pictures against explicit references: torch's affine grid,
quarter turns, shifts, and the same chains applied one transform at a time on a padded
canvas."""

import math

import pytest
import torch
import torch.nn.functional as F

from featvis.methods.parameterization import (Affine, Jitter, Pad, Rotate, Scale, Transform,
                                              _linear, _render, standard_transforms,
                                              transform)


def _shifted(x: torch.Tensor, rows: int, cols: int, fill: float = 0.0) -> torch.Tensor:
    """``x`` moved down ``rows`` and right ``cols`` pixels, ``fill`` brought in."""
    out = torch.roll(x, (rows, cols), dims=(-2, -1))
    band_rows = slice(0, rows) if rows >= 0 else slice(rows, None)
    band_cols = slice(0, cols) if cols >= 0 else slice(cols, None)
    out[..., band_rows, :] = fill
    out[..., :, band_cols] = fill
    return out


def _affine_grid_resample(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``matrix (N, 2, 3)`` in pixels from the centre, as torch's normalized affine grid."""
    h, w = x.shape[-2:]
    to_pixels = torch.diag(torch.tensor([w / 2, h / 2], dtype=matrix.dtype))
    theta = torch.cat([to_pixels.inverse() @ matrix[:, :, :2] @ to_pixels,
                       to_pixels.inverse() @ matrix[:, :, 2:]], 2)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def test_render_equals_torch_affine_grid():
    x, matrix = torch.rand(5, 2, 11, 13), torch.randn(5, 2, 3)
    torch.testing.assert_close(_render(x, matrix, (11, 13), (11, 13), 0.0),
                               _affine_grid_resample(x, matrix), atol=1e-5, rtol=0)


@pytest.mark.parametrize("u, turns", [(1.0, 1), (0.0, -1)])
def test_rotate_by_a_quarter_turn_is_rot90(u, turns):
    x = torch.rand(3, 1, 8, 8)
    rotated = transform(x, [Rotate(90)], torch.full((3, 1), u, dtype=torch.float64))
    torch.testing.assert_close(rotated, torch.rot90(x, turns, dims=(2, 3)), atol=1e-5, rtol=0)


def test_jitter_shifts_each_row_by_whole_pixels():
    x = torch.rand(2, 1, 6, 7)
    # u = 0 shifts by -pixels on both axes, u -> 1 by +pixels; rows first.
    u = torch.tensor([[0.0, 0.0], [0.99, 0.5]], dtype=torch.float64)
    shifted = Jitter(2)(x, u)
    torch.testing.assert_close(shifted[0], _shifted(x[0], -2, -2), atol=1e-6, rtol=0)
    torch.testing.assert_close(shifted[1], _shifted(x[1], 2, 0), atol=1e-6, rtol=0)


def test_consecutive_linear_maps_are_one_resampling_of_their_product():
    """Scale then rotate: one interpolation at the composed matrix, which on a linear ramp
    (reproduced exactly by bilinear interpolation) equals doing them one after the other."""
    h = w = 16
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    ramp = (0.3 * xs + 0.7 * ys)[None, None].repeat(4, 1, 1, 1)
    u = torch.rand(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    chain = [Scale(0.8, 1.2), Rotate(20)]
    composed = transform(ramp, chain, u)
    one_by_one = chain[1](chain[0](ramp, u[:, :1]), u[:, 1:])
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))   # away from the zeros
    torch.testing.assert_close(composed[inner], one_by_one[inner], atol=1e-3, rtol=0)
    angle = math.radians(20) * (2 * u[:, 1] - 1)
    scale = 1 / (0.8 + 0.4 * u[:, 0])
    rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()], 1),
                            torch.stack([angle.sin(), angle.cos()], 1)], 1)
    expected = _affine_grid_resample(ramp, _linear(scale[:, None, None] * rotation))
    torch.testing.assert_close(composed, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fill", [0.0, 0.5])
def test_a_chain_is_its_transforms_one_at_a_time_on_the_padded_canvas(fill):
    """Pad, jitter, scale, jitter, crop, done step by step (F.pad, whole-pixel shifts, torch's
    affine grid on the padded canvas) equals the one resampling ``transform`` does."""
    n, size, pad = 4, 12, 3
    x = torch.rand(n, 2, size, size, generator=torch.Generator().manual_seed(2))
    u = torch.rand(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    chain = [Pad(pad, fill), Jitter(3), Scale(0.8, 1.25), Jitter(1)]
    expected = []
    for i in range(n):
        canvas = F.pad(x[i:i + 1], (pad,) * 4, value=fill)
        shift = [int(math.floor(v * 7)) - 3 for v in u[i, :2].tolist()]
        canvas = _shifted(canvas, *shift, fill=fill)
        inverse = 1 / (0.8 + 0.45 * u[i, 2].item())
        scaled = _affine_grid_resample(canvas - fill, _linear(torch.eye(2)[None] * inverse))
        shift = [int(math.floor(v * 3)) - 1 for v in u[i, 3:].tolist()]
        canvas = _shifted(scaled + fill, *shift, fill=fill)
        expected.append(canvas[..., pad:pad + size, pad:pad + size])
    torch.testing.assert_close(transform(x, chain, u), torch.cat(expected), atol=1e-5, rtol=0)


def test_a_user_s_affine_map_of_any_dtype_composes():
    class HalfTurn(Affine):
        def matrix(self, u):
            return torch.tensor([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]).expand(len(u), 2, 3)

    x = torch.rand(2, 1, 5, 7)
    u = torch.full((2, 2), 0.5, dtype=torch.float64)          # Jitter(1): no shift
    torch.testing.assert_close(transform(x, [Jitter(1), HalfTurn()], u), x.flip(2, 3))


def test_other_transforms_see_the_padded_canvas():
    class Negate(Transform):
        def __call__(self, pictures, u):
            seen.append(tuple(pictures.shape[-2:]))
            return -pictures

    seen = []
    x = torch.rand(2, 1, 5, 5)
    u = torch.tensor([[0.0, 0.0], [0.99, 0.99]], dtype=torch.float64)
    out = transform(x, [Pad(2), Negate(), Jitter(1)], u)
    assert seen == [(9, 9)]
    torch.testing.assert_close(out[0], -F.pad(x[0], (2,) * 4)[..., 3:8, 3:8])
    torch.testing.assert_close(out[1], -F.pad(x[1], (2,) * 4)[..., 1:6, 1:6])


def test_standard_chain_keeps_the_shape_and_the_range():
    x = torch.ones(3, 1, 28, 28)
    draws = sum(t.draws for t in standard_transforms())
    u = torch.rand(3, draws, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = transform(x, standard_transforms(), u)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1 + 1e-6     # the pad brings in zeros only
    torch.testing.assert_close(transform(x, [Pad(3)], torch.empty(3, 0)), x)
