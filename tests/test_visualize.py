import json

import numpy as np
import torch
import pytest
from PIL import Image

from featvis import (linear_combination, load_mnist, maximize, ranked_filters, sample_unit,
                     top_examples)
from featvis.report.render import tile
from featvis.pipeline.visualization import METHODS, VisualizeSettings, visualize

from helpers import run_cli


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, small_dbn):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    small_dbn.save(path)
    return path


def test_visualize_writes_every_grid_and_summary(tmp_path, capsys, model_path, small_dbn):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "visualize", model_path, "--out", out, "--units", "5",
                              "--steps", "20", "--restarts", "2", "--samples", "10",
                              "--top", "4", "--quiet")
    assert code == 0 and stdout.strip() == str(out)
    summary = json.loads((out / "summary.json").read_text())
    assert [layer["layer"] for layer in summary["layers"]] == [1, 2, 3]
    assert summary["model"]["sizes"] == [784, 64, 32, 16]
    x = load_mnist()[0]
    units = list(range(5))
    for layer in summary["layers"]:
        d = layer["layer"]
        expected = [m for m in METHODS if m not in ("deconvnet", "filter_views")
                    and not (m == "filters" and d == 1)]
        assert layer["methods"] == expected and layer["units"] == units
        assert "no channel maps" in layer["unavailable"]["Deconvnet projections"]
        assert layer["unavailable"]["First-layer filters: learned, pattern, receptive field"] \
            == "the inputs were not whitened"
        # Every overview is the library's own result, pixel for pixel.
        pictures = {
            "examples": tile(top_examples(small_dbn, x, d, k=9, units=units).mean,
                             scale="minmax", upscale=2),
            "maximize": tile(maximize(small_dbn, d, units=units, steps=20, restarts=2,
                                      bounds=(0.0, 1.0), rho=small_dbn.input_norm).images,
                             scale="minmax", upscale=2),
            "sampling": tile(sample_unit(small_dbn, d, units=units, n_samples=10).contrast,
                             upscale=2),
            "combination": tile(linear_combination(small_dbn, d, top=4, units=units).images,
                                upscale=2)}
        for name, picture in pictures.items():
            np.testing.assert_array_equal(np.asarray(Image.open(out / layer["files"][name])),
                                          picture, err_msg=f"layer {d} {name}")
        unit = layer["unit_details"][2]
        top_labels = load_mnist()[1][unit["examples"]["indices"]].tolist()
        counts = {c: top_labels.count(c) for c in set(top_labels)}
        top_class = min(c for c in counts if counts[c] == max(counts.values()))
        assert unit["examples"]["purity"] == {"top_class": top_class,
                                              "share": round(counts[top_class] / 9, 6)}
        assert unit["examples"]["values"] == pytest.approx(
            small_dbn.transform(x, d)[:, 2].topk(9).values.tolist(), abs=1e-5)
        assert unit["maximize"]["activation"] == pytest.approx(
            maximize(small_dbn, d, units=[2], steps=20, restarts=2, bounds=(0.0, 1.0),
                     rho=small_dbn.input_norm).activation.item(), abs=1e-5)
        for rel in unit["files"].values():
            assert (out / rel).is_file()
        if d > 1:
            assert unit["filters"]["weights"] == pytest.approx(
                ranked_filters(small_dbn, d, units=[2], top=4).weights[0].tolist(), abs=1e-6)


@pytest.mark.parametrize("args,message", [
    (["--layers", "0"], "layer must be a hidden depth in 1..3, got 0"),
    (["--layers", "x"], "layer must be a hidden depth in 1..3, got 'x'"),
    (["--k", "20000", "--methods", "examples"], "argument --k: expected an integer in 1..1,000"),
    (["--layers", "4"], "layer must be a hidden depth in 1..3"),
    (["--methods", "examples,colour"], "unknown method 'colour'"),
    (["--top", "65", "--layers", "2", "--methods", "filters"], "top=65 is larger"),
    (["--steps", "0"], "expected an integer in 1..100,000"),
    (["--k", "-1"], "expected an integer in 1..1,000"),
])
def test_visualize_bad_input(tmp_path, capsys, model_path, args, message):
    out = tmp_path / "run"
    code, _, stderr = run_cli(capsys, "visualize", model_path, "--out", out, "--units", "2",
                              "--quiet", *args)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_visualize_bad_model(tmp_path, capsys):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(b"\x00" * 3)
    code, _, stderr = run_cli(capsys, "visualize", bad, "--out", tmp_path / "run")
    assert code == 2 and "not a readable safetensors file" in stderr
    assert not (tmp_path / "run").exists()


