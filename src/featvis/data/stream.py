"""Inputs of any size: a tensor held in memory or a map-style ``Dataset`` read on demand,
seen through the same few operations, so that mining streams a dataset batch by batch (the
fixed global batches that shards and ranks agree on, each rank decoding only its own) and
the pictures afterwards re-read only the examples they show, by index.

A dataset's item is an input or a tuple whose first element is the input (``(image,
label)``, as :class:`~featvis.data.ImageFolder` gives). What needs a look at the data
besides mining (the norm rho, ``bounds="data"``, the sanity re-runs) looks at its
:func:`head`: the first :data:`SAMPLE` (2,000) inputs in index order, or as many as fit in
:data:`SAMPLE_BYTES` (256 MB) as float32 where fewer do (445 of 224 x 224 RGB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Union

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError, FeatvisError, is_int
from ..io import fingerprint as io_fingerprint

__all__ = ["Data", "Loading", "SAMPLE", "is_dataset", "count", "input_shape", "take", "head",
           "mapped", "data_fingerprint", "share_begins", "batches"]

Data = Union[torch.Tensor, Dataset]
SAMPLE = 2000            # the inputs of a dataset that stand for it besides mining ...
SAMPLE_BYTES = 2**28     # ... or fewer, where 2,000 would take more float32 bytes than this


@dataclass(frozen=True)
class Loading:
    """How a dataset is read while mining: ``workers`` decoding processes of a
    ``DataLoader`` (0: in this process), ``batch_size`` inputs per loader batch (default:
    the mining batch; never changes the results), ``pin_memory`` for copies to CUDA
    (default: when the device is CUDA)."""

    workers: int = 2
    batch_size: int | None = None
    pin_memory: bool | None = None

    def __post_init__(self) -> None:
        if not (is_int(self.workers) and self.workers >= 0):
            raise ValueError(f"workers must be an integer >= 0, got {self.workers!r}")
        if self.batch_size is not None and not (is_int(self.batch_size) and self.batch_size >= 1):
            raise ValueError(f"loader batch_size must be a positive integer, got "
                             f"{self.batch_size!r}")


def is_dataset(data: object) -> bool:
    """Whether ``data`` is a map-style dataset (read by index), not a tensor."""
    return isinstance(data, Dataset) and not isinstance(data, torch.Tensor)


def count(data: Data) -> int:
    """The number of inputs."""
    return data.shape[0] if isinstance(data, torch.Tensor) else len(data)


def _input(item: object, index: int) -> torch.Tensor:
    """The input of a dataset's item (the first element of a tuple)."""
    x = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(x, torch.Tensor):
        raise DataError(f"item {index} of the dataset is a {type(x).__name__}, not a tensor "
                        "(an input, or a tuple (input, label))")
    return x


def input_shape(data: Data) -> tuple[int, ...]:
    """One input's shape (a dataset's ``input_shape``, or that of its first item)."""
    if isinstance(data, torch.Tensor):
        return tuple(data.shape[1:])
    shape = getattr(data, "input_shape", None)
    if shape is not None:
        return tuple(shape)
    if len(data) == 0:
        raise DataError("the dataset is empty")
    return tuple(_input(data[0], 0).shape)


def _read(data: Dataset, indices: list[int]) -> torch.Tensor:
    """The inputs of a dataset's items ``indices`` stacked (a batched ``__getitems__``
    where the dataset has one), an item that is no input refused by its index."""
    items = data.__getitems__(indices) if hasattr(data, "__getitems__") else \
        [data[i] for i in indices]
    return torch.stack([_input(item, i) for item, i in zip(items, indices)])


def take(data: Data, indices: torch.Tensor) -> torch.Tensor:
    """The inputs ``indices`` (any shape) as one tensor ``(*indices.shape, *input_shape)``:
    a tensor's rows, or a dataset's items, each distinct one read once (only those)."""
    if isinstance(data, torch.Tensor):
        return data[indices.to(data.device)]
    distinct, where = indices.flatten().unique(return_inverse=True)
    wanted = distinct.tolist()
    out = torch.empty(len(wanted), *input_shape(data))
    for start in range(0, len(wanted), _TAKEN):      # items in flight: a few hundred at most
        out[start:start + _TAKEN] = _read(data, wanted[start:start + _TAKEN])
    return out[where].view(*indices.shape, *out.shape[1:])


