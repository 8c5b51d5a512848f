"""Reading a safetensors file that may be truncated, corrupt or hostile: every failure is one
line naming the file, and a header's claimed size is checked before it is parsed."""

from __future__ import annotations

import os
import reprlib
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar

import torch
from safetensors import SafetensorError, safe_open

from . import safejson
from ..errors import CheckpointError, first_line

__all__ = ["read_safetensors", "featvis_metadata", "read_tensors"]

T = TypeVar("T")
MAX_META_CHARS = 16 * 2**20   # the featvis metadata of a real file is a few kB
MAX_TENSORS_HEADER = 2**20    # a header naming a few hundred tensors


def read_safetensors(path: Path, read: Callable[[safe_open], T], what: str,
                     max_header: int | None = None) -> T:
    """``read(f)`` of the safetensors file at ``path`` (a ``what``: "checkpoint", "shard"
    ...), any failure to read it a one-line :class:`CheckpointError`. With ``max_header``
    the header may claim at most that many bytes, and no more than the file holds."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what} file")
    try:
        if max_header is not None:
            with open(path, "rb") as f:
                head, size = f.read(8), os.fstat(f.fileno()).st_size
            if len(head) < 8:
                raise CheckpointError(f"{path}: not a {what} file (truncated: {size} bytes)")
            claimed = int.from_bytes(head, "little")
            if claimed > max_header:
                raise CheckpointError(f"{path}: header of {claimed} bytes claimed, above the "
                                      f"{max_header} a {what} file ever needs")
            if 8 + claimed > size:
                raise CheckpointError(f"{path}: truncated {what} file (header of {claimed} "
                                      f"bytes, file of {size})")
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return read(f)
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or "
                              f"corrupt: {first_line(exc)})") from None


def featvis_metadata(path: Path, header: Mapping[str, str], what: str,
                     formats: Sequence[str]) -> dict:
    """The featvis metadata (bounded JSON) of a safetensors header, which must be of one of
    ``formats``; a one-line :class:`CheckpointError` naming the ``what`` otherwise."""
    text = header.get("featvis")
    if text is None:
        raise CheckpointError(f"{path}: safetensors file without featvis metadata (not a "
                              f"featvis {what} file)")
    if len(text) > MAX_META_CHARS:
        raise CheckpointError(f"{path}: featvis metadata of {len(text)} characters, above the "
                              f"{MAX_META_CHARS} a {what} file ever needs")
    try:
        meta = safejson.loads(text, f"{path}: featvis metadata")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(meta, dict) or meta.get("format") not in formats:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{path}: unsupported {what} format {reprlib.repr(found)} "
                              f"(featvis reads {', '.join(formats)})")
    return meta


def read_tensors(path: str | os.PathLike, what: str, max_bytes: int) -> dict[str, torch.Tensor]:
    """Every tensor of a plain safetensors file (any writer: ``safetensors.torch.save_file``)
    by name, as float32: a file above ``max_bytes`` (a tensor of a type other than float)
    is a one-line :class:`CheckpointError` before its data is read."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > max_bytes:
        raise CheckpointError(f"{path}: {path.stat().st_size} bytes, above the {max_bytes} a "
                              f"{what} file may hold")

    def read(f: safe_open) -> dict:
        found = {}
        for name in f.keys():
            dtype = f.get_slice(name).get_dtype()
            if dtype not in ("F16", "BF16", "F32", "F64"):
                raise CheckpointError(f"{path}: tensor {name!r} is {dtype}; a {what} file "
                                      "holds floating tensors")
            found[name] = f.get_tensor(name).float()
        if not found:
            raise CheckpointError(f"{path}: no tensors in this {what} file")
        return found
    return read_safetensors(path, read, what, MAX_TENSORS_HEADER)
