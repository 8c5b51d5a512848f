"""Reading data: IDX files (the MNIST format) and the MNIST splits as float tensors.

Images are float32 ``(N, 784)`` in ``[0, 1]`` (pixel / 255), labels int64 ``(N,)``.
``load_mnist(root=None)`` reads the small subset shipped inside the package (the first
10,000 training and 2,000 test images), so everything works offline. ``load_images`` reads
the inputs of any other model (a folder of PNG/JPEG images or a ``.npy`` array) and
:class:`Normalization` applies and undoes the per-channel standardisation it may expect.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, NoReturn, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import DataError, check_int, is_int

__all__ = ["read_idx", "load_mnist", "mnist_info", "check_images", "check_inputs",
           "picture_shape", "iter_batches", "load_images", "open_images", "ImageSource",
           "check_pixels", "parse_normalize", "Normalization", "MAX_IDX_BYTES", "MAX_GZIP_RATIO",
           "MAX_PIXELS", "IMAGE_SUFFIXES"]

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
MAX_PIXELS = 50_000_000     # default limit on one image's pixels (H x W), read from its header
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
    from .fingerprint import data_fingerprint

    return {"name": "MNIST", "source": "embedded subset" if root is None else str(root),
            "n_train": len(images), "data_sha256": data_fingerprint(images)}


def check_images(images: torch.Tensor, width: int | None = None, *,
                 name: str = "images", unit_range: bool = True) -> torch.Tensor:
    """Validate a batch of flat inputs: 2-D, floating, finite, optionally ``width`` wide and
    in [0, 1]."""
    _check_tensor(images, name)
    if images.dim() != 2:
        raise DataError(f"{name}: expected shape (N, D), got {tuple(images.shape)}")
    if width is not None and images.shape[1] != width:
        raise DataError(f"{name}: width {images.shape[1]} does not match the model's "
                        f"input size {width}")
    return _check_values(images, name, unit_range)


def _check_tensor(values: object, name: str) -> None:
    if not isinstance(values, torch.Tensor):
        raise DataError(f"{name}: expected a torch.Tensor, got {type(values).__name__}")


def _check_values(images: torch.Tensor, name: str, unit_range: bool) -> torch.Tensor:
    """Floating and finite (and in [0, 1] with ``unit_range``), in one pass over the data."""
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


def picture_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """How one input is laid out as a picture, ``(C, H, W)``: a flat ``(D,)`` input as a
    square when ``D`` is one (MNIST's 784 as 28x28), else as a one-row strip; ``(H, W)`` as
    one channel. Rendering and the image priors of maximization both use it."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        return (1, side, side) if side * side == shape[0] else (1, 1, shape[0])
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return shape
    raise ValueError(f"cannot draw inputs of shape {shape}: expected (D,), (H, W) or (C, H, W)")


def check_inputs(inputs: torch.Tensor, input_shape: tuple[int, ...] | None = None, *,
                 name: str = "images") -> torch.Tensor:
    """Validate a batch of inputs of any shape: a floating, finite tensor ``(N, *shape)``
    whose one input is ``input_shape`` when given."""
    _check_tensor(inputs, name)
    if inputs.dim() < 2:
        raise DataError(f"{name}: expected a batch (N, *input_shape), got shape "
                        f"{tuple(inputs.shape)}")
    if input_shape is not None and tuple(inputs.shape[1:]) != tuple(input_shape):
        raise DataError(f"{name}: one input has shape {tuple(inputs.shape[1:])}, the model "
                        f"takes {tuple(input_shape)}")
    return _check_values(inputs, name, unit_range=False)


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


# --- Inputs for any model: image folders and .npy arrays ----------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")   # matched case-insensitively
_IMAGE_FORMATS = ("PNG", "JPEG")             # the only decoders Pillow may try
_GREY_BANDS = ("1", "L", "I")                # first band of a greyscale mode (L, LA, I;16...)
_LUMA = (0.299, 0.587, 0.114)                # ITU-R 601-2 weights, as Pillow's RGB -> L
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class ImageSource:
    """A model's inputs on disk whose headers are read and checked but whose pixels are not
    decoded yet: :meth:`load` returns float32 ``shape``; ``input_shape`` is one input's."""

    path: Path
    shape: tuple[int, ...]
    labels: torch.Tensor | None
    classes: list[str]
    _decode: Callable[[], torch.Tensor] = field(repr=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def load(self) -> torch.Tensor:
        """The inputs, decoded into one tensor of :attr:`shape`."""
        return self._decode()


def load_images(path: str | os.PathLike, *, channels: int | None = None,
                resize: tuple[int, int] | None = None, max_images: int | None = None,
                max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_IDX_BYTES
                ) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Load a model's inputs as ``(images float32, labels int64 (N,) or None, classes)``.

    ``path`` is either a folder of PNG/JPEG images, directly inside it (no labels) or in one
    level of class subfolders (``labels`` index the sorted folder names ``classes``), read
    in sorted order into ``(N, C, H, W)`` in [0, 1]; or a ``.npy`` array, read without
    unpickling: uint8 (divided by 255) or float (kept as is, must be finite) of shape
    ``(N, D)`` (returned as is), ``(N, H, W)`` (one channel) or ``(N, C, H, W)``.
    ``channels`` converts to greyscale (1) or RGB (3); ``None`` keeps an array's channels
    and gives a folder 1 if every image is greyscale, else 3. Without ``resize=(H, W)``
    every image must have one size. Hidden entries and other files are skipped; only the
    PNG and JPEG decoders run, and Pillow's decompression-bomb limit is enforced.
    ``max_images`` keeps the first images. Two budgets are checked from the headers, before
    anything is decoded: ``max_pixels`` per image (and per ``resize``), ``max_bytes`` for the
    whole float32 output (see :func:`open_images`).

    Example:
        >>> images, labels, classes = load_images("photos/", channels=3, resize=(64, 64))
        ... # doctest: +SKIP
    """
    source = open_images(path, channels=channels, resize=resize, max_images=max_images,
                         max_pixels=max_pixels, max_bytes=max_bytes)
    return source.load(), source.labels, source.classes


def open_images(path: str | os.PathLike, *, channels: int | None = None,
                resize: tuple[int, int] | None = None, max_images: int | None = None,
                max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_IDX_BYTES) -> ImageSource:
    """The :class:`ImageSource` of :func:`load_images` (same arguments): every header read
    and every budget checked, nothing decoded, so that a caller can check the shape against
    a model before paying for the pixels."""
    path = Path(path)
    if channels is not None and not (is_int(channels) and channels in (1, 3)):
        raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}")
    max_pixels = check_int("max_pixels", max_pixels)
    if resize is not None:
        if not (isinstance(resize, (tuple, list)) and len(resize) == 2
                and all(is_int(v) and v >= 1 for v in resize)):
            raise ValueError(f"resize must be two positive integers (H, W), got {resize!r}")
        resize = (int(resize[0]), int(resize[1]))
        check_pixels("resize", resize, max_pixels)
    if max_images is not None:
        max_images = check_int("max_images", max_images)
    max_bytes = check_int("max_bytes", max_bytes)
    if stat.S_ISDIR(_stat(path)):
        return _open_folder(path, channels, resize, max_images, max_pixels, max_bytes)
    if path.suffix.lower() == ".npy":
        return _open_npy(path, channels, resize, max_images, max_pixels, max_bytes)
    raise DataError(f"{path}: expected a folder of PNG/JPEG images or a .npy file")


def check_pixels(where: object, size: Sequence[int], max_pixels: int) -> None:
    """Refuse an image of ``size`` (H, W) above ``max_pixels``, naming the option that
    raises the budget."""
    count = math.prod(size)
    if count > max_pixels:
        raise DataError(f"{where}: {'x'.join(map(str, size))} = {count} pixels, above the "
                        f"limit max_pixels={max_pixels} per image (--max-pixels raises it)")


def _stat(path: Path) -> int:
    """The mode of ``path`` (symlinks followed): a missing file or a symlink loop is a
    DataError."""
    try:
        return os.stat(path).st_mode
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _scan(folder: Path) -> tuple[list[Path], list[Path]]:
    """The PNG/JPEG files and the subfolders of ``folder``, sorted by name; hidden entries
    and other files are skipped."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise DataError(f"{folder}: cannot list ({exc.strerror or exc})") from None
    files, folders = [], []
    for name in names:
        if name.startswith("."):
            continue
        mode = _stat(folder / name)
        if stat.S_ISDIR(mode):
            folders.append(folder / name)
        elif stat.S_ISREG(mode) and name.lower().endswith(IMAGE_SUFFIXES):
            files.append(folder / name)
    return files, folders


def _list_images(root: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """The images of ``root`` in reading order, their class indices (None without class
    subfolders) and the class names."""
    files, folders = _scan(root)
    if files and folders:
        raise DataError(f"{root}: holds both images ({files[0].name}) and subfolders "
                        f"({folders[0].name}); put every image in a class subfolder or none")
    if files:
        return files, None, []
    if not folders:
        raise DataError(f"{root}: no PNG/JPEG images ({', '.join(IMAGE_SUFFIXES)})")
    paths: list[Path] = []
    labels: list[int] = []
    for index, folder in enumerate(folders):
        inner, nested = _scan(folder)
        if nested:
            raise DataError(f"{nested[0]}: folders nest one level at most (class subfolders "
                            "of images)")
        if not inner:
            raise DataError(f"{folder}: class folder without PNG/JPEG images")
        paths += inner
        labels += [index] * len(inner)
    return paths, labels, [folder.name for folder in folders]


def _image_error(file: Path, exc: Exception) -> DataError:
    """The one-line DataError for Pillow's failure ``exc`` on ``file``."""
    if isinstance(exc, _BOMB):
        return DataError(f"{file}: refused as a possible decompression bomb ({exc})")
    if isinstance(exc, Image.UnidentifiedImageError):
        return DataError(f"{file}: not a PNG or JPEG image")
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return DataError(f"{file}: corrupt or unreadable image ({detail})")


def _probe(file: Path) -> tuple[tuple[int, int], bool]:
    """``(height, width)`` of ``file`` and whether it is greyscale, from its header."""
    try:
        with Image.open(file, formats=_IMAGE_FORMATS) as image:
            return (image.height, image.width), image.getbands()[0] in _GREY_BANDS
    except (OSError, SyntaxError, ValueError, *_BOMB) as exc:
        raise _image_error(file, exc) from None


def _decode(file: Path, channels: int, size: tuple[int, int], out: np.ndarray) -> None:
    """Decode ``file`` into ``out`` (float32 ``(channels, H, W)`` = ``size``) in [0, 1]."""
    try:
        with Image.open(file, formats=_IMAGE_FORMATS) as image:
            if image.mode.startswith("I"):     # 16-bit greyscale PNG
                image, scale = image.convert("F"), 65535.0
            else:
                image, scale = image.convert("L" if channels == 1 else "RGB"), 255.0
            if (image.height, image.width) != size:
                image = image.resize(size[::-1], Image.Resampling.BILINEAR)
            array = np.asarray(image)
    except (OSError, SyntaxError, ValueError, *_BOMB) as exc:
        raise _image_error(file, exc) from None
    if array.ndim == 3:
        array = array.transpose(2, 0, 1)
    np.divide(array, scale, out=out, dtype=np.float32)   # (H, W) broadcasts to 3 channels


def _open_folder(root: Path, channels: int | None, resize: tuple[int, int] | None,
                 max_images: int | None, max_pixels: int, max_bytes: int) -> ImageSource:
    """:func:`open_images` on a folder: every header read and the output sized."""
    paths, labels, classes = _list_images(root)
    paths = paths[:max_images]
    if labels is not None:
        labels = labels[:max_images]
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        headers = []
        for file in paths:
            headers.append(_probe(file))
            check_pixels(file, headers[-1][0], max_pixels)
    size = resize or headers[0][0]
    if resize is None:
        for file, (other, _) in zip(paths, headers):
            if other != size:
                raise DataError(f"{file}: {other[0]}x{other[1]} pixels (HxW), but "
                                f"{paths[0].relative_to(root)} is {size[0]}x{size[1]}; "
                                "resize them all with --resize H,W (resize=(H, W))")
    if channels is None:
        channels = 1 if all(grey for _, grey in headers) else 3
    shape = (len(paths), channels, *size)
    _check_output(root, shape, max_bytes)

    def decode() -> torch.Tensor:
        images = torch.empty(shape, dtype=torch.float32)
        buffer = images.numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            for index, file in enumerate(paths):
                _decode(file, channels, size, buffer[index])
        return images

    return ImageSource(root, shape, None if labels is None else
                       torch.tensor(labels, dtype=torch.int64), classes, decode)


def _check_output(path: Path, shape: tuple[int, ...], max_bytes: int) -> None:
    """Refuse a float32 output of ``shape`` above ``max_bytes``, before allocating it."""
    size = math.prod(shape) * 4
    if size > max_bytes:
        raise DataError(f"{path}: {shape} float32 = {size} bytes, above the limit "
                        f"max_bytes={max_bytes} ({max_bytes / 2**30:.3g} GiB) of inputs held "
                        "in memory (--max-bytes raises it); read fewer images (max_images) "
                        "or smaller ones (--resize)")


def _open_npy(path: Path, channels: int | None, resize: tuple[int, int] | None,
              max_images: int | None, max_pixels: int, max_bytes: int) -> ImageSource:
    """:func:`open_images` on a ``.npy`` file: memory-mapped, converted in chunks when
    loaded."""
    try:
        with open(path, "rb") as file:
            magic = file.read(6)
        # Never unpickles: an object array fails here, as does a pickle without the magic.
        array = np.load(path, allow_pickle=False, mmap_mode="r") if magic == _NPY_MAGIC else None
    except (OSError, ValueError, EOFError) as exc:
        detail = getattr(exc, "strerror", None) or exc
        raise DataError(f"{path}: corrupt or unsupported .npy file ({detail})") from None
    if array is None:
        raise DataError(f"{path}: not a .npy file (no NUMPY magic number)")
    if not (array.dtype == np.uint8 or array.dtype.kind == "f" and array.dtype.itemsize <= 8):
        raise DataError(f"{path}: dtype {array.dtype} not supported (uint8 or float)")
    if array.ndim not in (2, 3, 4) or array.size == 0:
        raise DataError(f"{path}: expected a non-empty (N, D), (N, H, W) or (N, C, H, W) "
                        f"array, got shape {array.shape}")
    array = array[:max_images]
    flat = array.ndim == 2
    if flat and (channels not in (None, 1) or resize is not None):
        raise DataError(f"{path}: a flat (N, D) array has no channels or size to convert")
    given = 1 if array.ndim < 4 else array.shape[1]
    if channels not in (None, given) and (given, channels) not in ((1, 3), (3, 1)):
        raise DataError(f"{path}: cannot convert {given} channels to {channels}")
    check_pixels(path, array.shape[1:] if flat else array.shape[-2:], max_pixels)
    shape = array.shape if flat else (len(array), channels or given,
                                      *(resize or array.shape[-2:]))
    _check_output(path, shape, max_bytes)
    return ImageSource(path, tuple(shape), None, [],
                       lambda: _read_npy(path, array, channels, resize, shape))


def _read_npy(path: Path, array: np.ndarray, channels: int | None,
              resize: tuple[int, int] | None, shape: tuple[int, ...]) -> torch.Tensor:
    """The memory-mapped ``array`` as float32 ``shape``, converted in chunks."""
    flat = array.ndim == 2
    given = 1 if array.ndim < 4 else array.shape[1]
    images = torch.empty(shape, dtype=torch.float32)
    rows = max(1, _CHUNK // (4 * max(math.prod(array.shape[1:]), math.prod(shape[1:]))))
    for start in range(0, len(array), rows):
        with np.errstate(over="ignore"):     # a float64 beyond float32 becomes inf: refused
            block = torch.from_numpy(np.array(array[start:start + rows], dtype=np.float32))
        if array.dtype == np.uint8:
            block.div_(255.0)
        elif not torch.isfinite(block).all():
            raise DataError(f"{path}: contains NaN or infinite values (as float32) in rows "
                            f"{start}..{start + len(block) - 1}")
        if not flat:
            block = _convert(block.view(len(block), given, *array.shape[-2:]), channels, resize)
        images[start:start + len(block)] = block
    return images


def _convert(block: torch.Tensor, channels: int | None, resize: tuple[int, int] | None
             ) -> torch.Tensor:
    """``block`` (n, C, H, W) with ``channels`` (1 -> 3 repeats, 3 -> 1 weighs by luma),
    resized (antialiased bilinear) to ``resize``."""
    if channels == 3 and block.shape[1] == 1:
        block = block.expand(-1, 3, -1, -1)
    elif channels == 1 and block.shape[1] == 3:
        block = torch.einsum("nchw,c->nhw", block, torch.tensor(_LUMA))[:, None]
    if resize is not None and tuple(block.shape[-2:]) != resize:
        block = F.interpolate(block, size=resize, mode="bilinear", antialias=True,
                              align_corners=False)
    return block


# --- Per-channel normalization ------------------------------------------------------------

def parse_normalize(text: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse a ``--normalize`` value into float32 ``(mean (C,), std (C,))``.

    ``"MEAN,STD"`` applies to every channel; ``"M1,...,MC,S1,...,SC"`` gives each of the
    ``channels`` its own (e.g. ``0.485,0.456,0.406,0.229,0.224,0.225`` for ImageNet RGB).
    """
    channels = check_int("channels", channels)
    source = f"normalize {text!r}"
    try:
        numbers = [float(part) for part in text.split(",")]
    except ValueError:
        raise DataError(f"{source}: not a comma-separated list of numbers") from None
    if len(numbers) == 2:
        return _mean_std([numbers[0]] * channels, [numbers[1]] * channels, source)
    if len(numbers) == 2 * channels:
        return _mean_std(numbers[:channels], numbers[channels:], source)
    expected = ("MEAN,STD" if channels == 1 else
                f"MEAN,STD or {channels} means then {channels} stds ({2 * channels} numbers)")
    raise DataError(f"{source}: expected {expected} for {channels} channel(s), got "
                    f"{len(numbers)} numbers")


def _mean_std(mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor,
              source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as float32 vectors of one length, finite, stds > 0."""
    mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
    std = torch.as_tensor(std, dtype=torch.float32).flatten()
    if mean.numel() == 0 or mean.shape != std.shape:
        raise DataError(f"{source}: {mean.numel()} means for {std.numel()} stds")
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise DataError(f"{source}: means must be finite and stds finite and > 0")
    return mean, std


class Normalization:
    """Per-channel ``(x - mean) / std``, the standardisation many models expect of their
    inputs, and its inverse, to show normalized inputs as pictures.

    Applies to ``(N, C, H, W)`` with C = ``len(mean)``, or to flat ``(N, D)`` for one channel.
    """

    def __init__(self, mean: Sequence[float] | torch.Tensor,
                 std: Sequence[float] | torch.Tensor) -> None:
        self.mean, self.std = _mean_std(mean, std, "normalization")

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std``, per channel."""
        mean, std = self._shaped(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """``x * std + mean``, per channel: the inverse of :meth:`normalize`."""
        mean, std = self._shaped(x)
        return x * std + mean

    def _shaped(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std shaped, typed and placed to broadcast against ``x``."""
        count = self.mean.numel()
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and (
                x.dim() == 4 and x.shape[1] == count or x.dim() == 2 and count == 1)):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"normalization for {count} channel(s) needs floating inputs "
                            f"(N, {count}, H, W){' or (N, D)' if count == 1 else ''}, got "
                            f"{shape}")
        view = (1, count, 1, 1) if x.dim() == 4 else (1, 1)
        return self.mean.to(x).view(view), self.std.to(x).view(view)
