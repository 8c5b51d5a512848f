"""Careless or hostile arguments on the newer surface (user models, image folders, shards,
evaluate): each class is refused in one line, exit 2, no traceback, before it costs memory,
and leaves the user's files byte for byte as they were."""

import hashlib
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import featvis
from featvis import DBN, CheckpointError, DataError, load_images
from featvis.io.fileio import _HOST

from helpers import RSS_MARGIN_KIB, measured_cli, run_cli

USER_MODELS = '''
import sys
import torch
from torch import nn


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))


def grey_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 3))


def exits():
    sys.exit(0)


def exits_3():
    raise SystemExit(3)


class Quits(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(784, 4)

    def forward(self, x):
        sys.exit(0)


def quits():
    return Quits()


def hooked():
    model = mlp()
    model[1].register_forward_hook(lambda *args: 1 / 0)
    return model
'''


@pytest.fixture
def user(tmp_path):
    """A folder holding the user's model module, 40 small grey PNGs, 6 RGB ones and a tiny
    trained DBN checkpoint; returns ``(folder, digests)``, ``digests`` every file's sha256."""
    (tmp_path / "usermodels.py").write_text(USER_MODELS)
    rng = np.random.default_rng(0)
    for folder, count, mode, shape in (("grey", 40, "L", (28, 28)), ("rgb", 6, "RGB",
                                                                     (28, 28, 3))):
        (tmp_path / folder).mkdir()
        for i in range(count):
            pixels = (rng.random(shape) * 255).astype(np.uint8)
            Image.fromarray(pixels, mode).save(tmp_path / folder / f"{i}.png")
    DBN([784, 8, 4]).fit(featvis.load_mnist("train")[0][:300], epochs=1,
                         progress=False).save(tmp_path / "model.safetensors")
    return tmp_path


def digests(root):
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and "__pycache__" not in
            path.parts}


def refused_cheaply(root, baseline_rss, argv, problem):
    """``featvis *argv`` in ``root`` in a fresh process: exit 2, one line matching
    ``problem``, no traceback, peak memory within the margin, nothing in ``root`` changed or
    added."""
    before = digests(root)
    status, err, rss = measured_cli(*argv, cwd=root)
    assert status == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"featvis {argv[0]}: error: ") and re.search(problem, err), err
    assert rss - baseline_rss < RSS_MARGIN_KIB, f"{(rss - baseline_rss) // 1024} MiB above"
    assert digests(root) == before


def refused(capsys, root, argv, problem, monkeypatch):
    """As :func:`refused_cheaply`, in this process (no memory figure)."""
    monkeypatch.chdir(root)
    before = digests(root)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(problem, err), err
    assert digests(root) == before
    return err


# -- High ---------------------------------------------------------------------------------

def test_small_files_of_many_pixels_are_refused_from_their_headers(user, baseline_rss):
    (user / "big").mkdir()
    for i in range(6):                     # 8,000 x 8,000 one-bit PNGs: 8 KB each on disk
        Image.new("1", (8000, 8000)).save(user / "big" / f"{i}.png")
    refused_cheaply(user, baseline_rss, ["visualize", "--model", "usermodels:mlp", "--images",
                                         "big", "--out", "run"],
                    r"big/0\.png: 8000x8000 = 64000000 pixels, above the limit "
                    r"max_pixels=50000000 per image \(--max-pixels raises it\)")
    refused_cheaply(user, baseline_rss, ["train", "--dataset", "natural", "--images", "big",
                                         "--out", "m2.safetensors", "--max-pixels", "1000000"],
                    r"big/0\.png: 8000x8000 = 64000000 pixels, above the limit "
                    r"max_pixels=1000000")


def test_the_pixel_and_memory_budgets_in_the_api_and_their_options(user, capsys, monkeypatch):
    with pytest.raises(DataError, match=r"0\.png: 28x28 = 784 pixels, above the limit "
                                        r"max_pixels=700 per image"):
        load_images(user / "grey", max_pixels=700)
    with pytest.raises(DataError, match=r"resize: 30x30 = 900 pixels, above the limit "
                                        r"max_pixels=800"):
        load_images(user / "grey", resize=(30, 30), max_pixels=800)
    assert load_images(user / "grey", max_pixels=784)[0].shape == (40, 1, 28, 28)
    with pytest.raises(DataError, match=r"above the limit max_bytes=100000 \(.*\) of inputs "
                                        r"held in memory \(--max-bytes raises it\)"):
        load_images(user / "grey", max_bytes=100000)      # --images stream: no such budget
    refused(capsys, user, ["visualize", "--model", "usermodels:mlp", "--out", "run",
                           "--max-bytes", "100000"],                   # MNIST is held
            r"train-images-idx3-ubyte\.gz: header declares .* above the limit "
            r"max_bytes=100000", monkeypatch)


