"""The inputs of any model: a folder of PNG/JPEG images or a ``.npy`` array, with
pixel and memory budgets checked from the headers before anything is decoded."""

from __future__ import annotations

import math
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError, is_int
from ..params import check_int
from .idx import MAX_IDX_BYTES


MAX_PIXELS = 50_000_000     # default limit on one image's pixels (H x W), read from its header
NPY_CHUNK = 2**24           # bytes of a .npy array converted to float32 at a time

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
    decode_into: Callable[[], torch.Tensor] = field(repr=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def load(self) -> torch.Tensor:
        """The inputs, decoded into one tensor of :attr:`shape`."""
        return self.decode_into()


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
    max_bytes = check_int("max_bytes", max_bytes)
    data = open_dataset(path, channels=channels, resize=resize, max_images=max_images,
                        max_pixels=max_pixels)
    shape = (len(data), *data.input_shape)
    _check_output(Path(path), shape, max_bytes)
    return ImageSource(Path(path), shape, data.labels, data.classes,
                       lambda: _decode_all(data, shape))


def open_dataset(path: str | os.PathLike, *, channels: int | None = None,
                 resize: tuple[int, int] | None = None, max_images: int | None = None,
                 max_pixels: int = MAX_PIXELS) -> ImageFolder | NpyImages:
    """The inputs of ``path`` as a dataset read on demand: an :class:`ImageFolder` for a
    folder, :class:`NpyImages` for a ``.npy`` file (options as :func:`load_images`)."""
    path = Path(path)
    if stat.S_ISDIR(file_mode(path)):
        return ImageFolder(path, channels, resize, max_pixels=max_pixels, max_images=max_images)
    if path.suffix.lower() == ".npy":
        return NpyImages(path, channels, resize, max_pixels=max_pixels, max_images=max_images)
    raise DataError(f"{path}: expected a folder of PNG/JPEG images or a .npy file")


def _decode_all(data: ImageFolder | NpyImages, shape: tuple[int, ...]) -> torch.Tensor:
    """Every input of ``data`` in one float32 tensor of ``shape`` (an array in chunks)."""
    images = torch.empty(shape, dtype=torch.float32)
    if isinstance(data, ImageFolder):
        buffer = images.numpy()
        for index in range(len(data)):
            data.decode(index, buffer[index])
        return images
    rows = max(1, NPY_CHUNK // (4 * max(math.prod(data.array.shape[1:]), math.prod(shape[1:]))))
    for start in range(0, len(data), rows):
        images[start:start + rows] = data.rows(start, start + rows)
    return images


def _check_options(channels: object, resize: object, max_pixels: object, max_images: object
                   ) -> tuple[int | None, tuple[int, int] | None, int, int | None]:
    """The reading options, checked (one-line errors naming the option)."""
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
    return channels, resize, max_pixels, max_images


def check_pixels(where: object, size: Sequence[int], max_pixels: int) -> None:
    """Refuse an image of ``size`` (H, W) above ``max_pixels``, naming the option that
    raises the budget."""
    count = math.prod(size)
    if count > max_pixels:
        raise DataError(f"{where}: {'x'.join(map(str, size))} = {count} pixels, above the "
                        f"limit max_pixels={max_pixels} per image (--max-pixels raises it)")


def file_mode(path: Path) -> int:
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
        mode = file_mode(folder / name)
        if stat.S_ISDIR(mode):
            folders.append(folder / name)
        elif stat.S_ISREG(mode) and name.lower().endswith(IMAGE_SUFFIXES):
            files.append(folder / name)
    return files, folders


def list_images(root: Path) -> tuple[list[Path], list[int] | None, list[str]]:
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


def read_header(file: Path) -> tuple[tuple[int, int], bool]:
    """``(height, width)`` of ``file`` and whether it is greyscale, from its header."""
    try:
        with Image.open(file, formats=_IMAGE_FORMATS) as image:
            return (image.height, image.width), image.getbands()[0] in _GREY_BANDS
    except (OSError, SyntaxError, ValueError, *_BOMB) as exc:
        raise _image_error(file, exc) from None


def decode_into(file: Path, channels: int, size: tuple[int, int], out: np.ndarray) -> None:
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


class ImageFolder(Dataset):
    """The PNG/JPEG images of a folder (directly in it, or in one level of class
    subfolders), decoded one by one when read: item ``i`` is ``(image float32 (C, H, W) in
    [0, 1], label)``, the label the index of its sorted class folder in :attr:`classes`
    (``-1`` without class folders). Every header is read and checked when it is made, as
    :func:`load_images` checks them (``max_pixels`` per image, one size unless ``resize``,
    ``channels`` 1 if every image is greyscale, else 3, unless given), so that nothing
    is refused after the work began.

    Example:
        >>> data = ImageFolder("val/", channels=3, resize=(64, 64))  # doctest: +SKIP
        >>> image, label = data[0]                                   # (3, 64, 64), class
    """

    def __init__(self, root: str | os.PathLike, channels: int | None = None,
                 resize: tuple[int, int] | None = None, *, max_pixels: int = MAX_PIXELS,
                 max_images: int | None = None) -> None:
        self.root = Path(root)
        channels, resize, max_pixels, max_images = _check_options(channels, resize,
                                                                  max_pixels, max_images)
        if not stat.S_ISDIR(file_mode(self.root)):
            raise DataError(f"{self.root}: not a folder of PNG/JPEG images")
        paths, labels, self.classes = list_images(self.root)
        self.paths = paths[:max_images]
        self.labels = None if labels is None else \
            torch.tensor(labels[:max_images], dtype=torch.int64)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            headers = []
            for file in self.paths:
                headers.append(read_header(file))
                check_pixels(file, headers[-1][0], max_pixels)
        self.size = resize or headers[0][0]
        if resize is None:
            for file, (other, _) in zip(self.paths, headers):
                if other != self.size:
                    raise DataError(f"{file}: {other[0]}x{other[1]} pixels (HxW), but "
                                    f"{self.paths[0].relative_to(self.root)} is "
                                    f"{self.size[0]}x{self.size[1]}; resize them all with "
                                    "--resize H,W (resize=(H, W))")
        self.channels = channels or (1 if all(grey for _, grey in headers) else 3)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One image's shape ``(C, H, W)``."""
        return (self.channels, *self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.empty(self.input_shape, dtype=torch.float32)
        self.decode(index, image.numpy())
        return image, -1 if self.labels is None else int(self.labels[index])

    def decode(self, index: int, out: np.ndarray) -> None:
        """Decode image ``index`` into ``out`` (float32 :attr:`input_shape`)."""
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            decode_into(self.paths[index], self.channels, self.size, out)


def _check_output(path: Path, shape: tuple[int, ...], max_bytes: int) -> None:
    """Refuse a float32 output of ``shape`` above ``max_bytes``, before allocating it."""
    size = math.prod(shape) * 4
    if size > max_bytes:
        raise DataError(f"{path}: {shape} float32 = {size} bytes, above the limit "
                        f"max_bytes={max_bytes} ({max_bytes / 2**30:.3g} GiB) of inputs held "
                        "in memory (--max-bytes raises it); read fewer images (max_images) "
                        "or smaller ones (--resize)")


class NpyImages(Dataset):
    """The inputs of a ``.npy`` array, memory-mapped (never unpickled) and converted to
    float32 as they are read: uint8 divided by 255, floats kept (finite, or refused when
    read); ``(N, D)`` rows as they are, ``(N, H, W)`` as one channel, ``(N, C, H, W)``;
    ``channels`` and ``resize`` as :func:`load_images`. Item ``i`` is ``(input, -1)``;
    :meth:`rows` reads a contiguous block at once (what batches use).

    Example:
        >>> data = NpyImages("images.npy", resize=(64, 64))      # doctest: +SKIP
    """

    labels = None
    classes: list[str] = []

    def __init__(self, path: str | os.PathLike, channels: int | None = None,
                 resize: tuple[int, int] | None = None, *, max_pixels: int = MAX_PIXELS,
                 max_images: int | None = None) -> None:
        self.path = path = Path(path)
        channels, resize, max_pixels, max_images = _check_options(channels, resize,
                                                                  max_pixels, max_images)
        try:
            with open(path, "rb") as file:
                magic = file.read(6)
            # Never unpickles: an object array fails here, as does a pickle without the magic.
            array = np.load(path, allow_pickle=False, mmap_mode="r") \
                if magic == _NPY_MAGIC else None
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
        self.array = array = array[:max_images]
        # Rows are read from the file, not through the map: pages of a map stay in the
        # process's memory once touched, so a pass over a large array would hold it all.
        self._row_bytes = math.prod(array.shape[1:]) * array.dtype.itemsize
        self._offset = array.offset if array.flags.c_contiguous else None
        flat = array.ndim == 2
        if flat and (channels not in (None, 1) or resize is not None):
            raise DataError(f"{path}: a flat (N, D) array has no channels or size to convert")
        self.given = 1 if array.ndim < 4 else array.shape[1]
        if channels not in (None, self.given) and \
                (self.given, channels) not in ((1, 3), (3, 1)):
            raise DataError(f"{path}: cannot convert {self.given} channels to {channels}")
        check_pixels(path, array.shape[1:] if flat else array.shape[-2:], max_pixels)
        self.channels, self.resize = channels, resize
        self.input_shape = tuple(array.shape[1:]) if flat else \
            (channels or self.given, *(resize or array.shape[-2:]))

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = range(len(self))[index]            # negative indices, IndexError past the end
        return self.rows(index, index + 1)[0], -1

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Items ``indices`` read at once (what a ``DataLoader`` asks for a batch)."""
        order = np.asarray(indices, dtype=np.int64)
        if len(order) and (order[1:] == order[:-1] + 1).all():      # a contiguous run
            block = self.rows(int(order[0]), int(order[-1]) + 1)
        else:
            block = self._converted(np.stack([self._read(i, i + 1)[0] for i in order]),
                                    f"rows {indices[:3]}...")
        return [(row, -1) for row in block]

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Inputs ``start .. stop - 1`` as float32 ``(n, *input_shape)``."""
        return self._converted(self._read(start, stop),
                               f"rows {start}..{min(stop, len(self)) - 1}")

    def _read(self, start: int, stop: int) -> np.ndarray:
        """The raw rows ``start .. stop - 1``, read from the file (C order) or the map."""
        stop = min(stop, len(self))
        if self._offset is None or stop <= start:
            return np.array(self.array[start:stop])
        with open(self.path, "rb") as file:
            file.seek(self._offset + start * self._row_bytes)
            raw = file.read((stop - start) * self._row_bytes)
        if len(raw) != (stop - start) * self._row_bytes:
            raise DataError(f"{self.path}: the file ends before row {stop - 1} (truncated?)")
        return np.frombuffer(raw, self.array.dtype).reshape(stop - start, *self.array.shape[1:])

    def _converted(self, block: np.ndarray, where: str) -> torch.Tensor:
        with np.errstate(over="ignore"):     # a float64 beyond float32 becomes inf: refused
            block = torch.from_numpy(block.astype(np.float32))
        if self.array.dtype == np.uint8:
            block.div_(255.0)
        elif not torch.isfinite(block).all():
            raise DataError(f"{self.path}: contains NaN or infinite values (as float32) in "
                            f"{where}")
        if self.array.ndim == 2:
            return block
        return _convert(block.view(len(block), self.given, *self.array.shape[-2:]),
                        self.channels, self.resize)


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
