import gzip
import os
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import featvis.data.idx
import featvis.data.images
from featvis import DataError, load_mnist, read_idx
from featvis.data import Normalization, load_images, parse_normalize

from helpers import write_idx


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int16, 0x0B), (np.float32, 0x0D)])
def test_read_idx_round_trip(tmp_path, compress, dtype, code):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "a.idx", array, code, compress=compress))
    assert out.dtype == np.dtype(dtype) and out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable


@pytest.mark.parametrize("make,problem", [
    (lambda a: dict(header=b"\x00\x00\x08", payload=b""), "too short"),
    (lambda a: dict(header=b"\x12\x34\x08\x03" + struct.pack(">3I", 2, 3, 4)), "magic"),
    (lambda a: dict(header=b"\x00\x00\x07\x03" + struct.pack(">3I", 2, 3, 4)), "magic"),
    (lambda a: dict(header=b"\x00\x00\x08\x00"), "0 dimensions"),
    (lambda a: dict(header=b"\x00\x00\x08\x03" + struct.pack(">2I", 2, 3), payload=b""),
     "truncated IDX header"),
    (lambda a: dict(payload=a.tobytes()[:-5]), "truncated"),
    (lambda a: dict(payload=a.tobytes() + b"xx"), "trailing bytes"),
])
def test_read_idx_rejects_bad_files(tmp_path, make, problem):
    array = np.zeros((2, 3, 4), np.uint8)
    path = write_idx(tmp_path / "bad.idx", array, **make(array))
    with pytest.raises(DataError, match=problem) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_idx_rejects_corrupt_gzip(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 100) + bytes(100))[:30])
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "nothing.idx")


def test_embedded_mnist():
    x, y = load_mnist("train")
    assert x.shape == (10_000, 784) and x.dtype == torch.float32
    assert y.shape == (10_000,) and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() == 1.0
    assert y[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # the official first labels
    xt, yt = load_mnist("test")
    assert xt.shape == (2_000, 784) and yt[:5].tolist() == [7, 2, 1, 0, 4]
    # The mean L2 norm that DESIGN.md quotes for MNIST/255 (9.215 on the full set).
    assert abs(x.norm(dim=1).mean().item() - 9.215) < 0.1


def _mnist_folder(tmp_path, n=5, compress=True, skip=()):
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            name = f"{prefix}-{kind}" + (".gz" if compress else "")
            if name not in skip:
                write_idx(tmp_path / name, arr, compress=compress)
    return tmp_path


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_from_folder(tmp_path, compress):
    x, y = load_mnist("test", _mnist_folder(tmp_path, compress=compress))
    assert x.shape == (5, 784) and y.shape == (5,)
    raw = read_idx(tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if compress else "")))
    torch.testing.assert_close(x, torch.from_numpy(raw.reshape(5, -1)).float() / 255)


def test_load_mnist_missing_file(tmp_path):
    root = _mnist_folder(tmp_path, skip=("train-labels-idx1-ubyte.gz",))
    with pytest.raises(DataError, match="missing MNIST file train-labels"):
        load_mnist("train", root)


def test_load_mnist_label_count_mismatch(tmp_path):
    root = _mnist_folder(tmp_path)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8), compress=True)
    with pytest.raises(DataError, match="3 labels for 5 images"):
        load_mnist("train", root)


def test_load_mnist_bad_split_and_folder(tmp_path):
    with pytest.raises(DataError, match="unknown MNIST split"):
        load_mnist("valid")
    with pytest.raises(DataError, match="not a folder"):
        load_mnist("train", tmp_path / "absent")


def _idx_header(shape, code=0x08):
    return struct.pack(">HBB", 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_refuses_a_payload_above_max_bytes(tmp_path, compress):
    path = write_idx(tmp_path / "huge.idx", None, header=_idx_header((100000, 1000, 1000)),
                     payload=b"", compress=compress)
    with pytest.raises(DataError, match=r"declares \(100000, 1000, 1000\) uint8 = 100000000000 "
                                        r"bytes, above the limit max_bytes=4294967296 \(4 GiB\)"):
        read_idx(path)
    small = write_idx(tmp_path / "small.idx", np.zeros((2, 3, 4), np.int16), 0x0B,
                      compress=compress)
    with pytest.raises(DataError, match="int16 = 48 bytes, above the limit max_bytes=47"):
        read_idx(small, max_bytes=47)
    assert read_idx(small, max_bytes=48).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="max_bytes must be a positive integer"):
        read_idx(small, max_bytes=0)


