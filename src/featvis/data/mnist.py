"""The MNIST splits as float tensors: ``(N, 784)`` in ``[0, 1]``, labels int64;
``root=None`` reads the small subset shipped inside the package, so everything works offline."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .idx import MAX_IDX_BYTES, read_idx


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}



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
    if len(images) == 0 or images.shape[1] * images.shape[2] == 0:
        raise DataError(f"{image_stem}: holds no images (shape {images.shape})")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{label_stem}: {labels.shape[0] if labels.ndim else 0} labels for "
                        f"{len(images)} images")
    x = torch.from_numpy(images.reshape(len(images), -1)).to(torch.float32).div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def mnist_info(root: str | os.PathLike | None, images: torch.Tensor) -> dict:
    """What a model records about its MNIST training ``images`` (saved with the checkpoint):
    where they came from, how many, and their fingerprint (``data_sha256``)."""
    from ..io.fingerprint import data_fingerprint

    return {"name": "MNIST", "source": "embedded subset" if root is None else str(root),
            "n_train": len(images), "data_sha256": data_fingerprint(images)}
