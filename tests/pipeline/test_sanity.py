"""The sanity figures never abort a run: a layer without weights of its own re-draws the
weights it reads through, a layer with none before it has its checks skipped with the reason,
a method that finds out while running that it does not apply is recorded and warned about."""

import json
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from featvis import UnsupportedError, VisualizeSettings, probe, visualize
from featvis.methods import Method, register

from helpers import random_dbn, run_cli


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(36, 5))


def _weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()
            if name.endswith("weight")}


def test_a_layer_without_weights_re_draws_those_it_reads_through():
    model = _cnn()
    seam = probe(model, (1, 8, 8))
    before = _weights(model)
    for key in ("0.1", "1"):                       # the ReLU, the pooling: the conv's
        after = _weights(seam.randomized(key, "layer", 3))
        assert not torch.equal(after["0.0.weight"], before["0.0.weight"])
        assert torch.equal(after["3.weight"], before["3.weight"])
        assert torch.equal(after["0.0.weight"], _weights(seam.randomized("0.0", "layer", 3))
                           ["0.0.weight"])                 # the same draw as the conv's own
    block = _weights(seam.randomized("0", "layer", 3))     # a block: the weights inside it
    assert not torch.equal(block["0.0.weight"], before["0.0.weight"])
    last = _weights(seam.randomized("3", "layer", 3))
    assert torch.equal(last["0.0.weight"], before["0.0.weight"])
    cascade = _weights(seam.randomized("3", "cascade", 3))
    assert not any(torch.equal(cascade[n], before[n]) for n in before)
    assert _weights(model).keys() == before.keys() and all(
        torch.equal(w, before[n]) for n, w in _weights(model).items())   # the model untouched


def test_a_layer_with_nothing_to_re_draw_skips_its_checks_with_the_reason(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    x = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    summary = visualize(model, x, tmp_path / "run", VisualizeSettings(
        layers=["0", "1"], methods=["examples", "maximize"], units=3, k=2, steps=3,
        restarts=1), progress=False)
    flat, linear = summary["layers"]
    assert flat["unavailable"]["Randomization checks"] == (
        "layer '0' is a Flatten and no layer at or before it has weights (Linear, Conv) to "
        "re-draw")
    assert not any("randomized" in label for figures in flat["figures"].values()
                   for label in figures)
    assert "distinctness" in flat["figures"]["maximize"]
    assert "randomized similarity (layer)" in linear["figures"]["maximize"]
    assert "Randomization checks" not in linear["unavailable"]
    assert "Randomization checks" in (tmp_path / "run" / flat["folder"] / "index.html"
                                      ).read_text()


def _first_layer_only(seam, key, units):
    if key != 1:
        raise UnsupportedError(f"layer {key} is not the first")
    rows = seam.incoming_weights(key)[torch.as_tensor(units)]
    return SimpleNamespace(images=rows.reshape(len(units), *seam.input_shape))


def test_a_method_that_does_not_apply_while_running_is_recorded_and_warned(
        restored_registry, tmp_path, capsys):
    register(Method("first_only", "First only", "l", _first_layer_only,
                    requires={"weights"}))
    dbn = random_dbn([16, 6, 4])
    summary = visualize(dbn, torch.rand(20, 16), tmp_path / "run", VisualizeSettings(
        methods=["first_only"], units=2, top=3), progress=False)
    assert summary["layers"][0]["methods"] == ["first_only"]
    assert summary["layers"][1]["unavailable"] == {"First only": "layer 2 is not the first"}
    assert capsys.readouterr().err.endswith(
        "featvis: warning: layer 2: First only not shown: layer 2 is not the first\n")


def test_no_figures_on_the_command_line(tmp_path, capsys):
    random_dbn([16, 6], seed=0).save(tmp_path / "m.safetensors")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 16), dtype=np.float32))
    code, _, err = run_cli(capsys, "visualize", tmp_path / "m.safetensors", "--images",
                           tmp_path / "x.npy", "--out", tmp_path / "run", "--methods",
                           "examples", "--units", "3", "--k", "2", "--no-figures", "--quiet")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["settings"]["figures"] is False and summary["sanity_settings"] is None
    assert list(summary["layers"][0]["figures"]["examples"]) == ["mean top-1 example activation"]
