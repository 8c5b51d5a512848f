"""Directions as units: a direction's value is the projection of its layer's output on it,
checked against explicit projections (a ViT's tokens, a Linear layer, a DBN's
pre-activations); maximization of a direction against its closed-form optimum on the sphere
and lucent's dot x cos^p against its formula; refusals in one line; the gallery and the
command line name them directions."""

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from featvis import DataError, LayerError, UnsupportedError, maximize, probe, top_examples
from featvis.models.vit import ReferenceViT
from featvis.seam import directed

from helpers import random_dbn, run_cli


@pytest.fixture(scope="module")
def vit():
    return ReferenceViT(width=12, depth=1, heads=2, seed=0).eval()


def test_a_direction_ranks_by_its_projection_at_the_best_token(vit):
    x = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    v = torch.randn(3, 24, generator=torch.Generator().manual_seed(2))
    ex = top_examples(vit, x, "blocks.0.mlp.fc1", k=4, directions=v)
    with torch.no_grad():
        block = vit.blocks[0]
        tokens = vit.tokens(x)
        fc1 = block.mlp.fc1(block.norm2(tokens + block.attn(block.norm1(tokens))))
    projections = torch.einsum("ntc,vc->nvt", fc1, v)                  # (N, 3, 17)
    best, token = projections.max(2)
    expected = best.topk(4, dim=0)
    assert torch.equal(ex.indices, expected.indices.T)
    torch.testing.assert_close(ex.values, expected.values.T)
    assert torch.equal(ex.positions[..., 0], token.T.gather(1, ex.indices))
    picked = top_examples(vit, x, "blocks.0.mlp.fc1", k=4, directions=v, units=[2])
    assert torch.equal(picked.indices, ex.indices[2:]) and picked.units.tolist() == [2]


def test_a_dbn_direction_projects_the_pre_activations():
    dbn = random_dbn([12, 6], seed=3)
    x = torch.rand(40, 12, generator=torch.Generator().manual_seed(4))
    v = torch.randn(2, 6, generator=torch.Generator().manual_seed(5))
    ex = top_examples(dbn, x, 1, k=3, directions=v)
    logits = x @ dbn.rbms[0].weight.T + dbn.rbms[0].hidden_bias
    expected = (logits @ v.T).topk(3, dim=0)
    assert torch.equal(ex.indices, expected.indices.T)
    torch.testing.assert_close(ex.values, expected.values.T)   # projections, no sigmoid