def test_failed_run_leaves_previous_output_intact(tmp_path, small_dbn, mnist_small,
                                                  monkeypatch):
    out = tmp_path / "run"
    settings = VisualizeSettings(layers=[1], methods=["combination"], units=2)
    visualize(small_dbn, mnist_small[0], out, settings, progress=False)
    before = (out / "summary.json").read_bytes()
    import featvis.methods.maximization as vis

    def explode(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(vis, "maximize", explode)
    with pytest.raises(RuntimeError):
        visualize(small_dbn, mnist_small[0], out,
                  VisualizeSettings(layers=[1], methods=["combination", "maximize"], units=2),
                  progress=False)
    assert (out / "summary.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_visualize_refuses_to_replace_a_foreign_path(tmp_path, capsys, model_path):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    code, _, stderr = run_cli(capsys, "visualize", model_path, "--out", precious, "--units", "1",
                              "--methods", "combination", "--quiet")
    assert code == 2 and "refusing to replace it" in stderr
    assert (precious / "thesis.tex").read_text() == "years of work"
    code, _, _ = run_cli(capsys, "visualize", model_path, "--out", model_path, "--units", "1",
                         "--methods", "combination", "--quiet")
    assert code == 2 and model_path.is_file()


def test_evaluation_is_kept_for_the_same_model_and_dropped_for_another(
        tmp_path, capsys, model_path, tiny_mnist_dir):
    from featvis import DBN

    out = tmp_path / "run"
    quick = ["--units", "1", "--methods", "combination", "--layers", "1", "--quiet"]
    assert run_cli(capsys, "visualize", model_path, "--out", out, *quick)[0] == 0
    assert run_cli(capsys, "evaluate", model_path, "--data", tiny_mnist_dir, "--ais-runs", 0,
                   "--run", out, "--quiet")[0] == 0
    evaluation = (out / "evaluation.json").read_bytes()
    assert run_cli(capsys, "visualize", model_path, "--out", out, *quick)[0] == 0
    assert (out / "evaluation.json").read_bytes() == evaluation
    assert "Model figures" in (out / "index.html").read_text()
    other = tmp_path / "other.safetensors"
    DBN([784, 64, 32, 16], seed=5).save(other)
    code, _, err = run_cli(capsys, "visualize", other, "--out", out, *quick)
    assert code == 0 and "dropped" in err and "another model" in err
    assert not (out / "evaluation.json").exists()
    assert "Model figures" not in (out / "index.html").read_text()


def test_a_partially_trained_model_is_shown_with_a_warning(tmp_path, capsys, mnist_small):
    from helpers import stopped_checkpoint

    path = tmp_path / "partial.safetensors"
    stopped_checkpoint(path, mnist_small[0][:300], [784, 8, 6, 4], stop_after=1, epochs=1)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "visualize", path, "--out", out, "--units", "1",
                           "--methods", "combination", "--top", "4", "--quiet")
    assert code == 0 and "warning: layers 2..3 of the model are untrained" in err
    assert json.loads((out / "summary.json").read_text())["trained_layers"] == 1
    assert "Only 1 of the model's 3 layers are trained" in (out / "index.html").read_text()