def test_load_mnist_passes_max_bytes_on(tmp_path):
    root = _mnist_folder(tmp_path)
    with pytest.raises(DataError, match="train-images.*above the limit max_bytes=3000"):
        load_mnist("train", root, max_bytes=3000)
    with pytest.raises(DataError, match="above the limit max_bytes=1000"):
        load_mnist("test", max_bytes=1000)     # the embedded subset too
    assert load_mnist("train", root, max_bytes=5 * 784)[0].shape == (5, 784)


def test_read_idx_refuses_a_gzip_bomb_before_decompressing(tmp_path, monkeypatch):
    """16 MiB of zeros compress 1027 times: more than MAX_GZIP_RATIO allows."""
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(_idx_header((2**24,)) + bytes(2**24)))
    monkeypatch.setattr(np, "empty", None)     # refused before any buffer is allocated
    with pytest.raises(DataError, match=r"declares \(16777216,\) uint8 = 16777216 bytes, over "
                                        r"1000 times the \d+ bytes of gzip data") as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int16, 0x0B), (np.float64, 0x0E)])
def test_read_idx_streams_in_chunks(tmp_path, monkeypatch, compress, dtype, code):
    import featvis.data.idx

    monkeypatch.setattr(featvis.data.idx, "READ_CHUNK", 7)   # reads that split items and rows
    array = (np.arange(5 * 13) * 37 % 251 - 100).reshape(5, 13).astype(dtype)
    if dtype == np.uint8:
        array = (np.arange(5 * 13) * 37 % 251).reshape(5, 13).astype(np.uint8)
    out = read_idx(write_idx(tmp_path / "a.idx", array, code, compress=compress))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.flags.writeable
    np.testing.assert_array_equal(out, array)


