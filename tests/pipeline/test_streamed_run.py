"""A run over inputs streamed from disk: ``visualize`` of a dataset writes the bytes of the
run on the stacked tensor; ``featvis visualize --images`` streams (its decoding workers and
loader batch never change the output); its peak memory does not grow with the number of
images (a wrapper process mining N and 4N generated images)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from featvis import ImageFolder, Loading, VisualizeSettings, reference_cnn, visualize
from helpers import run_cli


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A folder of 60 MNIST-like PNGs in 3 class folders."""
    root = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / str(c)).mkdir()
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(
                root / str(c) / f"{i:02d}.png")
    return root


def test_visualize_of_a_dataset_writes_the_run_of_the_stacked_tensor(digits, tmp_path):
    data = ImageFolder(digits)
    stacked = torch.stack([data[i][0] for i in range(len(data))])
    settings = VisualizeSettings(units=3, steps=4, restarts=1, k=3,
                                 methods=("examples", "maximize", "deconvnet"))
    visualize(reference_cnn(), data, tmp_path / "streamed", settings, progress=False,
              loading=Loading(workers=2, batch_size=7))
    visualize(reference_cnn(), stacked, tmp_path / "held", settings, labels=data.labels,
              progress=False)
    streamed, held = _files(tmp_path / "streamed"), _files(tmp_path / "held")
    assert streamed.keys() == held.keys() and streamed == held
    summary = json.loads(streamed["summary.json"])
    assert "purity" in summary["layers"][0]["unit_details"][0]["examples"]   # folder labels


def test_the_cli_streams_images_and_its_loader_options_change_nothing(digits, tmp_path,
                                                                       capsys):
    run = ["visualize", "--model", "cnn", "--images", digits, "--methods", "examples",
           "--units", "2", "--k", "3", "--quiet", "--no-figures"]
    code, _, err = run_cli(capsys, *run, "--out", tmp_path / "a", "--workers", "0")
    assert code == 0, err
    code, _, err = run_cli(capsys, *run, "--out", tmp_path / "b", "--workers", "2",
                           "--loader-batch-size", "5")
    assert code == 0, err
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    code, _, err = run_cli(capsys, *run, "--out", tmp_path / "c", "--workers", "-1")
    assert code == 2 and "--workers: expected an integer in 0..64" in err


_MODEL = """
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
"""

# Runs the CLI in this process, then prints the process's peak resident memory (KiB): the
# kernel's VmHWM of this program (ru_maxrss would include the forking parent's).
_WRAPPER = """
import sys
from featvis.cli import main
try:
    main(sys.argv[1:])
finally:
    print(next(line.split()[1] for line in open("/proc/self/status")
               if line.startswith("VmHWM:")))
"""


def _peak_kib(tmp_path, images: int) -> int:
    array = np.lib.format.open_memmap(tmp_path / f"x{images}.npy", mode="w+", dtype=np.uint8,
                                      shape=(images, 3, 64, 64))
    rng = np.random.default_rng(images)
    for start in range(0, images, 1000):
        array[start:start + 1000] = rng.integers(0, 256, array[start:start + 1000].shape)
    array.flush()
    del array
    # Blocks above 64 KiB mapped and unmapped by glibc, not cached by it: the peak is of
    # what featvis holds, not of how the allocator happened to fragment.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536",
               PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_WRAPPER), "visualize", "--model",
         "fv_streamed:build", "--images", tmp_path / f"x{images}.npy", "--methods", "examples",
         "--units", "4", "--k", "4", "--quiet", "--no-figures", "--workers", "0",
         "--out", tmp_path / f"run{images}"], capture_output=True, text=True, env=env,
        cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


def test_the_peak_memory_of_a_streamed_run_does_not_grow_with_the_images(tmp_path):
    (tmp_path / "fv_streamed.py").write_text(_MODEL)
    n = 2000                 # the head the run looks at is of 2,000; 4N as float32: 393 MB
    small, large = _peak_kib(tmp_path, n), _peak_kib(tmp_path, 4 * n)
    assert abs(large - small) < 50 * 1024, (small, large)


def test_rho_and_the_data_bounds_of_a_dataset_come_from_its_head(digits, tmp_path,
                                                                 monkeypatch):
    from featvis.data import stream

    monkeypatch.setattr(stream, "SAMPLE", 25)                 # the head: 25 of the 60 images
    data = ImageFolder(digits)
    settings = VisualizeSettings(units=2, steps=3, restarts=1, k=3, bounds="data",
                                 methods=("examples", "maximize"))
    summary = visualize(reference_cnn(), data, tmp_path / "run", settings, progress=False)
    first = torch.stack([data[i][0] for i in range(25)])
    assert summary["settings"]["rho"] == round(first.flatten(1).norm(dim=1).mean().item(), 6)
    everything = torch.stack([data[i][0] for i in range(60)])
    assert summary["settings"]["rho"] != round(everything.flatten(1).norm(dim=1).mean().item(), 6)
    assert tuple(summary["settings"]["bounds"]) == (0.0, first.max().item())
