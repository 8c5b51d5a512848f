"""Composed objectives: sums and scalings of units and directions against their closed-form
optimum on the sphere, penalties against the keyword penalties they replace, only the
declared layers hooked in one forward pass, refusals in one line; and ``--units
layer:unit``."""

import json

import pytest
import torch
from torch import nn

from featvis import maximize, probe
from featvis.objectives import Batch, direction, diversity, l2, tv, unit

from helpers import run_cli


def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))


def test_a_combination_of_units_reaches_its_closed_form_optimum():
    """On a Linear layer, unit(a) - 0.5 unit(b) + 2 direction(v) is (w_a - 0.5 w_b + 2 v W) . x
    plus a constant, maximal on ||x|| = rho along that vector."""
    model = linear()
    v = torch.tensor([0.3, -1.0, 0.2, 0.5])
    goal = unit("0", 1) - 0.5 * unit("0", 3) + direction("0", v) * 2
    result = maximize(model, objective=goal, rho=2.0, input_shape=(6,), steps=300, restarts=3)
    w, b = model[0].weight.detach(), model[0].bias.detach()
    along = w[1] - 0.5 * w[3] + 2 * v @ w
    assert result.images.shape == (1, 6) and result.all.shape == (1, 3, 6)
    torch.testing.assert_close(result.images[0], 2.0 * along / along.norm(), atol=1e-3, rtol=0)
    expected = 2.0 * along.norm() + b[1] - 0.5 * b[3] + 2 * v @ b
    torch.testing.assert_close(result.activation[0], expected, atol=1e-4, rtol=0)


def test_an_objective_reads_its_layers_in_one_forward_pass():
    model = linear()
    goal = unit("0", 0) + 0.1 * unit("2", 2) - 0.01 * tv()
    assert goal.layers == {"0", "2"} and unit("0", 1).layers == {"0"} and not l2().layers
    seam = probe(model, (6,))
    seam.layer_keys()                                    # discovery's own forward pass first
    calls, hooked = [], []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    read = seam.outputs
    seam.outputs = lambda x, keys: hooked.append(sorted(keys)) or read(x, keys)
    maximize(seam, objective=goal, rho=1.0, steps=3, restarts=2)
    assert set(map(tuple, hooked)) == {("0", "2")}
    assert len(calls) == len(hooked)                     # one forward pass per evaluation


def test_values_are_the_formulas():
    model = linear()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    seam = probe(model, (6,))
    outputs = seam.outputs(x, ["0", "1"])
    batch = Batch(x, (6,), outputs, restarts=2, seen=x)
    first = model[0](x).detach()
    torch.testing.assert_close((unit("1", 2) - 3 * unit("0", 0))(batch),
                               torch.relu(first[:, 2]) - 3 * first[:, 0])
    torch.testing.assert_close((-l2())(batch), -x.pow(2).sum(1))
    cos = torch.nn.functional.cosine_similarity(x[[0, 2]], x[[1, 3]])
    torch.testing.assert_close(diversity()(batch), cos.repeat_interleave(2))
    assert repr(unit("0", 1) - 0.5 * l2()) == "unit('0', 1, spatial='positive') - 0.5 * l2()"


def test_keyword_penalties_are_objectives():
    """maximize(layer, unit, l2=w, tv=t) climbs unit - w l2() - t tv(): the same pictures."""
    torch.manual_seed(2)
    cnn = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU())
    common = dict(rho=3.0, input_shape=(1, 6, 6), steps=40, restarts=2)
    by_keywords = maximize(cnn, "1", units=[0], l2=0.05, tv=0.02, **common)   # same starts
    by_objective = maximize(cnn, objective=unit("1", 0) - 0.05 * l2() - 0.02 * tv(), **common)
    torch.testing.assert_close(by_objective.images, by_keywords.images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("call,error,message", [
    (lambda m: maximize(m, objective=unit("0", 4), rho=1.0, input_shape=(6,)), ValueError,
     r"^unit 4 of layer '0': the layer has 4 units \(0..3\)$"),
    (lambda m: maximize(m, objective=unit("9", 0), rho=1.0, input_shape=(6,)), Exception,
     r"unknown layer '9'"),
    (lambda m: maximize(m, "0", objective=unit("0", 0), rho=1.0, input_shape=(6,)), ValueError,
     r"^objective: give it instead of layer, units and directions$"),
    (lambda m: maximize(m, objective=-l2(), rho=1.0, input_shape=(6,)), ValueError,
     r"reads no layer of the model"),
    (lambda m: maximize(m, rho=1.0, input_shape=(6,)), ValueError, r"needs a layer"),
    (lambda m: unit("0", 0) + 1.0, TypeError, r"objectives combine with objectives"),
    (lambda m: unit("0", 0) * float("nan"), TypeError, r"scales by a finite number"),
    (lambda m: unit("0", 0, spatial="middle"), ValueError, r"^spatial must be one of"),
    (lambda m: direction("0", torch.ones(2, 2)), ValueError, r"^v must be a finite floating"),
    (lambda m: maximize(m, objective=direction("0", torch.ones(5)), rho=1.0,
                        input_shape=(6,)), ValueError, r"v has 5 values, the layer 4 units"),
])
def test_bad_objectives_are_refused_in_one_line(call, error, message):
    with pytest.raises(error, match=message):
        call(linear())


def test_units_by_layer_on_the_command_line(tmp_path, capsys):
    run = ["visualize", "--model", "cnn", "--methods", "examples", "--k", "2", "--quiet",
           "--no-figures"]
    code, _, err = run_cli(capsys, *run, "--units", "features.3:5,classifier.1:0,features.3:2",
                           "--out", tmp_path / "run")
    assert code == 0, err
    layers = json.loads((tmp_path / "run" / "summary.json").read_text())["layers"]
    assert [(layer["layer"], layer["units"]) for layer in layers] == \
        [("features.3", [5, 2]), ("classifier.1", [0])]
    code, _, err = run_cli(capsys, *run, "--units", "features.3:1", "--layers",
                           "features.3,features.0", "--out", tmp_path / "no")
    assert code == 2 and "layer features.0 is shown without any" in err
    code, _, err = run_cli(capsys, *run, "--units", "features.3:40", "--out", tmp_path / "no")
    assert code == 2 and "layer features.3 has 32 units (0..31), not 40" in err
    assert not (tmp_path / "no").exists()
