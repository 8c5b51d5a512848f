"""The natural-image demo end to end, shrunk: patches, a Gaussian DBN, every method, the
model saved in the run folder."""

import json

from featvis import DBN
from featvis.report import INDEX

from helpers import run_cli


def test_natural_demo_end_to_end_tiny(tmp_path, capsys, monkeypatch):
    import featvis.pipeline.demo

    monkeypatch.setitem(featvis.pipeline.demo.NATURAL_DEMO, "patches", 600)
    monkeypatch.setitem(featvis.pipeline.demo.NATURAL_DEMO, "epochs", 1)
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli(capsys, "demo", "--dataset", "natural", "--out", out,
                                   "--sizes", "64,10,5", "--units", 2, "--quiet")
    assert code == 0 and stdout.strip() == str(out / INDEX), stderr
    assert "recipe lee, 1 epochs per RBM on 600 8x8 patches of 9 photographs" in stderr
    assert "first-layer filters: locality" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [layer["methods"] for layer in summary["layers"]] == [
        ["examples", "statistics", "maximize", "sampling", "filter_views", "combination"],
        ["examples", "statistics", "maximize", "sampling", "filters", "combination"]]
    assert summary["model"]["whitening"] == {"kind": "1/f", "f0": 0.4}
    assert DBN.load(out / "model.safetensors").visible == "gaussian"


def test_natural_demo_is_for_the_dbn(tmp_path, capsys):
    code, _, err = run_cli(capsys, "demo", "--dataset", "natural", "--model", "cnn", "--out",
                           tmp_path / "d", "--quiet")
    assert code == 2 and "--dataset natural is for --model dbn" in err
    assert not (tmp_path / "d").exists()


def test_cdbn_demo_end_to_end_tiny(tmp_path, capsys, monkeypatch):
    import featvis.pipeline.demo
    from featvis import ConvDBN, load

    monkeypatch.setitem(featvis.pipeline.demo.CDBN_DEMO, "layers", [
        dict(filters=4, filter_size=5, pool=2), dict(filters=3, filter_size=3, pool=2)])
    for key, value in (("images", 300), ("steps", 5), ("restarts", 2), ("samples", 4)):
        monkeypatch.setitem(featvis.pipeline.demo.CDBN_DEMO, key, value)
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli(capsys, "demo", "--model", "cdbn", "--out", out, "--epochs",
                                   1, "--units", 2, "--quiet")
    assert code == 0 and stdout.strip() == str(out / INDEX), stderr
    assert "ConvDBN 4x5x2-3x3x2, 1 epochs per layer on 300 MNIST images" in stderr
    assert "first-layer bases: locality" in stderr and "(random filters of this size" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [layer["methods"] for layer in summary["layers"]] == [
        ["examples", "statistics", "maximize", "sampling", "combination"],
        ["examples", "statistics", "maximize", "sampling", "filters", "combination"]]
    model = load(out / "model.safetensors")
    assert type(model) is ConvDBN and model.trained_layers == 2
    assert summary["model"]["path"] == "model.safetensors"
    code, _, err = run_cli(capsys, "demo", "--model", "cdbn", "--sizes", "784,10", "--out",
                           tmp_path / "d", "--quiet")
    assert code == 2 and "--sizes is for --model dbn" in err and not (tmp_path / "d").exists()