def test_no_command_replaces_the_model_or_data_it_reads(user, baseline_rss, capsys,
                                                        monkeypatch):
    refused_cheaply(user, baseline_rss, ["mine", "model.safetensors", "--shard", "0/2",
                                         "--out", "model.safetensors", "--force"],
                    r"--out model\.safetensors: is the model being read .* never replaces "
                    r"its input, --force or not")
    for argv in (["evaluate", "model.safetensors", "--json", "model.safetensors", "--force"],
                 ["mine", "--model", "usermodels:mlp", "--images", "grey", "--shard", "0/1",
                  "--out", "grey/0.png", "--force"]):
        refused(capsys, user, argv, r"is the model being read|lies inside the --images folder",
                monkeypatch)
    refused(capsys, user, ["visualize", "--model", "usermodels:mlp", "--images", "grey",
                           "--out", "grey/run"],
            r"--out grey/run: lies inside the --images folder grey", monkeypatch)


# -- Medium: the arguments decide the cost or the failure -----------------------------------

def test_a_shape_the_model_cannot_take_is_one_line_before_the_data_is_decoded(
        user, baseline_rss, capsys, monkeypatch):
    refused_cheaply(user, baseline_rss, ["visualize", "--model", "usermodels:mlp", "--images",
                                         "grey", "--resize", "5000,5000", "--out", "run"],
                    r"--model usermodels:mlp: the model's forward pass on one input of shape "
                    r"\(1, 5000, 5000\) raised RuntimeError: .*; its first layer '1', a "
                    r"Linear, expects 784 features on the last axis; change the input's "
                    r"shape with --input-shape C,H,W or --resize H,W")
    cases = [(["visualize", "--model", "usermodels:mlp", "--images", "grey", "--resize",
               "1,1", "--out", "run"], r"shape \(1, 1, 1\) raised RuntimeError"),
             (["visualize", "--model", "usermodels:grey_cnn", "--images", "rgb", "--out",
               "run"], r"shape \(3, 28, 28\) raised RuntimeError: .*; its first layer '0', "
                       r"a Conv2d, expects 1 input channel\(s\) on axis 1"),
             (["layers", "--model", "usermodels:mlp", "--input-shape", "3,28,28"],
              r"shape \(3, 28, 28\) raised RuntimeError: .* expects 784 features"),
             (["layers", "--model", "usermodels:mlp", "--input-shape", "1,28"],
              r"shape \(1, 28\) raised RuntimeError"),
             (["visualize", "--model", "usermodels:mlp", "--input-shape", "3,28,28", "--out",
               "run"], r"one input of the MNIST images has shape \(784,\) \(784 values\), "
                       r"the model takes \(3, 28, 28\)")]
    for argv, problem in cases:
        refused(capsys, user, argv, problem, monkeypatch)
    # The hint's flag works: --input-shape 1,28,28 converts the RGB images to grey.
    code, _, err = run_cli(capsys, "layers", "--model", "usermodels:grey_cnn",
                           "--input-shape", "1,28,28")
    assert code == 0, err


@pytest.mark.parametrize("argv,problem", [
    (["layers", "--model", "usermodels:mlp", "--input-shape", "1,100000,100000"],
     r"--input-shape 1,100000,100000: 10000000000 values in one input, above --max-pixels "
     r"50000000"),
    (["evaluate", "model.safetensors", "--ais-runs", "1000000000"],
     r"argument --ais-runs: expected an integer in 2\.\.10,000, got '1000000000'"),
])
def test_every_count_and_shape_is_bounded_before_any_work(user, baseline_rss, argv, problem):
    refused_cheaply(user, baseline_rss, argv, problem)


