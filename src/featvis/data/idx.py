"""IDX files (the MNIST format), read with bounded memory whatever a header claims."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, NoReturn

import numpy as np

from ..errors import DataError
from ..params import check_int


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

READ_CHUNK = 2**24              # bytes per read while streaming a payload

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
        count = stream.readinto(view[filled:filled + READ_CHUNK])
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
