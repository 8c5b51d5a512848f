import json
import re
import subprocess
import sys

import numpy as np
import pytest

from featvis import DBN, __version__
from featvis.cli import main

from helpers import run_cli, write_idx


def test_help_and_version():
    out = subprocess.run([sys.executable, "-m", "featvis", "--help"], capture_output=True,
                         text=True, check=True).stdout
    listed = re.findall(r"^    ([a-z]+)\b", out, re.MULTILINE)
    assert listed == ["train", "visualize", "mine", "merge", "layers", "report", "evaluate",
                      "demo", "methods"]
    out = subprocess.run([sys.executable, "-m", "featvis", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"featvis {__version__}"


def test_every_command_documents_its_options(capsys):
    expected = {"train": ["--sizes", "--resume", "--force"],
                "visualize": ["--model", "--weights", "--images", "--normalize", "--layers",
                              "--rho", "--force"],
                "layers": ["--model", "--input-shape"], "report": ["--force"],
                "evaluate": ["--run", "--ais-runs"], "demo": ["--sizes", "--units"]}
    for command, options in expected.items():
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        out = capsys.readouterr().out
        assert info.value.code == 0 and all(option in out for option in options), command


def test_train_writes_checkpoint_and_logs_each_epoch(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code, stdout, stderr = run_cli(capsys, "train", "--sizes", "784,12,6", "--epochs", "2",
                                   "--quiet", "--out", str(out))
    assert code == 0 and stdout.strip() == str(out)
    assert stderr.count("reconstruction error") == 4
    dbn = DBN.load(out)
    assert dbn.sizes == [784, 12, 6] and dbn.trained_layers == 2
    assert dbn.data_info["n_train"] == 10_000


def test_resume_skips_finished_layers(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert run_cli(capsys, "train", "--sizes", "784,8,4", "--epochs", "1", "--quiet",
                   "--out", str(out))[0] == 0
    code, _, stderr = run_cli(capsys, "train", "--sizes", "784,8,4", "--epochs", "1",
                              "--quiet", "--resume", "--out", str(out))
    assert code == 0 and "resuming after layer 2 of 2" in stderr
    assert stderr.count("reconstruction error") == 0


def _bad_data_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8),
              compress=True, payload=bytes(100))                # truncated payload
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"junk")
    return folder


@pytest.mark.parametrize("args,message", [
    (["--sizes", "784,a"], "expected comma-separated integers"),
    (["--sizes", "784,-3"], "expected positive integers"),
    (["--sizes", "700,10"], "784 pixels per image but the model's input layer has 700"),
    (["--epochs", "0"], r"expected an integer in 1..10,000"),
    (["--data", "{tmp}/absent"], "not a folder"),
    (["--data", "{tmp}/data"], "truncated"),
    (["--resume"], "no checkpoint"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    _bad_data_folder(tmp_path)
    out = tmp_path / "m.safetensors"
    args = [a.format(tmp=tmp_path) for a in args]
    code, stdout, stderr = run_cli(capsys, "train", "--quiet", "--out", str(out), *args)
    assert code == 2
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stderr and not out.exists()


def test_resume_from_foreign_checkpoint(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"not a checkpoint at all")
    code, _, stderr = run_cli(capsys, "train", "--quiet", "--resume", "--out", str(out))
    assert code == 2 and "not a readable safetensors file" in stderr
    assert out.read_bytes() == b"not a checkpoint at all"


def test_subprocess_error_has_no_traceback(tmp_path):
    out = tmp_path / "m.safetensors"
    result = subprocess.run([sys.executable, "-m", "featvis.cli", "train", "--sizes", "5,2",
                             "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("featvis train: error:") and not out.exists()


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_stopped_training_keeps_the_last_checkpoint_and_resumes(tmp_path, signal_name):
    import signal
    import time

    out = tmp_path / "m.safetensors"
    args = [sys.executable, "-m", "featvis.cli", "train", "--sizes", "784,24,12,6",
            "--epochs", "40", "--quiet", "--out", str(out)]
    # SIGINT as a terminal sends it, even where the test runs in the background (whose
    # children inherit an ignored SIGINT, and Python then never raises KeyboardInterrupt).
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.exists(), "no checkpoint after the first layer"
    proc.send_signal(getattr(signal, signal_name))
    _, stderr = proc.communicate(timeout=60)
    if signal_name == "SIGINT":
        assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    dbn = DBN.load(out)                       # the last complete checkpoint is intact
    assert 1 <= dbn.trained_layers < 3
    resumed = subprocess.run(args + ["--resume"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert DBN.load(out).trained_layers == 3


def test_train_never_overwrites_a_file_it_was_not_told_to(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("my notes")
    model = tmp_path / "m.safetensors"
    train = ["train", "--sizes", "784,4", "--epochs", "1", "--quiet"]
    for existing in (text, model):
        if existing is model:
            assert run_cli(capsys, *train, "--out", model)[0] == 0
        before = existing.read_bytes()
        code, _, err = run_cli(capsys, *train, "--out", existing)
        assert code == 2 and "exists; refusing to overwrite it" in err and "--force" in err
        assert existing.read_bytes() == before
    code, _, _ = run_cli(capsys, *train, "--out", text, "--force")
    assert code == 0 and DBN.load(text).sizes == [784, 4]


@pytest.mark.parametrize("make,message", [
    (lambda tmp: tmp.joinpath("folder").mkdir() or tmp / "folder", "is a folder"),
    (lambda tmp: tmp.joinpath("file").write_text("x") and tmp / "file" / "m.safetensors",
     "file is not a folder"),
])
def test_train_refuses_an_unusable_out_before_training(tmp_path, capsys, make, message):
    out = make(tmp_path)
    code, _, err = run_cli(capsys, "train", "--sizes", "784,4", "--quiet", "--out", out)
    assert code == 2 and message in err and "reconstruction error" not in err
    assert len(err.strip().splitlines()) == 1


def _strip_data_fingerprint(path):
    import json

    from safetensors.torch import save_file

    from helpers import read_checkpoint
    tensors, header = read_checkpoint(path)
    meta = json.loads(header["featvis"])
    del meta["data"]["data_sha256"]
    save_file(tensors, str(path), metadata={"featvis": json.dumps(meta)})


def test_resume_refuses_other_data(tmp_path, capsys, tiny_mnist_dir):
    out = tmp_path / "m.safetensors"
    train = ["train", "--sizes", "784,4", "--epochs", "1", "--quiet", "--out", out]
    assert run_cli(capsys, *train, "--data", tiny_mnist_dir)[0] == 0
    before = out.read_bytes()
    code, _, err = run_cli(capsys, *train, "--resume")
    assert code == 2 and "trained on other data" in err and out.read_bytes() == before
    assert DBN.load(out).data_info["n_train"] == 300
    _strip_data_fingerprint(out)             # a checkpoint from before fingerprints
    code, _, err = run_cli(capsys, *train, "--resume")
    assert code == 2 and "not embedded subset (10000 images)" in err
    code, _, err = run_cli(capsys, *train, "--resume", "--data", tiny_mnist_dir)
    assert code == 0 and "only the data's source and size were compared" in err


def test_evaluate_refuses_another_models_run(tmp_path, capsys, run_dir):
    from featvis import DBN as Model
    from helpers import snapshot

    other = tmp_path / "other.safetensors"
    Model([784, 64, 32, 16], seed=5).save(other)
    before = snapshot(run_dir)
    code, _, err = run_cli(capsys, "evaluate", other, "--run", run_dir, "--quiet")
    assert code == 2 and "shows another model" in err
    assert snapshot(run_dir) == before


def test_layers_lists_a_users_model(capsys, user_cnn):
    code, out, err = run_cli(capsys, "layers", "--model", user_cnn["spec"], "--input-shape",
                             "1,12,12")
    assert code == 0, err
    rows = [line.split() for line in out.strip().splitlines()]
    assert rows[0] == ["layer", "type", "units", "unit", "shape", "output", "shape"]
    assert rows[1] == ["0", "Conv2d", "4", "12x12", "4x12x12"]
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(10)]
    assert rows[-1] == ["9", "Linear", "3", "-", "3"]


def test_visualize_a_users_cnn(cnn_run):
    import json

    from featvis.io.runfolder import load_summary

    summary = load_summary(cnn_run)
    assert [layer["layer"] for layer in summary["layers"]] == ["0", "3", "7", "9"]
    assert summary["model"]["kind"] == "Sequential" and summary["model"]["input_shape"] == [
        1, 12, 12]
    conv = summary["layers"][0]
    assert conv["methods"] == ["examples", "statistics", "maximize", "deconvnet", "combination"]
    assert len(conv["unit_details"][0]["deconvnet"]["boxes"]) == 4           # k boxes
    assert "maximize_progress" in conv["unit_details"][0]["files"]
    assert summary["settings"]["transforms"] == "standard"
    assert "Unit sampling" in conv["unavailable"] and "Ranked filters" in conv["unavailable"]
    for linear in summary["layers"][2:]:          # the chain of Linears starts on a conv map
        assert linear["methods"] == ["examples", "statistics", "maximize"]
        assert "no earlier nn.Linear has 54 outputs" in linear["unavailable"]["Ranked filters"]
    unit = conv["unit_details"][0]
    assert len(unit["examples"]["positions"]) == 4 and unit["examples"]["positions"][0][0] < 12
    assert json.loads((cnn_run / "summary.json").read_text())["settings"]["rho"] > 0


@pytest.mark.parametrize("args,message", [
    (["--model", "no_such_module:build"], "cannot import no_such_module"),
    (["--model", "featvis_test_cnn:nothing"], "has no callable nothing"),
    (["--model", "featvis_test_cnn"], "unknown built-in kind"),
    (["--model", "featvis_test_cnn:build", "--weights", "{root}/w.pt"], "is a pickle"),
    (["--model", "featvis_test_cnn:build", "--weights", "{root}/bad.safetensors"],
     "missing keys 0.bias, 0.weight"),
    (["--model", "featvis_test_cnn:build", "--images", "{root}/none"], "cannot read"),
    (["--model", "featvis_test_cnn:build", "--layers", "0,cnv"], "unknown layer 'cnv'"),
])
def test_visualize_refuses_a_bad_user_model(tmp_path, capsys, user_cnn, args, message):
    from safetensors.torch import save_file
    import torch

    save_file({"extra": torch.zeros(1)}, str(user_cnn["root"] / "bad.safetensors"))
    args = [a.format(root=user_cnn["root"]) for a in args]
    code, _, err = run_cli(capsys, "visualize", "--images", user_cnn["images"], "--out",
                           tmp_path / "run", "--quiet", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_import_featvis_leaves_the_environment_alone():
    code = ("import os; before = dict(os.environ); import featvis; featvis.DBN; "
            "featvis.top_examples; assert dict(os.environ) == before, 'changed'; "
            "import sys; assert 'featvis.cli' not in sys.modules")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr


def test_train_layers_is_the_old_spelling_of_sizes(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code, _, err = run_cli(capsys, "train", "--layers", "784,4", "--epochs", "1", "--quiet",
                           "--out", out)
    assert code == 0 and "--layers is now --sizes" in err and DBN.load(out).sizes == [784, 4]


def test_evaluate_checks_its_outputs_before_computing(tmp_path, capsys, run_dir, small_dbn):
    model = tmp_path / "m.safetensors"
    small_dbn.save(model)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for args, message in ((["--json", notes], "exists; refusing to overwrite it (--force"),
                          (["--json", model], "is the model being read"),
                          (["--json", tmp_path], "is a folder"),
                          (["--json", run_dir / "e.json", "--run", run_dir],
                           "inside --run")):
        code, out, err = run_cli(capsys, "evaluate", model, "--ais-runs", 0, "--quiet", *args)
        assert code == 2 and message in err and out == "", err
    assert notes.read_text() == "mine" and DBN.load(model).sizes == small_dbn.sizes


def test_demo_checks_its_settings_before_training(tmp_path, capsys, tiny_mnist_dir):
    code, _, err = run_cli(capsys, "demo", "--out", tmp_path / "demo", "--sizes", "784,8,4",
                           "--units", 1, "--quiet", "--data", tiny_mnist_dir, "--device",
                           "cpu")
    assert code == 0, err
    code, _, err = run_cli(capsys, "demo", "--out", tmp_path / "d2", "--sizes", "784",
                           "--quiet", "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "sizes" in err


def test_the_reference_cnn_on_the_command_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "layers", "--model", "cnn")
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.strip().splitlines()[1:]}
    assert rows["features.3"] == ["Conv2d", "32", "14x14", "32x14x14"]
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "visualize", "--model", "cnn", "--layers", "features.3",
                           "--units", 2, "--k", 3, "--steps", 5, "--restarts", 1, "--quiet",
                           "--out", run)
    assert code == 0, err
    from featvis.io.runfolder import load_summary
    layer = load_summary(run)["layers"][0]
    assert layer["layer"] == "features.3" and "deconvnet" in layer["methods"]


def test_train_the_reference_cnn(tmp_path, capsys, tiny_mnist_dir):
    import featvis

    out = tmp_path / "cnn.safetensors"
    code, stdout, err = run_cli(capsys, "train", "--model", "cnn", "--data", tiny_mnist_dir,
                                "--epochs", 1, "--quiet", "--out", out)
    assert code == 0 and stdout.strip() == str(out), err
    assert "cnn, epochs=1, batch_size=128, lr=0.003, seed=0" in err and "test accuracy" in err
    model = featvis.load(out)
    assert model.test_accuracy["test"]["total"] == 100 and model.recipe["epochs"] == 1
    for args, message in ((["--sizes", "784,10"], "--sizes is for --model dbn"),
                          (["--resume"], "--resume is for --model dbn")):
        code, _, err = run_cli(capsys, "train", "--model", "cnn", "--out", tmp_path / "x",
                               "--quiet", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_the_methods_option_lists_every_registered_method(capsys):
    from featvis.pipeline.visualization import METHODS

    with pytest.raises(SystemExit):
        main(["visualize", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert ", ".join(METHODS) in help_text


def test_train_and_visualize_a_natural_patch_model(tmp_path, capsys):
    """--dataset natural: a Gaussian DBN with the patch recipe and whitening saved, which
    visualize rebuilds (the same patches, so the same examples) and shows in three views."""
    from featvis import DBN

    model = tmp_path / "natural.safetensors"
    code, _, err = run_cli(capsys, "train", "--dataset", "natural", "--patch-size", 8,
                           "--patches", 400, "--epochs", 1, "--sizes", "64,12,6", "--out",
                           model, "--quiet")
    assert code == 0, err
    assert "recipe lee" in err and "natural patches 8x8 x 400, whiten 1/f" in err
    dbn = DBN.load(model)
    assert (dbn.visible, dbn.whitening.kind) == ("gaussian", "1/f")
    assert dbn.data_info["patches"]["count"] == 400 and dbn.data_info["n_train"] == 400
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        code, _, err = run_cli(capsys, "visualize", model, "--out", out, "--units", 3,
                               "--steps", 5, "--restarts", 2, "--samples", 4, "--top", 3,
                               "--quiet")
        assert code == 0, err
        runs.append(json.loads((out / "summary.json").read_text()))
    first = runs[0]["layers"][0]
    assert "filter_views" in first["methods"]
    assert {"locality (median energy share near the peak)",
            "share of Gabor fits with R^2 >= 0.7"} <= set(first["figures"]["filter_views"])
    for view in ("learned", "pattern", "receptive_field"):
        assert (tmp_path / "a" / first["folder"] / f"filter_views_{view}.png").is_file()
    assert [u["examples"] for u in first["unit_details"]] == \
        [u["examples"] for u in runs[1]["layers"][0]["unit_details"]]


@pytest.mark.parametrize("args,message", [
    (("--dataset", "natural", "--model", "cnn"), "--dataset natural is for --model dbn"),
    (("--patch-size", "8"), "--patch-size is for --dataset natural"),
    (("--images", "photos"), "--images is for --dataset natural"),
    (("--dataset", "natural", "--sizes", "100,10"), "--sizes starts with 100 inputs, but "
                                                    "patches of 14x14 have 196"),
])
def test_train_refuses_options_of_another_data_set(tmp_path, capsys, args, message):
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "m", "--quiet", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_natural_data_without_scikit_image_names_the_pip_command(tmp_path, capsys,
                                                                  monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_skimage(name, *args, **kwargs):
        if name == "skimage" or name.startswith("skimage."):
            raise ImportError("No module named 'skimage'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    code, _, err = run_cli(capsys, "train", "--dataset", "natural", "--out", tmp_path / "m",
                           "--quiet")
    assert code == 2 and "pip install 'featvis[natural]'" in err, err
    assert not (tmp_path / "m").exists()


def test_train_resume_and_visualize_a_cdbn(tmp_path, capsys, tiny_mnist_dir):
    """--model cdbn: the layers and recipe announced, a featvis.model/1 checkpoint after each
    layer, --resume skipping finished layers (and refusing other layers or another kind's
    checkpoint), and a run with the methods that apply to a convolutional DBN."""
    import featvis
    from featvis import ConvDBN
    from featvis.io.runfolder import load_summary

    out = tmp_path / "cdbn.safetensors"
    train = ["train", "--model", "cdbn", "--data", tiny_mnist_dir, "--epochs", 1, "--quiet",
             "--out", out]
    code, stdout, err = run_cli(capsys, *train, "--conv-layers", "6x5x2,4x3x2")
    assert code == 0 and stdout.strip() == str(out), err
    assert ("cdbn 6x5x2,4x3x2 on MNIST; the convolutional recipe: epochs=1, batch_size=100, "
            "lr=0.5") in err
    assert err.count("reconstruction error") == 2 and err.count("checkpoint saved") == 2
    model = featvis.load(out)
    assert type(model) is ConvDBN and model.trained_layers == 2
    assert model.data_info["n_train"] == 300 and model.input_shape == (1, 28, 28)
    code, _, err = run_cli(capsys, *train, "--conv-layers", "6x5x2,4x3x2", "--resume")
    assert code == 0 and "resuming after layer 2 of 2" in err, err
    assert "reconstruction error" not in err
    for layers, more, message in (
            ("6x5x2", [], "--resume: checkpoint has layers 6x5x2,4x3x2, asked 6x5x2"),
            ("6x5x2,4x3x2", ["--lr", "0.1"], "trained with another recipe (lr 0.5, not 0.1)")):
        code, _, err = run_cli(capsys, *train, "--conv-layers", layers, "--resume", *more)
        assert code == 2 and message in err, err
    DBN([784, 3]).save(tmp_path / "dbn.safetensors")
    code, _, err = run_cli(capsys, "train", "--model", "cdbn", "--resume", "--quiet", "--out",
                           tmp_path / "dbn.safetensors")
    assert code == 2 and "holds a dbn checkpoint, not a cdbn one" in err
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "visualize", out, "--model", "cdbn", "--data", tiny_mnist_dir,
                           "--out", run, "--units", 2, "--k", 3, "--steps", 5, "--restarts", 2,
                           "--samples", 4, "--top", 3, "--quiet")
    assert code == 0, err
    layers = load_summary(run)["layers"]
    assert [(layer["layer"], layer["methods"]) for layer in layers] == [
        (1, ["examples", "statistics", "maximize", "sampling", "combination"]),
        (2, ["examples", "statistics", "maximize", "sampling", "filters", "combination"])]
    assert "not a ReLU network" in layers[0]["unavailable"]["Deconvnet projections"]
    code, out_text, err = run_cli(capsys, "layers", out)
    assert code == 0 and "2.detection  ConvRBM detection  4      10x10" in out_text, err


@pytest.mark.parametrize("args,message", [
    (("--model", "cdbn", "--sizes", "784,10"), "--sizes is for --model dbn; a convolutional "
                                               "DBN's layers are --conv-layers"),
    (("--model", "cdbn", "--recipe", "lee"), "--recipe is for --model dbn"),
    (("--conv-layers", "4x3x2"), "--conv-layers is for --model cdbn; a DBN's layers are --sizes"),
    (("--model", "cnn", "--resume"), "--resume is for --model dbn or cdbn"),
    (("--model", "cdbn", "--conv-layers", "4x3"), "expected FILTERSxSIZExPOOL"),
    (("--model", "cdbn", "--dataset", "natural", "--whiten", "zca"), "--whiten zca"),
    (("--model", "cdbn", "--patch-size", "8"), "--patch-size is for --dataset natural"),
])
def test_train_refuses_options_of_another_kind(tmp_path, capsys, args, message):
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "m", "--quiet", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m").exists()


_ATTENTION = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        return self.out(self.attn(x, x, x, need_weights=False)[0])


def build():
    torch.manual_seed(0)
    return Block()
"""


def test_a_shape_assertion_in_the_model_names_the_shape_options(tmp_path, capsys,
                                                                monkeypatch):
    (tmp_path / "fv_attention.py").write_text(_ATTENTION)
    monkeypatch.syspath_prepend(str(tmp_path))
    np.save(tmp_path / "tokens.npy", np.zeros((6, 10, 16), np.float32))   # read as (1, 10, 16)
    code, _, err = run_cli(capsys, "visualize", "--model", "fv_attention:build", "--images",
                           tmp_path / "tokens.npy", "--out", tmp_path / "run", "--quiet")
    assert code == 2 and err.count("\n") == 1
    assert "raised AssertionError" in err and "change the input's shape with --input-shape" in err
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(capsys, "visualize", "--model", "fv_attention:build", "--images",
                           tmp_path / "tokens.npy", "--input-shape", "10,16", "--methods",
                           "examples", "--k", "2", "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
