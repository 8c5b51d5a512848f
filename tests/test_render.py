import numpy as np
import pytest
import torch
from PIL import Image

from featvis.report.render import BOX, save_png, scale_tiles, signed_border_grid, tile


def test_symmetric_scaling_maps_zero_to_128_and_keeps_sign():
    x = torch.tensor([[0.0, 2.0, -2.0, 1.0], [0.0, -0.5, 0.25, 0.0]])
    out = scale_tiles(x, "symmetric")
    assert out[:, 0].tolist() == [128, 128]
    assert out[0].tolist() == [128, 255, 0, 191]       # 0.5 + 0.5 * x / max|x|, rounded
    assert out[1].tolist() == [128, 0, 191, 128]       # peak 0.5: 0.25 -> 0.75 -> 191


def test_minmax_scaling_per_tile():
    x = torch.tensor([[0.25, 0.5, 0.75], [5.0, 5.0, 5.0]])
    out = scale_tiles(x, "minmax")
    assert out[0].tolist() == [0, 128, 255] and out[1].tolist() == [0, 0, 0]


def test_grid_size_spacing_and_order():
    images = torch.eye(5, 6)                      # 5 tiles 2x3; tile i lights pixel i only
    grid = tile(images, shape=(2, 3), scale="minmax", spacing=1, background=7)
    # floor(sqrt(5)) = 2 rows, ceil(5 / 2) = 3 columns, 1 px between tiles.
    assert grid.shape == (2 * 2 + 1, 3 * 3 + 2) and grid.dtype == np.uint8
    assert (grid[2, :] == 7).all() and (grid[:, 3] == 7).all() and (grid[:, 7] == 7).all()
    for i in range(5):                            # row by row, pixel i of tile i lit
        r, c = divmod(i, 3)
        expected = np.zeros(6, np.uint8)
        expected[i] = 255
        np.testing.assert_array_equal(grid[3 * r:3 * r + 2, 4 * c:4 * c + 3],
                                      expected.reshape(2, 3))
    assert (grid[3:, 8:] == 7).all()                                           # empty 6th cell
    up = tile(images, shape=(2, 3), scale="minmax", cols=5, spacing=2, upscale=3)
    assert up.shape == (6, 5 * 9 + 4 * 2)
    np.testing.assert_array_equal(up[:3, :3], np.full((3, 3), 255))            # nearest upscale
    np.testing.assert_array_equal(up[:3, 3:9], np.zeros((3, 6)))


def test_tile_rejects_bad_shapes():
    with pytest.raises(ValueError, match="does not match"):
        tile(torch.zeros(2, 10), shape=(3, 3))
    with pytest.raises(ValueError, match="scale must be one of"):
        tile(torch.zeros(2, 9), shape=(3, 3), scale="log")


def test_signed_borders():
    grid = signed_border_grid(torch.ones(2, 4), torch.tensor([0.5, -0.5]), cols=2,
                              shape=(2, 2), spacing=0)
    assert grid.shape == (4, 8, 3)
    assert grid[0, 0].tolist() == [255, 215, 0] and grid[0, 4].tolist() == [255, 0, 255]


def test_save_png_round_trip(tmp_path):
    array = tile(torch.randn(4, 9), shape=(3, 3))
    save_png(array, tmp_path / "sub" / "g.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "sub" / "g.png")), array)
    with pytest.raises(ValueError, match="uint8"):
        save_png(array.astype(np.float32), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_picture_shapes_come_from_the_inputs():
    from featvis.data import picture_shape

    assert picture_shape((784,)) == (1, 28, 28) and picture_shape((16,)) == (1, 4, 4)
    assert picture_shape((10,)) == (1, 1, 10) and picture_shape((5, 7)) == (1, 5, 7)
    assert picture_shape((3, 8, 6)) == (3, 8, 6)
    with pytest.raises(ValueError, match="cannot draw inputs of shape"):
        picture_shape((2, 3, 4, 5))


def test_one_channel_is_grey_three_are_colour_others_side_by_side():
    grey = tile(torch.rand(2, 1, 3, 4), spacing=0)
    assert grey.shape == (3, 8)
    rgb = torch.zeros(1, 3, 2, 2)
    rgb[0, 0] = 1.0                                   # a red picture
    colour = tile(rgb, scale="minmax")
    assert colour.shape == (2, 2, 3) and colour[0, 0].tolist() == [255, 0, 0]
    four = torch.zeros(1, 4, 2, 3)
    four[0, 2] = 1.0                                  # only channel 2 lit
    strip = tile(four, scale="minmax")
    assert strip.shape == (2, 4 * 3 + 3)              # four grey tiles, one pixel apart
    assert (strip[:, 8:11] == 255).all() and strip[:, :8].max() == 0 and strip[:, 11:].max() == 0
    framed = signed_border_grid(rgb.expand(2, -1, -1, -1), torch.tensor([1.0, -1.0]), cols=2,
                                spacing=0)
    assert framed.shape == (4, 8, 3) and framed[1, 1].tolist() == [255, 128, 128]  # 0: grey


def test_tile_outlines_boxes_on_grey_and_colour_pictures():
    grey = tile(torch.zeros(2, 1, 5, 6), boxes=torch.tensor([[1, 1, 3, 4], [0, 0, 0, 0]]))
    assert grey.shape == (5, 13, 3)                     # grey made RGB for the outline
    red = (grey == BOX).all(2)
    ring = np.zeros((5, 6), bool)
    ring[1:4, 1:5] = True
    ring[2, 2:4] = False                                # hollow inside
    assert (red[:, :6] == ring).all() and not red[:, 6:].any()      # height 0: no box
    twice = (tile(torch.zeros(1, 1, 5, 6), boxes=torch.tensor([[1, 1, 3, 4]]), upscale=2)
             == BOX).all(2)
    assert (twice == ring.repeat(2, 0).repeat(2, 1)).all()      # edges one upscaled pixel
    colour = (tile(torch.zeros(1, 3, 4, 4), boxes=torch.tensor([[-2, 2, 9, 9]])) == BOX).all(2)
    assert colour[:, 2].all() and colour.sum() == 4     # only its left edge lies inside
