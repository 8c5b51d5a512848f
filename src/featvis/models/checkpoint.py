"""Checkpoints: one safetensors file whose header carries the JSON metadata.

The metadata is a JSON document stored under the ``featvis`` key of the safetensors header;
files are written atomically and read without unpickling anything, the metadata with
bounded nesting and size, and checked against the tensor shapes of the header before any
tensor is read. Two formats:

- ``featvis.dbn/2`` (``featvis.dbn/1`` still loads), the DBN. The tensors are its
  ``state_dict`` and, while training is incomplete, the state at the start of each trained
  layer's last epoch (``last_epoch.{d}.{name}``, what an exact resume replays); the metadata
  holds the format, architecture, training recipe, per-epoch history and training data.
- ``featvis.model/1``, every other built-in kind: ``"cnn"``, the
  :class:`~featvis.models.ReferenceCNN`, ``"vit"``, the :class:`~featvis.models.ReferenceViT`,
  and ``"cdbn"``, the :class:`~featvis.models.ConvDBN`
  (whose ``recipe`` holds its per-layer ``history`` too, and whose ``data`` the whitening
  of natural patches). The tensors are its ``state_dict``; the metadata is ``{"format",
  "kind", "config", "data", "recipe", "test_accuracy", "featvis_version"}``, where
  ``config`` is all the kind needs to rebuild the model.

:func:`load` reads either; unknown formats and kinds are refused with one line.

The code lives in :mod:`featvis.models.codec`, below the models, so that ``DBN.save``
and ``DBN.load`` call it without an import circle; this module, above them, is its public
face.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import CheckpointError
from ..io.fileio import atomic_write_bytes
from . import codec
from .codec import FORMAT, MAX_SIZES, MODEL_FORMAT, encode_dbn, save_dbn
from .conv.cdbn import ConvDBN
from .cnn import ReferenceCNN
from .vit import ReferenceViT
from .dbn import DBN

__all__ = ["load", "encode_model", "save_model", "encode_dbn", "save_dbn", "load_dbn",
           "FORMAT", "MODEL_FORMAT", "KINDS", "MAX_SIZES", "kind_of"]

KINDS: dict[str, type[nn.Module]] = {cls.kind: cls for cls in (ReferenceCNN, ReferenceViT,
                                                                ConvDBN)}      # model/1


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The model in any featvis checkpoint: a :class:`DBN` (``featvis.dbn/1`` or ``/2``) or a
    built-in kind of ``featvis.model/1`` (in eval mode); :class:`CheckpointError` if the file
    is not one, or of a format or kind this featvis does not know."""
    fmt, kind = codec.read_format(path)
    if fmt != MODEL_FORMAT:
        return DBN.load(path, device)
    if kind not in KINDS:
        raise CheckpointError(f"{path}: unknown model kind {kind!r} (this featvis reads "
                              f"{', '.join(sorted(KINDS))}; a newer featvis may read it)")
    return codec.read_model(KINDS[kind], path, device)


def encode_model(model: nn.Module) -> bytes:
    """The bytes of ``model``'s checkpoint: a DBN's in ``featvis.dbn/2``, another built-in
    kind's in ``featvis.model/1``."""
    if isinstance(model, DBN):
        return encode_dbn(model)
    if not any(type(model) is cls for cls in KINDS.values()):
        raise TypeError(f"cannot save a {type(model).__name__}: featvis checkpoints hold its "
                        f"own models (DBN, {', '.join(c.__name__ for c in KINDS.values())}); "
                        "save a state_dict with safetensors instead")
    return codec.encode_model(model)


def save_model(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model``'s checkpoint (see :func:`encode_model`) to ``path`` atomically
    (temporary file, fsync, rename); :func:`load` reads it back."""
    atomic_write_bytes(path, encode_model(model))


def load_dbn(path: str | os.PathLike, device: str | torch.device = "cpu") -> DBN:
    """Read a checkpoint written by :func:`save_dbn`; :class:`CheckpointError` if it is not
    one (see :meth:`DBN.load`)."""
    return DBN.load(path, device)


def kind_of(model: nn.Module) -> str:
    """The kind a checkpoint of ``model`` records: ``"dbn"``, or a ``featvis.model/1`` kind."""
    return "dbn" if isinstance(model, DBN) else model.kind