def test_maximizing_a_direction_reaches_its_closed_form_optimum():
    """On a Linear layer, v . (W x + b) is maximal on ||x|| = rho at rho W^T v / ||W^T v||."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 5))
    v = torch.randn(2, 5, generator=torch.Generator().manual_seed(6))
    result = maximize(model, "0", directions=v, rho=3.0, input_shape=(8,), steps=300,
                      restarts=2)
    w, b = model[0].weight.detach(), model[0].bias.detach()
    along = v @ w                                                        # (2, 8)
    torch.testing.assert_close(result.images, 3.0 * along / along.norm(dim=1, keepdim=True),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(result.activation, 3.0 * along.norm(dim=1) + v @ b,
                               atol=1e-4, rtol=0)


def test_dot_times_cosine_power_is_lucents_formula(vit):
    seam = directed(probe(vit, (1, 28, 28)), {"blocks.0": torch.randn(
        2, 12, generator=torch.Generator().manual_seed(7))})
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(8))
    units = torch.tensor([0, 1, 1, 0])
    value = seam.objective("blocks.0", units, "mean", cosine_power=2.0)(x)
    with torch.no_grad():
        block = vit.blocks[0]
        tokens = vit.tokens(x)
        hidden = tokens + block.attn(block.norm1(tokens))
        out = hidden + block.mlp(block.norm2(hidden))                      # (4, 17, 12)
    d = seam.directions["blocks.0"][units]                                # (4, 12)
    dot = (out * d[:, None]).sum(2)
    cos = dot / (out.norm(dim=2) * d.norm(dim=1, keepdim=True))
    torch.testing.assert_close(value, (dot * cos.clamp(min=0.1) ** 2).mean(1))


@pytest.mark.parametrize("directions,error,message", [
    ({"blocks.0": torch.randn(2, 5)}, DataError,
     r"^directions for layer 'blocks.0' must be a floating tensor \(V, 12\), one row per "
     r"direction over its 12 units, got torch.float32 \(2, 5\)$"),
    ({"blocks.0": torch.ones(1, 12, dtype=torch.long)}, DataError, r"must be a floating"),
    ({"blocks.0": torch.full((1, 12), float("nan"))}, DataError, r"contain NaN"),
    ({"blocks.9": torch.randn(1, 12)}, LayerError, r"^unknown layer 'blocks.9'"),
    ({}, ValueError, r"^directions: no layer given$"),
])
def test_bad_directions_are_refused_in_one_line(vit, directions, error, message):
    with pytest.raises(error, match=message):
        directed(probe(vit, (1, 28, 28)), directions)


def test_directions_offer_examples_and_maximization_only(vit):
    seam = directed(probe(vit, (1, 28, 28)), {"blocks.0": torch.randn(3, 12)})
    info = seam.layer("blocks.0")
    assert (info.units, info.unit_name, info.positions_shape) == (3, "direction", (17,))
    assert seam.layer("blocks.0.mlp.fc1").unit_name == "unit"         # other layers as before
    offered = {need for need, reason in seam.supports("blocks.0").items() if reason is None}
    assert offered == {"examples", "maximize", "directions"}
    with pytest.raises(UnsupportedError, match="shows directions in its space"):
        seam.incoming_weights("blocks.0")
    assert seam.default_layers() == ["blocks.0"]
    from featvis.models import ConvDBN
    cdbn = ConvDBN([dict(filters=2, filter_size=3, pool=2)], input_shape=(1, 8, 8))
    with pytest.raises(UnsupportedError, match="directions are read in a module's or a DBN's"):
        directed(probe(cdbn, (1, 8, 8)), {1: torch.randn(1, 2)})
    from featvis.pipeline.shards import mine_shard
    with pytest.raises(UnsupportedError, match="^shards: directions are mined in one process"):
        mine_shard(seam, torch.rand(10, 1, 28, 28), ["blocks.0"], k=2)


def test_the_cli_shows_a_file_of_directions_as_directions(tmp_path, capsys, vit):
    vit.save(tmp_path / "vit.safetensors")
    save_file({"blocks.0.mlp.fc1": torch.randn(3, 24)}, tmp_path / "d.safetensors")
    run = ["visualize", tmp_path / "vit.safetensors", "--units", "2", "--steps", "5",
           "--restarts", "1", "--k", "2", "--no-figures", "--quiet"]
    code, _, err = run_cli(capsys, *run, "--directions", tmp_path / "d.safetensors",
                           "--out", tmp_path / "run")
    assert code == 0, err
    (layer,) = json.loads((tmp_path / "run" / "summary.json").read_text())["layers"]
    assert (layer["layer"], layer["n_units"], layer["unit_name"]) == \
        ("blocks.0.mlp.fc1", 3, "direction")
    assert layer["methods"] == ["examples", "statistics", "maximize"]
    page = next((tmp_path / "run").glob("layer*/units/1/index.html")).read_text()
    assert "direction 1" in page
    save_file({"blocks.0.mlp.fc1": torch.randn(3, 25)}, tmp_path / "bad.safetensors")
    code, _, err = run_cli(capsys, *run, "--directions", tmp_path / "bad.safetensors",
                           "--out", tmp_path / "no")
    assert code == 2 and err.count("\n") == 1 and "(V, 24)" in err
    assert not (tmp_path / "no").exists()
    save_file({"blocks.0.mlp.fc1": torch.ones(3, 24, dtype=torch.int32)},
              tmp_path / "ints.safetensors")
    code, _, err = run_cli(capsys, *run, "--directions", tmp_path / "ints.safetensors",
                           "--out", tmp_path / "no")
    assert code == 2 and "tensor 'blocks.0.mlp.fc1' is I32" in err
