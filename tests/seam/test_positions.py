"""Where a unit with positions took its value: the token of a feature over a sequence, the
row and column of a channels-last map, checked against the argmax of explicit forward passes;
the patch of the input a token stands for (a ViT's patch embedding); maximization of one
token against its closed-form optimum; and the boxed examples the gallery shows."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from featvis import VisualizeSettings, maximize, probe, top_examples, visualize
from featvis.models.vit import ReferenceViT
from featvis.report.render import BOX
from featvis.seam.base import map_scores


@pytest.fixture(scope="module")
def vit():
    return ReferenceViT(width=12, depth=1, heads=2, seed=0).eval()


def inputs(n, seed=1):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_a_token_feature_returns_the_token_of_each_maximum(vit):
    x = inputs(60)
    with torch.no_grad():                        # the block's first half and fc1, by hand
        block = vit.blocks[0]
        tokens = vit.tokens(x)
        hidden = tokens + block.attn(block.norm1(tokens))
        fc1 = block.mlp.fc1(block.norm2(hidden))                       # (N, 17, 24)
    units = [0, 7, 23]
    ex = top_examples(vit, x, "blocks.0.mlp.fc1", k=4, units=units)
    best, token = fc1.max(1)                                           # over the 17 tokens
    expected = best[:, units].topk(4, dim=0)
    assert torch.equal(ex.indices, expected.indices.T)
    torch.testing.assert_close(ex.values, expected.values.T)
    assert ex.positions.shape == (3, 4, 1) and ex.positions.dtype == torch.long
    assert torch.equal(ex.positions[..., 0], token[:, units].T.gather(1, ex.indices))


def test_a_channels_last_map_returns_row_and_column():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU())            # (N, H, W, 3) -> (N, H, W, 5)
    x = torch.randn(30, 4, 6, 3, generator=torch.Generator().manual_seed(2))
    ex = top_examples(model, x, "1", k=3)
    with torch.no_grad():
        maps = torch.relu(model[0](x)).movedim(3, 1).flatten(2)       # (N, 5, 24)
    flat = maps.argmax(2).T.gather(1, ex.indices)                      # first maximum
    assert ex.positions.shape == (5, 3, 2)
    assert torch.equal(ex.positions[..., 0] * 6 + ex.positions[..., 1], flat)


@pytest.mark.parametrize("units_last", [False, True])
def test_a_shortlist_locates_exactly_its_rows_and_leaves_the_others_unlocated(units_last):
    # Integer values make ties across rows and positions: the first maximum must win.
    maps = torch.randint(0, 4, (30, 5, 3, 4), generator=torch.Generator().manual_seed(0)
                         ).float()
    laid = maps.movedim(1, -1) if units_last else maps
    rows = torch.randint(0, 30, (5, 6), generator=torch.Generator().manual_seed(1))
    scores = map_scores(laid, lambda values: rows, units_last=units_last)
    flat = maps.flatten(2)                                             # (N, U, P)
    assert torch.equal(scores.values, flat.amax(2))
    for u in range(5):
        for r in range(30):
            expected = flat[r, u].tolist().index(flat[r, u].max().item()) \
                if r in rows[u].tolist() else -1
            assert scores.positions[r, u].item() == expected
    assert torch.equal(map_scores(laid, units_last=units_last).positions,
                       torch.tensor([[row.tolist().index(max(row.tolist())) for row in unit]
                                     for unit in flat]))


def test_a_token_stands_for_its_patch_and_the_class_token_for_none(vit):
    seam = probe(vit, (1, 28, 28))
    tokens = torch.tensor([[0], [1], [6], [16]])       # class token; patches 0, 5 and 15
    boxes = seam.regions("blocks.0.mlp.fc1", tokens)
    assert boxes.tolist() == [[0, 0, 0, 0], [0, 0, 7, 7], [7, 7, 7, 7], [21, 21, 7, 7]]
    grid = seam.regions("blocks.0", torch.tensor([[[2]]]))            # any leading shape
    assert grid.tolist() == [[[0, 7, 7, 7]]]
    assert seam.regions("patch_embed", torch.tensor([[1, 2]])) is None    # channels on axis 1
    assert seam.regions("head", torch.zeros(1, 0, dtype=torch.long)) is None


def test_a_channels_last_grid_after_a_patchifying_stem_is_boxed_by_cell():
    class Stem(nn.Module):                      # ConvNeXt's stem: 4x4 patches, channels last
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 6, 4, stride=4)
            self.norm = nn.LayerNorm(6)

        def forward(self, x):
            return self.norm(self.stem(x).permute(0, 2, 3, 1))

    seam = probe(Stem(), (1, 12, 8))
    assert seam.layer("norm").positions_shape == (3, 2)
    assert seam.regions("norm", torch.tensor([[2, 1]])).tolist() == [[8, 4, 4, 4]]
    overlapping = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Flatten(2))
    assert probe(overlapping, (1, 4, 4)).regions("1", torch.tensor([[0]])) is None


def test_maximizing_one_token_reaches_its_closed_form_optimum():
    """A Linear on tokens: unit u at token t reads w_u . x_t + b_u, whose maximum on the sphere
    ||x|| = rho puts rho w_u / ||w_u|| on token t and nothing elsewhere."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4))
    rho, units = 2.0, [1, 3]
    for token in (0, -1):
        result = maximize(model, "0", units=units, rho=rho, input_shape=(6, 5), steps=150,
                          restarts=2, spatial=token)
        w = model[0].weight.detach()[units]
        optimum = torch.zeros(2, 6, 5)
        optimum[:, token] = rho * w / w.norm(dim=1, keepdim=True)
        best = result.images                                       # (U, 6, 5): best restart
        torch.testing.assert_close(best, optimum, atol=2e-3, rtol=0)
        expected = rho * w.norm(dim=1) + model[0].bias.detach()[units]
        torch.testing.assert_close(result.activation, expected, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"^spatial=6: the units of layer '0' have 6 positions "
                                         r"\(6,\), so 0..5 or -6..-1$"):
        maximize(model, "0", units=[0], rho=rho, input_shape=(6, 5), spatial=6)
    with pytest.raises(ValueError, match=r"^spatial must be one of mean, center, positive or "
                                         r"an integer, got 'first'$"):
        maximize(model, "0", units=[0], rho=rho, input_shape=(6, 5), spatial="first")


