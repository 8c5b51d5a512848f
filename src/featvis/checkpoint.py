"""DBN checkpoints: one safetensors file whose header carries the JSON metadata.

The tensors are the model's ``state_dict`` and, while training is incomplete, the state at
the start of each trained layer's last epoch (``last_epoch.{d}.{name}``, what an exact
resume replays); the metadata (format, architecture, training recipe, per-epoch history,
training data description) is a JSON document stored under the ``featvis`` key of the
safetensors header. Files are written atomically and read without unpickling anything.
Format ``featvis.dbn/2`` is written; ``featvis.dbn/1`` files still load.

The code lives in :mod:`featvis.models._checkpoint`, below the DBN, so that ``DBN.save`` and
``DBN.load`` call it without an import circle; this module, above the DBN, is its public face.
"""

from __future__ import annotations

import os

import torch

from .models._checkpoint import FORMAT, MAX_SIZES, encode_dbn, save_dbn
from .models.dbn import DBN

__all__ = ["encode_dbn", "save_dbn", "load_dbn", "FORMAT", "MAX_SIZES"]


def load_dbn(path: str | os.PathLike, device: str | torch.device = "cpu") -> DBN:
    """Read a checkpoint written by :func:`save_dbn`; :class:`CheckpointError` if it is not
    one (see :meth:`DBN.load`)."""
    return DBN.load(path, device)
