"""Which axis of a layer's output holds its units: rules read from the modules before it,
checked against explicit forward passes of hand-written transformer and channels-last
models; a layer no rule decides is refused by name, never read on a guessed axis."""

import pytest
import torch
from torch import nn

from featvis import LayerError, layers, probe, top_examples


class Block(nn.Module):
    """A pre-norm transformer block's MLP half: x + fc2(gelu(fc1(norm(x))))."""

    def __init__(self, width=8, hidden=12):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViT(nn.Module):
    """Patches of 7x7 of a 28x28 image as 16 tokens of width 8, one block, a mean-token
    head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 8, 7, stride=7)
        self.block = Block()
        self.head = nn.Linear(8, 10)

    def tokens(self, x):
        return self.embed(x).flatten(2).transpose(1, 2)          # (N, 16, 8)

    def forward(self, x):
        return self.head(self.block(self.tokens(x)).mean(1))


class Swap(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


class ChannelsLast(nn.Module):
    """A per-pixel MLP on (N, H, W, C) inputs, then its features moved to axis 1."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Linear(3, 6)
        self.act = nn.ReLU()
        self.swap = Swap()

    def forward(self, x):
        return self.swap(self.act(self.mix(x)))


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return TinyViT().eval()


def test_token_features_have_their_units_on_the_last_axis(vit):
    infos = {info.name: info for info in layers(vit, torch.zeros(1, 1, 28, 28))}
    assert (infos["embed"].unit_axis, infos["embed"].units, infos["embed"].unit_shape) == \
        (1, 8, (4, 4))
    for name, units in (("block.fc1", 12), ("block.act", 12), ("block.fc2", 8),
                        ("block", 8), ("block.norm", 8)):
        info = infos[name]
        assert (info.unit_axis, info.units, info.positions_shape) == (2, units, (16,)), name
    assert (infos["head"].unit_axis, infos["head"].units) == (1, 10)


def test_a_token_layer_is_mined_and_maximized_on_its_features(vit):
    x = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden = vit.block.fc1(vit.block.norm(vit.tokens(x)))          # (N, 16, 12)
    best = hidden.amax(1)                                              # (N, 12): max over tokens
    ex = top_examples(vit, x, "block.fc1", k=3, units=[0, 5, 11])
    expected = best[:, [0, 5, 11]].topk(3, dim=0)
    assert torch.equal(ex.indices, expected.indices.T)
    torch.testing.assert_close(ex.values, expected.values.T)
    units = torch.tensor([0, 5, 11])
    value = probe(vit, (1, 28, 28)).objective("block.fc1", units, "mean")(x[:3])
    torch.testing.assert_close(value, hidden[torch.arange(3), :, units].mean(1))


def test_a_channels_last_layer_has_its_units_on_the_last_axis():
    model = ChannelsLast()
    infos = {info.name: info for info in layers(model, torch.zeros(1, 4, 5, 3))}
    assert (infos["mix"].unit_axis, infos["mix"].units, infos["mix"].unit_shape) == \
        (3, 6, (4, 5))
    assert (infos["act"].unit_axis, infos["act"].units) == (3, 6)
    x = torch.rand(10, 4, 5, 3, generator=torch.Generator().manual_seed(2))
    ex = top_examples(model, x, "act", k=2, units=[4])
    explicit = torch.relu(model.mix(x))[..., 4].flatten(1).amax(1)
    assert torch.equal(ex.indices[0], explicit.topk(2).indices)


def test_a_layer_no_rule_decides_is_refused_naming_the_override():
    model = ChannelsLast()
    seam = probe(model, (5, 3))                # (N, 5, 3) -> (N, 5, 6) -> swapped (N, 6, 5)
    with pytest.raises(LayerError, match=r"^layer 'swap' has output \(6, 5\) and no rule "
                       r"decides .*unit_axis=\{'swap': -1\} or --layers swap@-1"):
        seam.layer("swap")
    assert "swap" not in seam.layer_keys()
    named = probe(model, (5, 3), unit_axis={"swap": 1}).layer("swap")
    assert (named.unit_axis, named.units, named.unit_shape) == (1, 6, (5,))


@pytest.mark.parametrize("unit_axis,problem", [
    ({"nope": -1}, "unit_axis names layer 'nope', which is not a module of the model"),
    ({"mix": 0}, r"unit_axis 'mix': 0 is not an axis of its output \(5, 6\) after the batch"),
    ({"mix": 3}, r"unit_axis 'mix': 3 is not an axis"),
])
def test_a_wrong_override_is_one_line(unit_axis, problem):
    with pytest.raises(LayerError, match=problem):
        probe(ChannelsLast(), (5, 3), unit_axis=unit_axis).layer_keys()


SWAPPED = """
import torch
from torch import nn


class Swap(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), Swap(), nn.Linear(5, 4))
"""


def test_the_cli_names_an_axis_with_layer_at_axis(tmp_path, capsys, monkeypatch):
    """(N, 5, 3) -> Linear -> (N, 5, 6) -> Swap -> (N, 6, 5) -> Linear -> (N, 6, 4)."""
    import json

    import numpy as np

    from helpers import run_cli

    (tmp_path / "fv_swapped.py").write_text(SWAPPED)
    monkeypatch.syspath_prepend(str(tmp_path))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((12, 5, 3), dtype=np.float32))
    run = ["visualize", "--model", "fv_swapped:build", "--images", tmp_path / "x.npy",
           "--input-shape", "5,3", "--methods", "examples", "--units", "2", "--k", "2",
           "--quiet"]
    code, _, err = run_cli(capsys, *run, "--layers", "1", "--out", tmp_path / "no")
    assert code == 2 and "layer '1' has output (6, 5) and no rule decides" in err
    assert "--layers 1@-1 for the last axis" in err and not (tmp_path / "no").exists()
    code, _, err = run_cli(capsys, *run, "--layers", "0,2", "--out", tmp_path / "rules")
    assert code == 0, err
    first, last = json.loads((tmp_path / "rules" / "summary.json").read_text())["layers"]
    assert (first["unit_axis"], first["n_units"], first["unit_shape"]) == (2, 6, [5])
    assert (last["unit_axis"], last["n_units"], last["unit_shape"]) == (2, 4, [6])
    # Named on the command line: the tokens of layer 0 as its units, as asked.
    code, _, err = run_cli(capsys, *run, "--layers", "0@1", "--out", tmp_path / "named")
    assert code == 0, err
    layer = json.loads((tmp_path / "named" / "summary.json").read_text())["layers"][0]
    assert (layer["layer"], layer["n_units"], layer["unit_shape"]) == ("0", 5, [6])
    assert "unit_axis" not in layer                   # axis 1, as every older run's