def test_demo_refuses_a_foreign_out_before_training(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, _, err = run_cli(capsys, "demo", "--out", out, "--quiet", "--device", "cpu")
    assert code == 2 and "'thesis.tex' is not featvis's" in err and "featvis demo:" in err
    assert "trained in" not in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_each_method_s_figures_and_flags_are_in_the_summary(tmp_path, small_dbn,
                                                             mnist_small):
    from featvis.figures import distinctness

    out = tmp_path / "run"
    summary = visualize(small_dbn, mnist_small[0], out,
                        VisualizeSettings(layers=[2], methods=["combination", "filters"],
                                          units=4, top=4), progress=False)
    layer = summary["layers"][0]
    combination = layer["figures"]["combination"]
    assert combination["distinctness"] == pytest.approx(distinctness(
        linear_combination(small_dbn, 2, top=4, units=range(4)).images), abs=1e-6)
    assert set(combination) == {"distinctness", "randomized similarity (layer)",
                                "randomized similarity (cascade)"}
    assert set(layer["figures"]["filters"]) == {"randomized index overlap (layer)",
                                                "randomized index overlap (cascade)"}
    flagged = {(f["method"], f["figure"]) for f in layer["flags"]}
    expected = {(method, label) for method, figures in layer["figures"].items()
                for label, value in figures.items()
                if label.startswith(("distinctness", "randomized")) and value > 0.5}
    assert flagged == expected
    page = (out / layer["folder"] / "index.html").read_text()
    assert all(f["explanation"] in page for f in layer["flags"])


def test_flat_and_dead_maximization_pictures_are_named(tmp_path):
    import torch
    from torch import nn

    linear = nn.Linear(16, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([torch.ones(16), torch.linspace(-1, 1, 16),
                                         torch.zeros(16)]))
        linear.bias.zero_()
    images = torch.rand(30, 16, generator=torch.Generator().manual_seed(0))
    summary = visualize(nn.Sequential(linear), images, tmp_path / "run",
                        VisualizeSettings(methods=["maximize"], steps=300, restarts=2,
                                          figures=False), progress=False)
    units = summary["layers"][0]["unit_details"]
    assert [u["maximize"]["flat"] for u in units] == [True, False, False]  # all-ones optimum
    assert [u["maximize"]["dead"] for u in units] == [False, False, True]  # no gradient
    captions = [u["panels"][0]["images"][0]["caption"] for u in units]
    assert captions[0].startswith("FLAT PICTURE") and captions[2].startswith("DEAD UNIT")


@pytest.mark.parametrize("first_bias, faint", [(-40.0, True), (0.0, False)])
def test_faint_sampling_contrasts_are_named_and_flagged(tmp_path, first_bias, faint):
    """Below a first layer whose biases keep it off, switching a second-layer unit on moves
    the visible mean by about e^-40: said in the captions, counted and flagged."""
    from featvis import ConvDBN

    dbn = ConvDBN([dict(filters=3, filter_size=3, pool=2), dict(filters=2, filter_size=2,
                                                                  pool=2)],
                  visible="gaussian", sigma=0.5, input_shape=(1, 10, 10), seed=3)
    with torch.no_grad():
        dbn.rbms[0].hidden_bias.fill_(first_bias)
        for rbm in dbn.rbms:
            rbm.weight.mul_(100)                       # weights of order 1, as trained ones
    images = 0.3 * torch.randn(20, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    summary = visualize(dbn, images, tmp_path / "run",
                        VisualizeSettings(layers=[2], methods=["sampling"], samples=4,
                                          figures=False), progress=False)
    layer = summary["layers"][0]
    label = "faint contrasts (peak under 1% of the data's standard deviation)"
    assert layer["figures"]["sampling"][label] == (2 if faint else 0)
    assert [f["figure"] for f in layer["flags"]] == ([label] if faint else [])
    captions = [u["panels"][0]["images"][1]["caption"] for u in layer["unit_details"]]
    assert [c.startswith("FAINT") for c in captions] == [faint, faint]


def test_a_cdbn_saved_after_its_first_layer_is_shown_with_a_warning(tmp_path, capsys,
                                                                    mnist_small):
    """A convolutional DBN stopped after layer 1 (the checkpoint 'featvis train' leaves):
    the untrained layer is named, and save_model_as writes the model into the run."""
    from featvis import ConvDBN, load

    def stop(model, layer):
        raise KeyboardInterrupt

    model = ConvDBN([dict(filters=4, filter_size=5, pool=2), dict(filters=3, filter_size=3,
                                                                      pool=2)])
    with pytest.raises(KeyboardInterrupt):
        model.fit(mnist_small[0][:100], epochs=1, progress=False, on_layer=stop)
    images = mnist_small[0][:50].view(-1, 1, 28, 28)
    summary = visualize(model, images, tmp_path / "run", VisualizeSettings(
        methods=("examples", "combination"), units=2, k=2, figures=False),
        save_model_as="model.safetensors", progress=False)
    assert "warning: layers 2..2 of the model are untrained" in capsys.readouterr().err
    assert summary["trained_layers"] == 1
    saved = load(tmp_path / "run" / "model.safetensors")
    assert torch.equal(saved.rbms[0].weight, model.rbms[0].weight)
