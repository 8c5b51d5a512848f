"""Inputs read on demand: image folders and .npy arrays as datasets give what loading them
whole gives, item by item and batch by batch; the mining batches of every share cover the
data once with their global starts, whatever the loader's workers and batch size; the head
and ``take`` read by index."""

import numpy as np
import pytest
import torch
from PIL import Image

from featvis import DataError, ImageFolder, Loading, NpyImages, load_images
from featvis.data import stream


def _folder(root, n_per_class=(5, 7), size=(6, 5), mode="L", seed=0):
    rng = np.random.default_rng(seed)
    for c, n in enumerate(n_per_class):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n):
            shape = size if mode == "L" else (*size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
                root / f"class{c}" / f"{i:03d}.png")
    return root


def test_an_image_folder_reads_each_image_as_loading_the_folder_does(tmp_path):
    root = _folder(tmp_path / "data", mode="RGB")
    whole, labels, classes = load_images(root)
    data = ImageFolder(root)
    assert len(data) == 12 and data.input_shape == (3, 6, 5) and data.classes == classes
    for i in range(len(data)):
        image, label = data[i]
        assert image.dtype == torch.float32 and torch.equal(image, whole[i])
        assert label == labels[i].item() == (0 if i < 5 else 1)
    grey = ImageFolder(root, channels=1, resize=(4, 4))
    assert torch.equal(stream.head(grey), load_images(root, channels=1, resize=(4, 4))[0])


def test_a_flat_folder_has_label_minus_one_and_mixed_sizes_are_refused_when_made(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    Image.new("L", (4, 4)).save(root / "a.png")
    assert ImageFolder(root)[0][1] == -1 and ImageFolder(root).labels is None
    Image.new("L", (5, 4)).save(root / "b.png")
    with pytest.raises(DataError, match="resize them all with --resize"):
        ImageFolder(root)
    assert ImageFolder(root, resize=(3, 3)).input_shape == (1, 3, 3)
    with pytest.raises(DataError, match="max_pixels=10 per image"):
        ImageFolder(root, max_pixels=10)


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_an_npy_dataset_reads_rows_and_scattered_items_as_loading_does(tmp_path, dtype):
    array = np.random.default_rng(1).integers(0, 256, (30, 3, 4, 4)).astype(dtype)
    if dtype != np.uint8:
        array /= 255
    path = tmp_path / "x.npy"
    np.save(path, array)
    whole = load_images(path, channels=1, resize=(2, 2))[0]
    data = NpyImages(path, channels=1, resize=(2, 2))
    assert data.input_shape == (1, 2, 2) and len(data) == 30
    torch.testing.assert_close(data.rows(3, 11), whole[3:11], rtol=0, atol=1e-6)
    torch.testing.assert_close(stream.take(data, torch.tensor([[7, 2], [29, 0]])),
                               whole[torch.tensor([[7, 2], [29, 0]])], rtol=0, atol=1e-6)
    torch.testing.assert_close(data[-1][0], whole[-1], rtol=0, atol=1e-6)


def test_an_npy_dataset_refuses_a_nan_when_it_reads_it(tmp_path):
    array = np.zeros((10, 4), np.float32)
    array[6, 1] = np.nan
    np.save(tmp_path / "x.npy", array)
    data = NpyImages(tmp_path / "x.npy")
    assert torch.equal(data.rows(0, 5), torch.zeros(5, 4))
    with pytest.raises(DataError, match=r"NaN or infinite values \(as float32\) in rows 5..9"):
        data.rows(5, 10)


@pytest.mark.parametrize("share", [(0, 1), (0, 3), (1, 3), (2, 3)])
@pytest.mark.parametrize("loading", [Loading(workers=0), Loading(workers=2, batch_size=3)])
def test_the_batches_of_a_share_are_the_fixed_global_batches_it_owns(share, loading):
    x = torch.arange(23.0)[:, None]
    dataset = torch.utils.data.TensorDataset(x, torch.zeros(23))
    from_tensor = list(stream.batches(x, 5, share=share))
    from_dataset = list(stream.batches(dataset, 5, share=share, loading=loading))
    assert [s for s, _ in from_dataset] == [s for s, _ in from_tensor] == \
        list(range(5 * share[0], 23, 5 * share[1]))
    for (start, a), (_, b) in zip(from_tensor, from_dataset):
        assert torch.equal(a, b)
        assert torch.equal(a[:, 0], torch.arange(start, start + len(a), dtype=torch.float32))


def test_every_input_is_in_exactly_one_share():
    seen = torch.cat([b for i in range(4) for _, b in stream.batches(torch.arange(50), 6,
                                                                      share=(i, 4))])
    assert torch.equal(seen.sort().values, torch.arange(50))


class _Words(torch.utils.data.Dataset):
    input_shape = (2,)

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return torch.zeros(2) if index != 4 else "word", index


def test_a_dataset_item_that_is_not_a_tensor_is_refused_by_index():
    with pytest.raises(DataError, match="^item 4 of the dataset is a str, not a tensor"):
        stream.take(_Words(), torch.tensor([1, 4]))
    for workers in (0, 2):                              # read by the loader's processes too
        with pytest.raises(DataError, match="^item 4 of the dataset is a str, not a tensor"):
            list(stream.batches(_Words(), 3, loading=Loading(workers=workers)))
    assert torch.equal(stream.take(_Words(), torch.tensor([[0, 0], [5, 1]])),
                       torch.zeros(2, 2, 2))


def test_loading_options_are_checked():
    with pytest.raises(ValueError, match="workers must be an integer >= 0"):
        Loading(workers=-1)
    with pytest.raises(ValueError, match="loader batch_size must be a positive integer"):
        Loading(batch_size=0)
