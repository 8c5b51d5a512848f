"""Mining a dataset read on demand against brute force over the same inputs held in memory:
a folder of a few thousand tiny PNGs streamed through a DataLoader (decoding workers, a
loader batch unlike the mining batch, shares) gives the values, indices, positions and
means that ``top_examples`` gives on the stacked tensor; deconvnet re-reads its examples
from the dataset by index."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from featvis import ImageFolder, Loading, TopK, deconvnet, top_examples
from featvis.methods.examples import mine


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"c{c}").mkdir()
        for i in range(1100):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
                root / f"c{c}" / f"{i:04d}.png")
    data = ImageFolder(root)
    return data, torch.stack([data[i][0] for i in range(len(data))])


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.Flatten(),
                         nn.Linear(48, 5)).eval()


def test_a_streamed_folder_mines_what_the_stacked_tensor_mines(folder):
    data, stacked = folder
    assert len(data) == 2200 and stacked.shape == (2200, 1, 8, 8)
    model, layers = cnn(), ["0", "2", "4"]
    streamed = top_examples(model, data, layers, k=7, batch_size=256,
                            loading=Loading(workers=2, batch_size=100))
    held = top_examples(model, stacked, layers, k=7, batch_size=256)
    with torch.no_grad():                                  # and by brute force
        conv = model[:3](stacked).flatten(2)                  # (N, 3, 36)
    best = conv.amax(2).topk(7, dim=0)
    assert torch.equal(held["2"].indices, best.indices.T)
    for key in layers:
        a, b = streamed[key], held[key]
        assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values)
        assert torch.equal(a.mean, b.mean)
        assert (a.positions is None) == (b.positions is None)
        if a.positions is not None:
            assert torch.equal(a.positions, b.positions)


def test_shares_of_a_streamed_folder_merge_into_the_single_pass(folder):
    data, stacked = folder
    model = cnn()
    shares = [mine(model, data, ["2"], 5, None, 300, share=(i, 3),
                   loading=Loading(workers=0))[1]["2"].best for i in range(3)]
    merged = shares[2].merge(shares[0]).merge(shares[1])
    single = mine(model, stacked, ["2"], 5, None, 300)[1]["2"].best
    assert isinstance(merged, TopK)
    for name in ("values", "indices", "positions"):
        assert torch.equal(getattr(merged, name), getattr(single, name))


def test_deconvnet_reads_its_examples_from_the_dataset(folder):
    data, stacked = folder
    model = cnn()
    a = deconvnet(model, data, "2", k=3)
    b = deconvnet(model, stacked, "2", k=3)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.projections, b.projections) and torch.equal(a.crops, b.crops)
