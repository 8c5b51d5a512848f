"""The reference ViT (featvis.reference_vit): its shipped weights, its layers as featvis reads
them, its attention against the explicit formula, checkpoints; and its demo."""

import math

import pytest
import torch

import featvis
from featvis.models import ReferenceViT
from featvis.models.vit import PATCH
from featvis.pipeline.demo import run_shipped_demo


@pytest.fixture(scope="module")
def shipped():
    return featvis.reference_vit()


def test_the_config_is_the_documented_one(shipped):
    assert shipped.config == {"width": 64, "depth": 3, "heads": 4, "classes": 10}


def test_every_token_layer_has_its_features_as_units(shipped):
    seam = featvis.probe(shipped, (1, 28, 28))
    tokens = 1 + (28 // PATCH) ** 2
    assert seam.layer("patch_embed").positions_shape == (4, 4)
    for key, units in (("blocks.0.norm1", 64), ("blocks.0.attn.qkv", 192),
                       ("blocks.1.mlp.fc1", 128), ("blocks.2", 64), ("norm", 64)):
        info = seam.layer(key)
        assert (info.units, info.positions_shape, info.unit_axis) == (units, (tokens,), 2)
    assert seam.layer("class_token").unit_shape == () and seam.layer("head").units == 10


def test_attention_is_the_explicit_softmax_formula():
    model = ReferenceViT(width=8, depth=1, heads=2, seed=3).eval()
    attn = model.blocks[0].attn
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(4))
    q, k, v = attn.qkv(x).split(8, dim=2)
    heads = []
    for h in range(2):
        part = slice(4 * h, 4 * h + 4)
        weights = torch.softmax(q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(4), -1)
        heads.append(weights @ v[..., part])
    torch.testing.assert_close(attn(x), attn.proj(torch.cat(heads, 2)))


def test_a_vit_round_trips_and_draws_its_weights_from_the_seed(tmp_path):
    a, b = ReferenceViT(width=8, depth=2, heads=2, seed=5), ReferenceViT(width=8, depth=2,
                                                                        heads=2, seed=5)
    assert all(torch.equal(t, b.state_dict()[n]) for n, t in a.state_dict().items())
    assert a.cls_token.abs().max() > 0 and a.pos_embed.std() < 0.05        # N(0, 0.02^2)
    a.save(tmp_path / "v.safetensors")
    loaded = featvis.load(tmp_path / "v.safetensors")
    assert type(loaded) is ReferenceViT and loaded.config == a.config
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), a.eval()(x))
    with pytest.raises(ValueError, match="width must be at most 1024 and a multiple of heads"):
        ReferenceViT(width=10, heads=4)


def test_the_vit_demo_shows_blocks_neurons_and_the_class_token(tmp_path):
    settings = featvis.VisualizeSettings(
        layers=["patch_embed", "blocks.0.mlp.fc1", "class_token"], units=2, k=3, steps=5,
        restarts=1, param="fourier", transforms="standard", figures=False)
    index = run_shipped_demo("vit", tmp_path / "demo", settings=settings, progress=False)
    summary = featvis.io.runfolder.load_summary(tmp_path / "demo")
    methods = {layer["layer"]: layer["methods"] for layer in summary["layers"]}
    assert methods == {"patch_embed": ["examples", "statistics", "maximize", "deconvnet",
                                       "combination"],
                       "blocks.0.mlp.fc1": ["examples", "statistics", "maximize"],
                       "class_token": ["examples", "statistics", "maximize"]}
    assert index.is_file()
