import os

import pytest
import torch

# One thread: on a shared 2-core machine, multi-threaded torch spin-waits and can run an
# order of magnitude slower. Subprocesses (CLI tests) inherit the setting.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mnist_small():
    """2,000 embedded training images and labels."""
    from featvis import load_mnist

    images, labels = load_mnist("train")
    return images[:2000], labels[:2000]


@pytest.fixture(scope="session")
def small_dbn(mnist_small):
    """A quickly trained 784-64-32-16 DBN (shared, read-only)."""
    from featvis import DBN

    return DBN([784, 64, 32, 16]).fit(mnist_small[0], epochs=3, seed=0, progress=False)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, small_dbn, mnist_small):
    """A small visualize run with its gallery: every layer, 3 units each (read-only)."""
    from featvis.pipeline.visualization import VisualizeSettings, visualize

    out = tmp_path_factory.mktemp("runs") / "run"
    settings = VisualizeSettings(units=3, steps=10, restarts=2, samples=10, top=4)
    visualize(small_dbn, mnist_small[0], out, settings, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_mnist_dir(tmp_path_factory):
    """A folder of the four MNIST IDX files holding 300 training and 100 test images."""
    import numpy as np

    from featvis import load_mnist
    from helpers import write_idx

    root = tmp_path_factory.mktemp("mnist")
    for split, prefix, n in (("train", "train", 300), ("test", "t10k", 100)):
        images, labels = load_mnist(split)
        pixels = (images[:n] * 255).round().to(torch.uint8).numpy().reshape(n, 28, 28)
        for kind, array in (("images-idx3-ubyte", pixels),
                            ("labels-idx1-ubyte", labels[:n].numpy().astype(np.uint8))):
            write_idx(root / f"{prefix}-{kind}.gz", array, compress=True)
    return root


@pytest.fixture
def run_copy(run_dir, tmp_path):
    """A private, writable copy of :func:`run_dir`."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


@pytest.fixture
def hostile_run(run_copy):
    """:func:`run_copy` whose summary names carry HTML and its gallery rebuilt from them."""
    import json

    from featvis.report import build_gallery
    from helpers import HOSTILE, HOSTILE_ATTRIBUTE

    path = run_copy / "summary.json"
    summary = json.loads(path.read_text())
    summary["layers"][0]["name"] = HOSTILE
    summary["model"]["data"]["source"] = HOSTILE
    summary["model"]["path"] = HOSTILE_ATTRIBUTE
    path.write_text(json.dumps(summary))
    build_gallery(run_copy)
    return run_copy


CNN_SOURCE = '''
import torch
from torch import nn


def build():
    """A small grayscale CNN: two conv blocks (one with an in-place ReLU), two Linear."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6 * 3 * 3, 8), nn.ReLU(), nn.Linear(8, 3))
'''


@pytest.fixture(scope="session")
def user_cnn(tmp_path_factory):
    """A user's model on disk: ``featvis_test_cnn:build``, its weights (safetensors) and a
    folder of 12x12 grey PNGs in two class subfolders."""
    import sys

    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("user")
    (root / "featvis_test_cnn.py").write_text(CNN_SOURCE)
    sys.path.insert(0, str(root))
    import featvis_test_cnn

    weights = root / "cnn.safetensors"
    save_file(featvis_test_cnn.build().state_dict(), str(weights))
    rng = np.random.default_rng(0)
    for label in ("circles", "lines"):
        (root / "images" / label).mkdir(parents=True)
        for i in range(6):
            pixels = (rng.random((12, 12)) * 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(root / "images" / label / f"{i}.png")
    yield {"root": root, "spec": "featvis_test_cnn:build", "weights": weights,
           "images": root / "images"}
    sys.path.remove(str(root))


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory, user_cnn):
    """``featvis visualize --model`` on the user's CNN and PNG folder (read-only)."""
    from featvis.cli import main

    out = tmp_path_factory.mktemp("cnn") / "run"
    code = main(["visualize", "--model", user_cnn["spec"], "--weights",
                 str(user_cnn["weights"]), "--images", str(user_cnn["images"]), "--out",
                 str(out), "--units", "3", "--k", "4", "--top", "4", "--steps", "20",
                 "--restarts", "2", "--transforms", "standard", "--snapshots", "0,10,20",
                 "--quiet", "--device", "cpu"])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def baseline_rss(tmp_path_factory):
    """Peak RSS of a featvis command that loads torch and fails at once (a missing
    checkpoint): ``featvis --version`` no longer loads torch, which every case needs."""
    from helpers import measured_cli

    missing = tmp_path_factory.mktemp("baseline") / "missing.safetensors"
    status, err, rss = measured_cli("visualize", str(missing), "--out", str(missing) + ".run")
    assert status == 2 and "no such checkpoint file" in err, err
    return rss


@pytest.fixture()
def restored_registry():
    """The registry as it was, after the test (other tests see featvis's own methods)."""
    from featvis.methods import registry

    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)
