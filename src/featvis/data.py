"""Reading data: IDX files (the MNIST format) and the MNIST splits as float tensors.

Images are float32 ``(N, 784)`` in ``[0, 1]`` (pixel / 255), labels int64 ``(N,)``.
``load_mnist(root=None)`` reads the small subset shipped inside the package (the first
10,000 training and 2,000 test images), so everything works offline.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, NoReturn

import numpy as np
import torch

from .errors import DataError, check_int

__all__ = ["read_idx", "load_mnist", "mnist_info", "check_images", "iter_batches",
           "MAX_IDX_BYTES", "MAX_GZIP_RATIO"]

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_IDX_BYTES = 4 * 2**30   # default limit on the payload an IDX header may declare
MAX_GZIP_RATIO = 1000       # limit on payload / gzip file size (MNIST: ~5, zeros: ~1030)
_CHUNK = 2**24              # bytes per read while streaming a payload
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian numpy array.

    The header is read first and the payload it declares is refused, before anything is
    allocated, if it exceeds ``max_bytes``, the file (raw) or :data:`MAX_GZIP_RATIO` times
    the file (gzip); the payload is then streamed into one buffer. The magic number, type
    code, number of dimensions and payload length are all checked; any mismatch raises
    :class:`DataError` naming the file.
    """
    path = Path(path)
    max_bytes = check_int("max_bytes", max_bytes)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            compressed = file.read(2) == b"\x1f\x8b"
            file.seek(0)
            if compressed:
                with gzip.GzipFile(fileobj=file) as stream:
                    return _read_idx_stream(path, stream, size, True, max_bytes)
            return _read_idx_stream(path, file, size, False, max_bytes)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip data ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_idx_stream(path: Path, stream: BinaryIO, size: int, compressed: bool,
                     max_bytes: int) -> np.ndarray:
    """:func:`read_idx` on an open stream of ``size`` bytes on disk (compressed or not)."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(magic)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", magic)
    if zero != 0 or code not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (magic number 0x{magic.hex()})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    claim = f"{path}: header declares {shape} {dtype.name} = {expected} bytes"
    if expected > max_bytes:
        raise DataError(f"{claim}, above the limit max_bytes={max_bytes} "
                        f"({max_bytes / 2**30:.3g} GiB)")
    if compressed and expected > MAX_GZIP_RATIO * size:
        raise DataError(f"{claim}, over {MAX_GZIP_RATIO} times the {size} bytes of gzip data "
                        "(a decompression bomb?)")
    if not compressed and expected != size - 4 - 4 * ndim:
        _refuse_length(path, shape, expected, size - 4 - 4 * ndim)
    buffer = np.empty(expected, np.uint8)
    view, filled = memoryview(buffer), 0
    while filled < expected:
        count = stream.readinto(view[filled:filled + _CHUNK])
        if not count:
            _refuse_length(path, shape, expected, filled)
        filled += count
    if stream.read(1):
        _refuse_length(path, shape, expected, None)
    array = buffer.view(dtype).reshape(shape)
    if not dtype.isnative:   # big-endian on disk: swap in place, no second copy
        array = array.byteswap(inplace=True).view(dtype.newbyteorder())
    return array


def _refuse_length(path: Path, shape: tuple[int, ...], expected: int, found: int | None
                   ) -> NoReturn:
    """The payload is shorter than the header declares (``found`` bytes) or longer (None:
    there is more, not counted so as not to decompress it)."""
    what = "truncated" if found is not None and found < expected else "has trailing bytes"
    raise DataError(f"{path}: payload {what}: header {shape} needs {expected} bytes, found "
                    f"{'more' if found is None else found}")


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: missing MNIST file {stem}(.gz)")


def load_mnist(split: str = "train", root: str | os.PathLike | None = None, *,
               max_bytes: int = MAX_IDX_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST split as ``(images float32 (N, 784) in [0, 1], labels int64 (N,))``.

    ``root=None`` reads the embedded subset (10,000 train / 2,000 test images); ``root=DIR``
    reads the four standard files (``.gz`` or raw) from a folder; ``max_bytes`` is passed to
    :func:`read_idx`.
    """
    if split not in _MNIST_FILES:
        raise DataError(f"unknown MNIST split {split!r}: expected 'train' or 'test'")
    image_stem, label_stem = _MNIST_FILES[split]
    if root is None:
        base = resources.files("featvis") / "_embedded"
        with resources.as_file(base) as folder:
            images = read_idx(Path(folder) / f"{image_stem}.gz", max_bytes=max_bytes)
            labels = read_idx(Path(folder) / f"{label_stem}.gz", max_bytes=max_bytes)
    else:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: not a folder")
        images = read_idx(_find(root, image_stem), max_bytes=max_bytes)
        labels = read_idx(_find(root, label_stem), max_bytes=max_bytes)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{image_stem}: expected uint8 images (N, H, W), got "
                        f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{label_stem}: {labels.shape[0] if labels.ndim else 0} labels for "
                        f"{len(images)} images")
    x = torch.from_numpy(images.reshape(len(images), -1)).to(torch.float32).div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def mnist_info(root: str | os.PathLike | None, images: torch.Tensor) -> dict:
    """What a model records about its MNIST training ``images`` (saved with the checkpoint):
    where they came from, how many, and their fingerprint (``data_sha256``)."""
    from .fingerprint import data_fingerprint

    return {"name": "MNIST", "source": "embedded subset" if root is None else str(root),
            "n_train": len(images), "data_sha256": data_fingerprint(images)}


def check_images(images: torch.Tensor, width: int | None = None, *,
                 name: str = "images", unit_range: bool = True) -> torch.Tensor:
    """Validate a batch of flat inputs: 2-D, floating, finite, optionally ``width`` wide and
    in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise DataError(f"{name}: expected a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 2:
        raise DataError(f"{name}: expected shape (N, D), got {tuple(images.shape)}")
    if width is not None and images.shape[1] != width:
        raise DataError(f"{name}: width {images.shape[1]} does not match the model's "
                        f"input size {width}")
    if not images.is_floating_point():
        raise DataError(f"{name}: expected floating-point values, got {images.dtype}")
    if images.numel() == 0:
        return images
    if unit_range:
        # One pass: NaN propagates through min/max and +-inf falls outside [0, 1].
        low, high = (v.item() for v in torch.aminmax(images))
        if not (0 <= low and high <= 1):
            if math.isnan(low) or math.isnan(high) or math.isinf(low) or math.isinf(high):
                raise DataError(f"{name}: contains NaN or infinite values")
            raise DataError(f"{name}: values must lie in [0, 1] (found {low:.3g}..{high:.3g})")
    elif not torch.isfinite(images).all():
        raise DataError(f"{name}: contains NaN or infinite values")
    return images


def iter_batches(data: torch.Tensor | Iterable[torch.Tensor], batch_size: int
                 ) -> Iterator[torch.Tensor]:
    """Yield ``data`` in batches: slices of a tensor, or the items of an iterable of batches
    (a ``DataLoader`` yielding ``(x, y)`` pairs gives its first element)."""
    if isinstance(data, torch.Tensor):
        for start in range(0, data.shape[0], batch_size):
            yield data[start:start + batch_size]
        return
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch
