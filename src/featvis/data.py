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
from typing import Iterable, Iterator

import numpy as np
import torch

from .errors import DataError

__all__ = ["read_idx", "load_mnist", "mnist_info", "check_images", "iter_batches"]

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                return gzip.decompress(f.read())
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip data ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian numpy array.

    The magic number, type code, number of dimensions and payload length are all checked;
    any mismatch raises :class:`DataError` naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (magic number 0x{data[:4].hex()})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{path}: payload {what}: header {shape} needs {expected} bytes, found {actual}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: missing MNIST file {stem}(.gz)")


def load_mnist(split: str = "train", root: str | os.PathLike | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST split as ``(images float32 (N, 784) in [0, 1], labels int64 (N,))``.

    ``root=None`` reads the embedded subset (10,000 train / 2,000 test images); ``root=DIR``
    reads the four standard files (``.gz`` or raw) from a folder.
    """
    if split not in _MNIST_FILES:
        raise DataError(f"unknown MNIST split {split!r}: expected 'train' or 'test'")
    image_stem, label_stem = _MNIST_FILES[split]
    if root is None:
        base = resources.files("featvis") / "_embedded"
        with resources.as_file(base) as folder:
            images = read_idx(Path(folder) / f"{image_stem}.gz")
            labels = read_idx(Path(folder) / f"{label_stem}.gz")
    else:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: not a folder")
        images = read_idx(_find(root, image_stem))
        labels = read_idx(_find(root, label_stem))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{image_stem}: expected uint8 images (N, H, W), got "
                        f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{label_stem}: {labels.shape[0] if labels.ndim else 0} labels for "
                        f"{len(images)} images")
    x = torch.from_numpy(images.reshape(len(images), -1)).to(torch.float32).div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def mnist_info(root: str | os.PathLike | None, n_train: int) -> dict:
    """What a model records about its MNIST training data (saved with the checkpoint)."""
    return {"name": "MNIST", "source": "embedded subset" if root is None else str(root),
            "n_train": int(n_train)}


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
