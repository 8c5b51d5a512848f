import gzip
import struct

import numpy as np
import pytest
import torch

from featvis import DataError, load_mnist, read_idx

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
    import featvis.data

    monkeypatch.setattr(featvis.data, "_CHUNK", 7)   # reads that split items and rows
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