@pytest.mark.parametrize("option,value", [
    ("--k", "1001"), ("--steps", "100001"), ("--restarts", "1001"), ("--samples", "10001"),
    ("--top", "1001"), ("--units", "1000001"), ("--seed", "-1"), ("--snapshots", "-1"),
    ("--max-pixels", "0"), ("--timeout", "1e9"), ("--rho", "nan"), ("--bounds", "1,0"),
])
def test_the_bounds_of_the_table(user, capsys, monkeypatch, option, value):
    refused(capsys, user, ["visualize", "model.safetensors", "--out", "run", option, value],
            rf"argument {option}: expected", monkeypatch)


def test_train_sizes_and_conv_layers_are_bounded(user, capsys, monkeypatch):
    for argv, problem in ((["--sizes", "784,100000,10"], "1..65,536 units"),
                          (["--sizes", "784,60000,60000"], "weights, above the"),
                          (["--model", "cdbn", "--conv-layers", "5000x10x2"], "filters 5000"),
                          (["--epochs", "10001"], "1..10,000")):
        refused(capsys, user, ["train", *argv, "--out", "m2.safetensors"], problem,
                monkeypatch)


def test_the_readme_lists_every_bound():
    from featvis.cli.parser import bounds

    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    table = readme[readme.index("| option | bound |"):]
    for option, (low, high) in bounds().items():
        assert re.search(rf"\| `{option}` \| {low:,}\.\.{high:,}", table), option


@pytest.mark.parametrize("spec,problem", [
    ("usermodels:exits", r"--model usermodels:exits: exits\(\) called sys\.exit\(0\)$"),
    ("usermodels:exits_3", r"--model usermodels:exits_3: exits_3\(\) called sys\.exit\(3\)$"),
    ("usermodels:quits", r"--model usermodels:quits: the model's forward pass on one input of "
                         r"shape \(1, 28, 28\) called sys\.exit\(0\)$"),
    ("usermodels:hooked", r"--model usermodels:hooked: the model's forward pass .* raised "
                          r"ZeroDivisionError: division by zero"),
])
def test_the_user_s_code_that_raises_or_exits_is_one_line_and_exit_2(user, baseline_rss,
                                                                     spec, problem):
    refused_cheaply(user, baseline_rss, ["layers", "--model", spec, "--input-shape",
                                         "1,28,28"], problem)


def test_a_sigterm_still_unwinds_as_a_signal():
    """A SIGTERM is never taken for the user's code calling sys.exit."""
    from featvis.errors import Terminated, UserCodeError, user_code

    with pytest.raises(Terminated):
        with user_code("the model"):
            raise Terminated(143)
    with pytest.raises(UserCodeError, match=r"^the model called sys\.exit\(0\)$"):
        with user_code("the model"):
            sys.exit(0)


def set_meta(path, **changes):
    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["featvis"])
    save_file(tensors, path, metadata={"featvis": json.dumps({**meta, **changes})})


@pytest.mark.parametrize("changes,problem", [
    (dict(history=[[{"error_sum": 1.0, "error_per_case": 0.1}], []]),
     r"history of layer 1, entry 0: epoch must be a positive integer, got None"),
    (dict(history=[[{"epoch": 1, "error_sum": "x", "error_per_case": 0.1}], []]),
     r"history of layer 1, entry 0: error_sum must be a finite number, got 'x'"),
    (dict(history=[[{"epoch": 1}], []]),
     r"history of layer 1, entry 0 lacks error_sum, error_per_case"),
    (dict(data=[["name", "MNIST"]]), r"data must be an object, got \[\['name', 'MNIST'\]\]"),
    (dict(data={"n_train": -1}), r"data n_train must be a count, got -1"),
    (dict(data={"data_sha256": "abc"}), r"data data_sha256 must be 64 hex digits"),
])
def test_every_metadata_field_is_checked_at_load(user, baseline_rss, changes, problem):
    set_meta(user / "model.safetensors", **changes)
    refused_cheaply(user, baseline_rss, ["visualize", "model.safetensors", "--out", "run"],
                    r"model\.safetensors: inconsistent checkpoint \(" + problem)


def test_a_recipe_with_an_unknown_field_is_named(user):
    path = user / "model.safetensors"
    with safe_open(path, "pt") as f:
        recipe = json.loads(f.metadata()["featvis"])["recipe"]
    set_meta(path, recipe={**recipe, "momentum_2": 0.5})
    with pytest.raises(CheckpointError, match=r"recipe has unknown field\(s\) 'momentum_2'\)$"):
        DBN.load(path)