def head(data: Data, n: int | None = None) -> torch.Tensor:
    """The first ``n`` (default :data:`SAMPLE`) inputs in index order (all of them if
    fewer): a tensor's own rows; a dataset's read, at most :data:`SAMPLE_BYTES` of them."""
    n = SAMPLE if n is None else n
    if isinstance(data, torch.Tensor):
        return data[:n]
    fit = max(1, SAMPLE_BYTES // (4 * math.prod(input_shape(data))))
    return take(data, torch.arange(min(n, fit, len(data))))


_TAKEN = 256            # items of a dataset read at once by take()


class _Mapped(Dataset):
    """A dataset whose inputs pass through ``fn`` (a batch function) as they are read."""

    def __init__(self, data: Dataset, fn: Callable[[torch.Tensor], torch.Tensor],
                 shape: tuple[int, ...]) -> None:
        self.data, self.fn, self.input_shape = data, fn, shape

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        return list(self.fn(_read(self.data, indices)))       # one batch through fn


def mapped(data: Data, fn: Callable[[torch.Tensor], torch.Tensor],
           shape: tuple[int, ...] | None = None) -> Data:
    """``data`` as ``fn`` (a function of a batch of inputs: a normalization, a reshape to
    one input's ``shape``, default the same) turns it: a tensor at once, a dataset item by
    item as it is read."""
    if isinstance(data, torch.Tensor):
        return fn(data)
    return _Mapped(data, fn, input_shape(data) if shape is None else tuple(shape))


def data_fingerprint(data: Data, sample: torch.Tensor | None = None) -> str:
    """The fingerprint that ranks and shards compare to know they hold the same data: a
    tensor's whole (:func:`featvis.io.fingerprint.data_fingerprint`), a dataset's count and
    :func:`head` (``sample``, where it is read already)."""
    if isinstance(data, torch.Tensor):
        return io_fingerprint.data_fingerprint(data)
    return io_fingerprint.fingerprint({"count": torch.tensor(len(data)),
                                       "head": head(data) if sample is None else sample})


class _Pieces(torch.utils.data.Sampler):
    """The loader batches of the mining batches ``b`` with ``b % n == i`` (share ``(i,
    n)``) from input ``begin`` on: each mining batch cut into loader batches of at most
    ``size``, in index order."""

    def __init__(self, total: int, batch_size: int, share: tuple[int, int], size: int,
                 begin: int) -> None:
        self.total, self.batch_size, self.share, self.size = total, batch_size, share, size
        self.begin = begin

    def __iter__(self) -> Iterator[list[int]]:
        n = self.share[1]
        for start in range(self.begin, self.total, n * self.batch_size):
            stop = min(start + self.batch_size, self.total)
            for piece in range(start, stop, self.size):
                yield list(range(piece, min(piece + self.size, stop)))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Batched(Dataset):
    """What the loader reads: a dataset whose ``__getitems__`` gives a batch's inputs as one
    tensor (see :func:`_read`), ``[batch]``."""

    def __init__(self, data: Dataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        return [_read(self.data, indices)]


def _collate(batch: list[torch.Tensor]) -> torch.Tensor:
    return batch[0]


def share_begins(batch_size: int, share: tuple[int, int], begin: int = 0) -> bool:
    """Whether input ``begin`` starts one of the share ``(i, n)``'s mining batches."""
    index, n = share
    return begin % batch_size == 0 and (begin // batch_size) % n == index


def batches(data: Data, batch_size: int, *, share: tuple[int, int] = (0, 1),
            loading: Loading | None = None, device: torch.device | str = "cpu",
            begin: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """The mining batches ``(start, inputs)`` of the share ``(i, n)``: batch ``b`` holds
    inputs ``b * batch_size ..`` and belongs to the share when ``b % n == i``; from the
    share's batch that starts at input ``begin`` on (default: its first; a resumed pass).
    A tensor's are views; a dataset's are read through a ``DataLoader`` (``loading``)
    that decodes only those inputs, its loader batches joined into the mining batches."""
    index, n = share
    begin = index * batch_size if begin is None else begin
    if not share_begins(batch_size, share, begin):
        raise ValueError(f"begin={begin} does not start a batch of share {index}/{n}")
    if isinstance(data, torch.Tensor):
        for start in range(begin, data.shape[0], n * batch_size):
            yield start, data[start:start + batch_size]
        return
    loading = loading or Loading()
    pin = loading.pin_memory if loading.pin_memory is not None else \
        torch.device(device).type == "cuda"
    total = len(data)
    size = min(loading.batch_size or batch_size, batch_size)
    loader = DataLoader(_Batched(data),
                        batch_sampler=_Pieces(total, batch_size, share, size, begin),
                        num_workers=loading.workers, collate_fn=_collate, pin_memory=pin,
                        persistent_workers=False)
    pending, start = [], begin
    pieces = iter(loader)
    while True:
        try:
            piece = next(pieces, None)
        except FeatvisError as exc:     # from a worker, its message wrapped in a traceback
            raise type(exc)(_worker_message(exc)) from None
        if piece is None:
            return
        pending.append(piece)
        held = sum(len(p) for p in pending)
        if held == min(batch_size, total - start):
            yield start, pending[0] if len(pending) == 1 else torch.cat(pending)
            pending, start = [], start + n * batch_size


def _worker_message(exc: Exception) -> str:
    """The error's own line, from the text a ``DataLoader`` worker's error is re-raised
    with (torch's "Caught ... in DataLoader worker process" and the worker's traceback)."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last
