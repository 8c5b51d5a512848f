"""Methods as plugins: a method registered from outside runs in visualize like featvis's own."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np

import pytest
import torch

from featvis import VisualizeSettings, probe, visualize
from featvis.methods import Method, register, registered
from featvis.params import Interval, Param

from helpers import random_dbn, run_cli


def _scaled_weights(seam, key, units, *, gain):
    """Each first-layer unit's incoming weights times ``gain``, as pictures."""
    rows = seam.incoming_weights(key)[torch.as_tensor(units)] * gain
    return SimpleNamespace(images=rows.reshape(len(units), *seam.input_shape))


PLUGIN = Method("scaled_weights", "Scaled weights", "Each unit's weights on the input, scaled.",
                _scaled_weights, requires={"weights", "filters"},
                params={"gain": Param(Interval(int, 1, 5), 2, "scale of the weights")})


@pytest.fixture()
def plugin(restored_registry):
    return register(PLUGIN, replace=True)


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


def test_the_cli_lists_a_plugin_and_enforces_its_declared_bound(plugin, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "methods")
    assert code == 0 and "scaled_weights  Scaled weights (needs: filters, weights; options: " \
        "--gain)" in out
    code, out, _ = run_cli(capsys, "visualize", "--help")
    assert code == 0 and "scaled_weights (Scaled weights):" in out
    words = " ".join(out.split())
    assert "--gain N scale of the weights (default 2)" in words
    assert "sampling, filters, filter_views, deconvnet, combination, scaled_weights" in words
    random_dbn([16, 6], seed=0).save(tmp_path / "m.safetensors")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 16), dtype=np.float32))
    run = ["visualize", tmp_path / "m.safetensors", "--images", tmp_path / "x.npy", "--out",
           tmp_path / "run", "--methods", "examples,scaled_weights", "--units", "3", "--k", "2",
           "--quiet"]
    code, _, err = run_cli(capsys, *run, "--gain", "9")
    assert code == 2 and err == ("featvis visualize: error: argument --gain: expected an "
                                 "integer in 1..5, got '9'\n")
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(capsys, *run, "--gain", "3")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["settings"]["options"] == {"gain": 3}
    assert summary["layers"][0]["methods"] == ["examples", "scaled_weights"]


def test_a_declared_none_from_the_cli_is_not_the_default(tmp_path, capsys):
    """``--bounds none`` is maximization on the sphere alone, not the default box."""
    random_dbn([16, 6], seed=0).save(tmp_path / "m.safetensors")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 16), dtype=np.float32))
    code, _, err = run_cli(capsys, "visualize", tmp_path / "m.safetensors", "--images",
                           tmp_path / "x.npy", "--out", tmp_path / "run", "--methods",
                           "maximize", "--units", "2", "--steps", "5", "--restarts", "1",
                           "--bounds", "none", "--quiet")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["settings"]["bounds"] is None


PLUGIN_MODULE = """
from types import SimpleNamespace
from featvis.methods import Method, register

def negated(probe, key, units):
    rows = probe.incoming_weights(key)[list(units)]
    return SimpleNamespace(images=-rows.reshape(len(units), *probe.input_shape))

NEGATED = Method("negated", "Negated weights", "Each unit's weights, negated.", negated,
                 requires={"weights", "filters"})
"""


def test_plugins_named_on_the_command_line_are_imported_first(restored_registry, tmp_path,
                                                               capsys, monkeypatch):
    (tmp_path / "fv_negated.py").write_text(PLUGIN_MODULE + "register(NEGATED)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fv_negated", raising=False)
    code, out, _ = run_cli(capsys, "--plugins", "fv_negated", "methods")
    assert code == 0 and "negated       Negated weights" in out
    code, _, err = run_cli(capsys, "visualize", "--plugins=fv_missing", "--help")
    assert code == 2 and err == ("featvis: error: --plugins fv_missing: ModuleNotFoundError: "
                                 "No module named 'fv_missing'\n")


def test_entry_points_of_installed_packages_are_loaded(tmp_path):
    """A package's ``featvis.methods`` entry point (a Method) is registered; a broken one is
    a one-line warning and the command goes on."""
    (tmp_path / "fv_negated.py").write_text(PLUGIN_MODULE)
    info = tmp_path / "fv_negated-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fv-negated\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[featvis.methods]\nnegated = fv_negated:NEGATED\n"
                                           "broken = fv_nowhere\n")
    env = os.environ | {"PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "featvis", "methods"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0
    assert "negated       Negated weights (needs: filters, weights)" in done.stdout
    assert done.stderr == ("featvis: warning: entry point broken = fv_nowhere (featvis.methods)"
                           " not loaded: ModuleNotFoundError: No module named 'fv_nowhere'\n")
