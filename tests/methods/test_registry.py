"""Methods as plugins: a method registered from outside runs in visualize like featvis's own."""

import json
from types import SimpleNamespace

import pytest
import torch

from featvis import VisualizeSettings, probe, visualize
from featvis.methods import Method, register, registered
from featvis.params import Interval, Param

from helpers import random_dbn


def _scaled_weights(seam, key, units, *, gain):
    """Each first-layer unit's incoming weights times ``gain``, as pictures."""
    rows = seam.incoming_weights(key)[torch.as_tensor(units)] * gain
    return SimpleNamespace(images=rows.reshape(len(units), *seam.input_shape))


PLUGIN = Method("scaled_weights", "Scaled weights", "Each unit's weights on the input, scaled.",
                _scaled_weights, requires={"weights", "filters"},
                params={"gain": Param(Interval(int, 1, 5), 2, "scale of the weights")})


@pytest.fixture(scope="module")
def plugin():
    from featvis.methods import registry

    yield register(PLUGIN, replace=True)
    registry._REGISTRY.pop(PLUGIN.name)          # other tests see featvis's own methods


def test_a_registered_method_runs_in_visualize_and_its_gallery(plugin, tmp_path):
    dbn = random_dbn([16, 6, 4], seed=0)
    x = torch.rand(30, 16, generator=torch.Generator().manual_seed(0))
    assert list(registered())[-1] == "scaled_weights"
    settings = VisualizeSettings(methods=["examples", "scaled_weights"], units=3, k=2,
                                 options={"gain": 3})
    summary = visualize(dbn, x, tmp_path / "run", settings, progress=False)
    first, second = summary["layers"]
    assert first["methods"] == ["examples", "scaled_weights"]
    assert second["unavailable"]["Scaled weights"].startswith("layer 2 is not a first layer")
    assert summary["settings"]["options"] == {"gain": 3}
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["layers"][0]["files"]["scaled_weights"] == first["files"]["scaled_weights"]
    assert (tmp_path / "run" / first["files"]["scaled_weights"]).is_file()
    assert "Scaled weights" in (tmp_path / "run" / "index.html").read_text()
    # The picture is the plugin's own result: 3 x the weights of the shown units.
    assert torch.equal(_scaled_weights(probe(dbn), 1, [0, 1, 2], gain=3).images,
                       dbn.rbms[0].weight[:3].detach() * 3)


def test_a_plugins_declared_parameter_is_enforced(plugin, tmp_path):
    dbn = random_dbn([16, 6], seed=0)
    x = torch.rand(10, 16)
    for gain, problem in ((9, "gain must be an integer in 1..5, got 9"),
                          ("2", "gain must be an integer in 1..5, got '2'")):
        with pytest.raises(ValueError, match=problem):
            visualize(dbn, x, tmp_path / "run", VisualizeSettings(
                methods=["scaled_weights"], options={"gain": gain}), progress=False)
    with pytest.raises(ValueError, match="no method chosen takes a parameter 'gian'"):
        visualize(dbn, x, tmp_path / "run", VisualizeSettings(
            methods=["scaled_weights"], options={"gian": 2}), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_taken_name_is_refused_unless_replaced(plugin):
    with pytest.raises(ValueError, match="'maximize' is registered already"):
        register(Method("maximize", "t", "l", _scaled_weights))
    with pytest.raises(TypeError, match="register takes a featvis.methods.Method"):
        register(_scaled_weights)


def test_a_requirement_no_probe_offers_is_an_error(plugin):
    odd = Method("odd", "Odd", "l", _scaled_weights, requires={"telepathy"})
    with pytest.raises(ValueError, match="requires 'telepathy', which no probe offers"):
        odd.unavailable(probe(random_dbn([4, 3])), 1)