def test_read_idx_reads_multi_member_gzip(tmp_path):
    array = np.arange(2 * 50, dtype=np.uint8).reshape(2, 50)
    data = _idx_header(array.shape) + array.tobytes()
    path = tmp_path / "members.gz"
    path.write_bytes(b"".join(gzip.compress(data[i:i + 30]) for i in range(0, len(data), 30)))
    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize("payload,problem", [
    (bytes(23), r"payload truncated: header \(2, 3, 4\) needs 24 bytes, found 23"),
    (bytes(25), r"payload has trailing bytes: header \(2, 3, 4\) needs 24 bytes, found more"),
    (bytes(24) + bytes(10**6), "payload has trailing bytes"),
])
def test_read_idx_checks_the_length_of_a_gzip_payload(tmp_path, payload, problem):
    path = write_idx(tmp_path / "bad.gz", None, header=_idx_header((2, 3, 4)), payload=payload,
                     compress=True)
    with pytest.raises(DataError, match=problem) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_idx_rejects_gzip_cut_inside_the_payload(tmp_path):
    rng = np.random.default_rng(0)
    data = _idx_header((100, 100)) + rng.integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    compressed = gzip.compress(data)
    path = tmp_path / "cut.gz"
    for cut in (len(compressed) // 2, len(compressed) - 4):     # inside the stream, the trailer
        path.write_bytes(compressed[:cut])
        with pytest.raises(DataError, match="corrupt gzip data"):
            read_idx(path)
    path.write_bytes(compressed[:-8] + b"\x00" * 8)               # wrong CRC and length
    with pytest.raises(DataError, match="corrupt gzip data"):
        read_idx(path)


# --- load_images: image folders and .npy arrays; Normalization -----------------------------


def _png(path, array, **save):
    """Write ``array`` (uint8 (H, W) or (H, W, 3)) as an image; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return array


def _pixels(n, h, w, c=None, seed=0):
    shape = (n, h, w) if c is None else (n, h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _as_float(array):
    """What load_images must return for uint8 images (H, W[, 3]): (N, C, H, W) / 255."""
    t = torch.from_numpy(np.array(array))
    t = t[:, None] if t.dim() == 3 else t.permute(0, 3, 1, 2)
    return t.float() / 255


def _refused(call, problem, *args, **kwargs):
    """``call`` raises a one-line DataError matching ``problem``; returns its message."""
    with pytest.raises(DataError, match=problem) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_load_images_grey_folder(tmp_path):
    arrays = _pixels(3, 4, 5)
    for name, array in zip(["a.PNG", "b.png", "c.png"], arrays):
        _png(tmp_path / name, array)
    (tmp_path / "notes.txt").write_text("not an image")
    _png(tmp_path / ".hidden.png", arrays[0])
    images, labels, classes = load_images(tmp_path)
    assert images.dtype == torch.float32 and images.shape == (3, 1, 4, 5)
    assert torch.equal(images, _as_float(arrays))   # sorted order, exact pixel / 255
    assert labels is None and classes == []


def test_load_images_colour_png_and_jpeg(tmp_path):
    rgb = _png(tmp_path / "a.png", _pixels(1, 4, 5, 3)[0])
    smooth = np.broadcast_to(np.linspace(0, 255, 5, dtype=np.uint8)[None, :, None], (4, 5, 3))
    _png(tmp_path / "b.JPEG", np.ascontiguousarray(smooth), quality=95)
    _png(tmp_path / "c.jpg", np.full((4, 5), 77, np.uint8), quality=95)
    images, _, _ = load_images(tmp_path)
    assert images.shape == (3, 3, 4, 5)      # one colour image: every image in RGB
    assert torch.equal(images[0], _as_float(rgb[None])[0])
    with Image.open(tmp_path / "b.JPEG") as jpeg:
        decoded = np.array(jpeg.convert("RGB"))
    assert torch.equal(images[1], _as_float(decoded[None])[0])
    assert (images[1] - _as_float(smooth[None])[0]).abs().max() < 8 / 255   # lossy, close
    assert torch.equal(images[2], torch.full((3, 4, 5), 77 / 255))          # grey, repeated


def test_load_images_class_subfolders(tmp_path):
    cats, dogs = _pixels(2, 3, 3, seed=1), _pixels(1, 3, 3, seed=2)
    _png(tmp_path / "dogs" / "x.png", dogs[0])
    _png(tmp_path / "cats" / "b.png", cats[1])
    _png(tmp_path / "cats" / "a.png", cats[0])
    (tmp_path / "README.md").write_text("top-level files other than images are fine")
    images, labels, classes = load_images(tmp_path)
    assert classes == ["cats", "dogs"]
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 0, 1]
    assert torch.equal(images, _as_float(np.concatenate([cats, dogs])))
    images, labels, classes = load_images(tmp_path, max_images=2)
    assert images.shape[0] == 2 and labels.tolist() == [0, 0] and classes == ["cats", "dogs"]


def test_load_images_folder_layouts_refused(tmp_path):
    _refused(load_images, "no PNG/JPEG images", tmp_path)
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    _refused(load_images, "no PNG/JPEG images", tmp_path)
    _png(tmp_path / "cats" / "a.png", _pixels(1, 2, 2)[0])
    _png(tmp_path / "top.png", _pixels(1, 2, 2)[0])
    _refused(load_images, r"holds both images \(top.png\) and subfolders \(cats\)", tmp_path)
    (tmp_path / "top.png").unlink()
    (tmp_path / "dogs").mkdir()
    assert _refused(load_images, "class folder without PNG/JPEG images", tmp_path).startswith(
        str(tmp_path / "dogs"))
    _png(tmp_path / "dogs" / "deeper" / "a.png", _pixels(1, 2, 2)[0])
    _refused(load_images, "folders nest one level at most", tmp_path)


def test_load_images_resize(tmp_path):
    big = _png(tmp_path / "a.png", _pixels(1, 6, 8)[0])
    _png(tmp_path / "b.png", np.full((3, 5), 200, np.uint8))
    images, _, _ = load_images(tmp_path, resize=(4, 2))
    assert images.shape == (2, 1, 4, 2)
    expected = np.array(Image.fromarray(big).resize((2, 4), Image.Resampling.BILINEAR))
    assert torch.equal(images[0, 0], torch.from_numpy(expected).float() / 255)
    assert torch.equal(images[1], torch.full((1, 4, 2), 200 / 255))   # constant stays put


def test_load_images_size_mismatch_names_the_odd_file(tmp_path):
    _png(tmp_path / "c" / "a.png", _pixels(1, 4, 4)[0])
    _png(tmp_path / "c" / "b.png", _pixels(1, 4, 4)[0])
    _png(tmp_path / "d" / "c.png", _pixels(1, 5, 3)[0])
    message = _refused(load_images, "--resize H,W", tmp_path)
    assert message == (f"{tmp_path / 'd' / 'c.png'}: 5x3 pixels (HxW), but "
                       f"{os.path.join('c', 'a.png')} is 4x4; resize them all with --resize "
                       "H,W (resize=(H, W))")


def test_load_images_channel_conversion(tmp_path):
    rgb = _png(tmp_path / "a.png", _pixels(1, 3, 4, 3)[0])
    grey = _png(tmp_path / "b.png", _pixels(1, 3, 4, seed=1)[0])
    images, _, _ = load_images(tmp_path, channels=1)
    assert images.shape == (2, 1, 3, 4)
    luma = np.array(Image.fromarray(rgb).convert("L"))
    assert torch.equal(images[0, 0], torch.from_numpy(luma).float() / 255)
    weighted = torch.from_numpy(rgb).float() @ torch.tensor([0.299, 0.587, 0.114]) / 255
    assert (images[0, 0] - weighted).abs().max() <= 1 / 255
    assert torch.equal(images[1, 0], torch.from_numpy(grey).float() / 255)
    images, _, _ = load_images(tmp_path, channels=3)
    assert torch.equal(images[1], (torch.from_numpy(grey).float() / 255).expand(3, -1, -1))


def test_load_images_reads_16_bit_png(tmp_path):
    array = (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4)
    Image.fromarray(array).save(tmp_path / "deep.png")
    images, _, _ = load_images(tmp_path)
    assert images.shape == (1, 1, 3, 4)
    assert torch.equal(images[0, 0], torch.from_numpy(array.astype(np.float32)) / 65535)


def test_load_images_refuses_corrupt_images(tmp_path):
    data = tmp_path / "data"
    _png(data / "a.png", _pixels(1, 16, 16)[0])
    good = (data / "a.png").read_bytes()
    (data / "b.png").write_bytes(good[:len(good) // 2])
    assert _refused(load_images, "corrupt or unreadable image", data).startswith(
        str(data / "b.png"))
    (data / "b.png").write_bytes(b"definitely not an image")
    _refused(load_images, r"b.png: not a PNG or JPEG image$", data)
    Image.fromarray(_pixels(1, 16, 16)[0]).save(data / "b.png", format="GIF")
    _refused(load_images, r"b.png: not a PNG or JPEG image$", data)   # other decoders off


def _png_header(width, height):
    """A PNG that claims ``width`` x ``height`` pixels and holds none."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I",
                                                                       zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_load_images_refuses_decompression_bombs(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    _refused(load_images, r"bomb.png: refused as a possible decompression bomb", tmp_path)
    (tmp_path / "bomb.png").unlink()
    _png(tmp_path / "a.png", _pixels(1, 4, 4)[0])          # 16 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)     # above 10: Pillow only warns
    _refused(load_images, r"a.png: refused as a possible decompression bomb", tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)
    assert load_images(tmp_path)[0].shape == (1, 1, 4, 4)


def test_load_images_refuses_missing_paths_and_symlink_loops(tmp_path):
    _refused(load_images, "cannot read", tmp_path / "absent")
    _png(tmp_path / "a.png", _pixels(1, 2, 2)[0])
    os.symlink(tmp_path / "loop.png", tmp_path / "loop.png")
    assert _refused(load_images, "cannot read", tmp_path).startswith(str(tmp_path / "loop.png"))
    _refused(load_images, "cannot read", tmp_path / "loop.png")
    (tmp_path / "a.txt").write_text("x")
    _refused(load_images, "expected a folder of PNG/JPEG images or a .npy file",
             tmp_path / "a.txt")


def test_load_images_refuses_a_large_output_before_decoding(tmp_path, monkeypatch):
    for name in "ab":
        _png(tmp_path / f"{name}.png", _pixels(1, 4, 4, 3)[0])
    monkeypatch.setattr(featvis.data.images, "decode_into", None)     # never reached
    _refused(load_images, r"\(2, 3, 4, 4\) float32 = 384 bytes, above the limit "
                          r"max_bytes=383", tmp_path, max_bytes=383)
    _refused(load_images, r"\(2, 3, 8, 8\) float32 = 1536 bytes", tmp_path, resize=(8, 8),
             max_bytes=1000)
    monkeypatch.undo()
    assert load_images(tmp_path, max_bytes=384)[0].shape == (2, 3, 4, 4)


@pytest.mark.parametrize("kwargs,problem", [
    (dict(channels=2), "channels must be 1 \\(greyscale\\) or 3 \\(RGB\\), got 2"),
    (dict(channels=True), "channels must be"),
    (dict(resize=(0, 3)), "resize must be two positive integers"),
    (dict(resize=(3,)), "resize must be two positive integers"),
    (dict(max_images=0), "max_images must be a positive integer"),
])
def test_load_images_checks_its_arguments(tmp_path, kwargs, problem):
    _png(tmp_path / "a.png", _pixels(1, 2, 2)[0])
    with pytest.raises(ValueError, match=problem):
        load_images(tmp_path, **kwargs)


def _npy(tmp_path, array, name="x.npy"):
    np.save(tmp_path / name, array)
    return tmp_path / name


def test_load_images_npy_uint8_and_float(tmp_path):
    grey = _pixels(3, 4, 5)
    images, labels, classes = load_images(_npy(tmp_path, grey))
    assert images.shape == (3, 1, 4, 5) and torch.equal(images, _as_float(grey))
    assert labels is None and classes == []
    flat = np.random.default_rng(0).normal(size=(4, 7))     # float64, any range kept
    images = load_images(_npy(tmp_path, flat))[0]
    assert images.dtype == torch.float32 and torch.equal(images, torch.from_numpy(flat).float())
    nchw = np.random.default_rng(1).random((2, 2, 3, 3)).astype(np.float16)
    images = load_images(_npy(tmp_path, nchw))[0]             # any channel count
    assert torch.equal(images, torch.from_numpy(nchw.astype(np.float32)))
    big_endian = np.asfortranarray(nchw.astype(">f4"))
    assert torch.equal(load_images(_npy(tmp_path, big_endian))[0], images)
    assert load_images(_npy(tmp_path, grey), max_images=2)[0].shape == (2, 1, 4, 5)


def test_load_images_npy_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(featvis.data.images, "NPY_CHUNK", 200)         # 2 rows of 5x5 float32 a chunk
    grey = _pixels(7, 5, 5)
    assert torch.equal(load_images(_npy(tmp_path, grey))[0], _as_float(grey))
    bad = grey.astype(np.float32)
    bad[5, 2, 2] = np.nan
    _refused(load_images, r"contains NaN or infinite values \(as float32\) in rows 4..5",
             _npy(tmp_path, bad))


def test_load_images_npy_channels_and_resize(tmp_path):
    rgb = np.random.default_rng(0).random((2, 3, 4, 4), dtype=np.float32)
    grey = load_images(_npy(tmp_path, rgb), channels=1)[0]
    expected = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    torch.testing.assert_close(grey, torch.from_numpy(expected)[:, None])
    one = _pixels(2, 4, 4)
    assert torch.equal(load_images(_npy(tmp_path, one), channels=3)[0],
                       _as_float(one).expand(-1, 3, -1, -1))
    assert torch.equal(load_images(_npy(tmp_path, one), channels=1)[0], _as_float(one))
    resized = load_images(_npy(tmp_path, np.full((2, 1, 6, 6), 0.25, np.float32)),
                          resize=(3, 2))[0]
    assert torch.equal(resized, torch.full((2, 1, 3, 2), 0.25))
    _refused(load_images, "cannot convert 2 channels to 3",
             _npy(tmp_path, np.zeros((1, 2, 3, 3), np.float32)), channels=3)
    flat = _npy(tmp_path, np.zeros((2, 9), np.float32))
    assert load_images(flat, channels=1)[0].shape == (2, 9)
    _refused(load_images, r"a flat \(N, D\) array has no channels or size", flat, channels=3)
    _refused(load_images, r"a flat \(N, D\) array has no channels or size", flat,
             resize=(3, 3))


class _Detonator:
    """An object whose unpickling would call :func:`_detonate`."""

    def __reduce__(self):
        return (_detonate, ())


DETONATIONS = []


def _detonate():
    DETONATIONS.append(1)


def test_load_images_npy_object_array_never_unpickled(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([_Detonator()], dtype=object), allow_pickle=True)
    np.load(path, allow_pickle=True)            # the control: unpickling does detonate
    assert DETONATIONS == [1]
    _refused(load_images, "corrupt or unsupported .npy file", path)
    assert DETONATIONS == [1]
    raw = tmp_path / "pickle.npy"
    raw.write_bytes(pickle.dumps(_Detonator()))
    _refused(load_images, "not a .npy file", raw)
    assert DETONATIONS == [1]


@pytest.mark.parametrize("make,problem", [
    (lambda data: data[:len(data) // 2], "corrupt or unsupported .npy file"),   # payload cut
    (lambda data: data[:40], "corrupt or unsupported .npy file"),              # header cut
    (lambda data: b"", "not a .npy file"),
])
def test_load_images_npy_truncated(tmp_path, make, problem):
    path = _npy(tmp_path, np.zeros((4, 5, 5), np.float32))
    path.write_bytes(make(path.read_bytes()))
    assert _refused(load_images, problem, path).startswith(str(path))


@pytest.mark.parametrize("array,problem", [
    (np.array([[0.5, np.nan]], np.float32), "contains NaN or infinite values"),
    (np.array([[0.5, 1e300]]), "contains NaN or infinite values"),      # inf as float32
    (np.zeros((2, 3), np.int32), "dtype int32 not supported"),
    (np.zeros((2, 3), bool), "dtype bool not supported"),
    (np.zeros(5, np.uint8), r"got shape \(5,\)"),
    (np.zeros((0, 3), np.uint8), r"expected a non-empty .*got shape \(0, 3\)"),
    (np.zeros((1, 1, 1, 1, 1), np.uint8), r"got shape \(1, 1, 1, 1, 1\)"),
])
def test_load_images_npy_refused(tmp_path, array, problem):
    _refused(load_images, problem, _npy(tmp_path, array))


def test_load_images_npy_refuses_an_npz_and_a_large_output(tmp_path):
    np.savez(tmp_path / "z.npz", a=np.zeros(3))
    os.rename(tmp_path / "z.npz", tmp_path / "z.npy")
    _refused(load_images, "not a .npy file", tmp_path / "z.npy")
    path = _npy(tmp_path, np.zeros((4, 1, 2, 2), np.uint8))
    _refused(load_images, r"\(4, 3, 2, 2\) float32 = 192 bytes, above the limit max_bytes=191",
             path, channels=3, max_bytes=191)


@pytest.mark.parametrize("text,channels,mean,std", [
    ("0.1307,0.3081", 1, [0.1307], [0.3081]),
    ("0.5, 0.25", 3, [0.5] * 3, [0.25] * 3),
    ("0.485,0.456,0.406,0.229,0.224,0.225", 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
])
def test_parse_normalize(text, channels, mean, std):
    m, s = parse_normalize(text, channels)
    assert m.dtype == s.dtype == torch.float32
    assert torch.equal(m, torch.tensor(mean)) and torch.equal(s, torch.tensor(std))


@pytest.mark.parametrize("text,channels,problem", [
    ("a,b", 1, "not a comma-separated list of numbers"),
    ("0.5,", 1, "not a comma-separated list of numbers"),
    ("0.5", 1, r"expected MEAN,STD for 1 channel\(s\), got 1 numbers"),
    ("1,2,3,4", 3, r"expected MEAN,STD or 3 means then 3 stds \(6 numbers\)"),
    ("0.5,0", 1, "stds finite and > 0"),
    ("0.5,-1", 1, "stds finite and > 0"),
    ("0.5,inf", 1, "stds finite and > 0"),
    ("nan,1", 1, "means must be finite"),
    ("1e300,1", 1, "means must be finite"),      # infinite as float32
])
def test_parse_normalize_errors(text, channels, problem):
    message = _refused(parse_normalize, problem, text, channels)
    assert message.startswith(f"normalize {text!r}: ")


def test_normalization_round_trip():
    norm = Normalization(*parse_normalize("0.485,0.456,0.406,0.229,0.224,0.225", 3))
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    z = norm.normalize(x)
    assert torch.equal(z[:, 1], (x[:, 1] - torch.tensor(0.456)) / torch.tensor(0.224))
    torch.testing.assert_close(norm.denormalize(z), x)
    assert torch.equal(x, x.clone()) and z.dtype == torch.float32   # x itself untouched
    flat = Normalization([0.1307], [0.3081])
    v = torch.rand(3, 784, dtype=torch.float64)
    assert flat.normalize(v).dtype == torch.float64
    torch.testing.assert_close(flat.denormalize(flat.normalize(v)), v)
    torch.testing.assert_close(flat.normalize(v[:, None, :, None]).flatten(1),
                               flat.normalize(v))


def test_normalization_refuses_other_shapes():
    norm = Normalization([0.5, 0.5, 0.5], [0.2, 0.2, 0.2])
    _refused(norm.normalize, r"for 3 channel\(s\) needs floating inputs \(N, 3, H, W\), "
                             r"got \(2, 1, 4, 4\)", torch.zeros(2, 1, 4, 4))
    _refused(norm.denormalize, r"got \(2, 3\)", torch.zeros(2, 3))
    _refused(norm.normalize, "needs floating inputs", torch.zeros(2, 3, 1, 1, dtype=torch.uint8))
    _refused(Normalization, "3 means for 2 stds", [0.1, 0.2, 0.3], [1.0, 1.0])
    _refused(Normalization, "stds finite and > 0", [0.1], [0.0])