def test_a_cdbn_or_cnn_checkpoint_s_metadata_is_checked(tmp_path):
    from featvis import reference_cnn
    from featvis.models.checkpoint import load

    path = tmp_path / "cnn.safetensors"
    reference_cnn().save(path)
    set_meta(path, test_accuracy={"test": {"correct": 5, "total": 2, "accuracy": 2.5}})
    with pytest.raises(CheckpointError, match=r"test_accuracy 'test' must be"):
        load(path)


# -- Low: sentences, not Python's or the OS's text -----------------------------------------

def test_an_idx_file_of_no_images_is_named(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(struct.pack(">HBB3I", 0, 8, 3, 0, 28, 28))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(struct.pack(">HBBI", 0, 8, 1, 0))
    with pytest.raises(DataError, match=r"^train-images-idx3-ubyte: holds no images "
                                        r"\(shape \(0, 28, 28\)\)$"):
        featvis.load_mnist("train", tmp_path)


@pytest.mark.parametrize("out,problem", [
    ("/proc/x", r"--out /proc/x: cannot write in /proc \("),
    ("model.safetensors/sub", r"model\.safetensors is not a folder$"),
    ("a" * 300, r"the name has 300 bytes, above the 255 a file name may have$"),
])
def test_an_unwritable_output_is_named_by_the_user_s_path(user, capsys, monkeypatch, out,
                                                          problem):
    for command in (["visualize", "model.safetensors"],
                    ["mine", "model.safetensors", "--shard", "0/1"]):
        err = refused(capsys, user, [*command, "--out", out], problem, monkeypatch)
        assert ".featvis-" not in err


def test_a_long_name_that_fits_gets_a_temporary_that_fits(user, capsys, monkeypatch):
    """A 240-byte name is valid; its temporary (with featvis's affixes) is shortened."""
    monkeypatch.chdir(user)
    out = "b" * 240
    code, _, err = run_cli(capsys, "mine", "model.safetensors", "--shard", "0/1", "--out", out)
    assert code == 0, err
    assert (user / out).is_file()


def test_a_missing_gpu_is_one_line(tmp_path, user):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(featvis.FeatvisError, match=r"^device 'cuda': no CUDA device is "
                                                   r"available"):
        DBN.load(user / "model.safetensors", device="cuda")


@pytest.mark.parametrize("argv,problem", [
    (["visualize", "model.safetensors", "--resize", "20,20", "--out", "run"],
     r"--resize resizes the --images; without --images there is nothing to resize"),
    (["mine", "model.safetensors", "--shard", "1/1000000000", "--out", "s.safetensors"],
     r"shard 1/1000000000: 10000 inputs make 10 batch\(es\) of 1000, so at most 10 shard"),
    (["visualize", "model.safetensors", "--device", "cuda:7", "--out", "run"],
     r"--device 'cuda:7': "),
])
def test_arguments_that_would_be_ignored_or_do_nothing(user, capsys, monkeypatch, argv,
                                                       problem):
    if "cuda:7" in argv and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    refused(capsys, user, argv, problem, monkeypatch)


def test_two_mine_runs_into_one_out_cannot_both_succeed(user, capsys, monkeypatch):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:                                   # a live featvis process holding the lock
        (user / f".s.safetensors.featvis-{sleeper.pid}@{_HOST}.lock").write_bytes(b"")
        refused(capsys, user, ["mine", "model.safetensors", "--shard", "0/1", "--out",
                               "s.safetensors"],
                rf"featvis process {sleeper.pid} is writing it", monkeypatch)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_public_functions_stay_functions_whatever_is_imported_first():
    code = ("import featvis.pipeline.visualization, featvis.seam, featvis.methods.maximization, "
            "featvis.methods.deconvolution, featvis\n"
            "assert callable(featvis.visualize) and callable(featvis.probe)\n"
            "assert callable(featvis.methods.maximize) and callable(featvis.methods.deconvnet)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_no_public_function_shares_its_name_with_a_submodule():
    import importlib
    import pkgutil

    clashes = []
    for info in pkgutil.walk_packages(featvis.__path__, "featvis."):
        if not info.ispkg:
            continue
        package = importlib.import_module(info.name)
        names = {m.name for m in pkgutil.iter_modules(package.__path__)}
        clashes += [f"{info.name}.{n}" for n in getattr(package, "__all__", ()) if n in names]
    top = {m.name for m in pkgutil.iter_modules(featvis.__path__)}
    clashes += [f"featvis.{n}" for n in featvis.__all__ if n in top]
    assert clashes == []