def test_the_gallery_boxes_each_example_at_its_winning_patch(vit, tmp_path):
    x = inputs(40)
    settings = VisualizeSettings(layers=["blocks.0.mlp.fc1"], methods=["examples"], units=2,
                                 k=3, upscale=1, figures=False)
    visualize(vit, x, tmp_path / "run", settings, progress=False, gallery=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    (layer,) = summary["layers"]
    ex = top_examples(vit, x, "blocks.0.mlp.fc1", k=3, units=[0, 1])
    for j, unit in enumerate(layer["unit_details"]):
        assert unit["examples"]["positions"] == ex.positions[j].tolist()
    strip = next((tmp_path / "run").glob("layer*/units/0/examples_strip.png"))
    from PIL import Image
    picture = np.asarray(Image.open(strip).convert("RGB"))
    red = (picture == BOX).all(2)
    boxes = probe(vit, (1, 28, 28)).regions("blocks.0.mlp.fc1", ex.positions[0])
    for i, (top, left, height, width) in enumerate(boxes.tolist()):   # 28 px + 1 px apart
        cell = red[:, i * 29:i * 29 + 28]
        if height == 0:
            assert not cell.any()                                      # the class token
        else:
            rows, cols = cell.nonzero()
            assert (rows.min(), rows.max(), cols.min(), cols.max()) == \
                (top, top + height - 1, left, left + width - 1)
