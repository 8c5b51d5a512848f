"""Transforms of maximization's pictures against explicit references: torch's affine grid,
quarter turns, rolls, and the composition of consecutive linear maps."""

import math

import pytest
import torch
import torch.nn.functional as F

from featvis.methods.parameterization import (Jitter, Pad, Rotate, Scale, _resample,
                                              standard_transforms, transform)


def test_resample_equals_torch_affine_grid():
    x, matrix = torch.rand(5, 2, 11, 13), torch.randn(5, 2, 2)
    theta = torch.cat([matrix, torch.zeros(5, 2, 1)], 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    expected = F.grid_sample(x, grid, align_corners=False)
    torch.testing.assert_close(_resample(x, matrix), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("u, turns", [(1.0, 1), (0.0, -1)])
def test_rotate_by_a_quarter_turn_is_rot90(u, turns):
    x = torch.rand(3, 1, 8, 8)
    rotated = transform(x, [Rotate(90)], torch.full((3, 1), u, dtype=torch.float64))
    torch.testing.assert_close(rotated, torch.rot90(x, turns, dims=(2, 3)), atol=1e-5, rtol=0)


def test_jitter_is_a_roll_per_row():
    x = torch.rand(2, 1, 6, 7)
    # u = 0 shifts by -pixels on both axes, u -> 1 by +pixels.
    u = torch.tensor([[0.0, 0.0], [0.99, 0.99]], dtype=torch.float64)
    shifted = Jitter(2)(x, u)
    torch.testing.assert_close(shifted[0], torch.roll(x[0], (-2, -2), dims=(1, 2)))
    torch.testing.assert_close(shifted[1], torch.roll(x[1], (2, 2), dims=(1, 2)))


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
    expected = _resample(ramp, torch.eye(2, dtype=torch.float64) * scale[:, None, None]
                         @ rotation)
    torch.testing.assert_close(composed, expected, atol=1e-5, rtol=0)


def test_standard_chain_keeps_the_shape_and_the_range():
    x = torch.ones(3, 1, 28, 28)
    draws = sum(t.draws for t in standard_transforms())
    u = torch.rand(3, draws, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = transform(x, standard_transforms(), u)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1 + 1e-6     # the pad brings in zeros only
    torch.testing.assert_close(transform(x, [Pad(3)], torch.empty(3, 0)), x)
