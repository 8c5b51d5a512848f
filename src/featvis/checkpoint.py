"""DBN checkpoints: one safetensors file whose header carries the JSON metadata.

The tensors are the model's ``state_dict`` and, while training is incomplete, the state at
the start of each trained layer's last epoch (``last_epoch.{d}.{name}``, what an exact
resume replays); the metadata (architecture, training recipe, per-epoch history, training
data description) is a JSON document stored under the ``featvis`` key of the safetensors
header. Files are written atomically and read without unpickling anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from . import __version__
from .errors import CheckpointError
from .fileio import atomic_write_bytes
from .models.dbn import DBN
from .train import TrainingRecipe, check_snapshot

__all__ = ["save_dbn", "load_dbn", "FORMAT"]

FORMAT = "featvis.dbn/1"
LAST_EPOCH = "last_epoch"


def save_dbn(dbn: DBN, path: str | os.PathLike) -> None:
    """Write ``dbn`` to ``path`` (temporary file, fsync, rename)."""
    meta = {
        "format": FORMAT,
        "featvis_version": __version__,
        "sizes": dbn.sizes,
        "recipe": None if dbn.recipe is None else dbn.recipe.to_dict(),
        "history": [rbm.history for rbm in dbn.rbms],
        "data": dbn.data_info,
    }
    tensors = dict(dbn.state_dict())
    for d, start in dbn.last_epoch_starts.items():
        tensors.update({f"{LAST_EPOCH}.{d}.{name}": t for name, t in start.items()})
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata={"featvis": json.dumps(meta)}))


def load_dbn(path: str | os.PathLike, device: str | torch.device = "cpu") -> DBN:
    """Read a checkpoint written by :func:`save_dbn`; :class:`CheckpointError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file "
                              f"(truncated or corrupt: {exc})") from None
    try:
        meta = json.loads(header["featvis"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: safetensors file without featvis metadata "
                              "(not a featvis checkpoint)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format "
                              f"{meta.get('format') if isinstance(meta, dict) else meta!r}")
    try:
        dbn = DBN(meta["sizes"], seed=None)
        for name in [name for name in tensors if name.startswith(LAST_EPOCH + ".")]:
            _, d, field = name.split(".", 2)
            if not 1 <= int(d) < dbn.n_layers:
                raise ValueError(f"tensor {name} names no hidden layer below the top")
            dbn.last_epoch_starts.setdefault(int(d), {})[field] = tensors.pop(name)
        dbn.load_state_dict(tensors, strict=True)
        for rbm, history in zip(dbn.rbms, meta["history"], strict=True):
            rbm.history = [dict(entry) for entry in history]
        if meta["recipe"] is not None:
            # Recipes saved before these two fields existed reshuffled every epoch and
            # handed the final up-pass to the next layer.
            dbn.recipe = TrainingRecipe(**{"reshuffle": True, "next_layer_data": "final",
                                           **meta["recipe"]})
        for d, start in dbn.last_epoch_starts.items():
            if dbn.recipe is None:
                raise ValueError("a record of the last epoch without a training recipe")
            check_snapshot(dbn.rbms[d - 1], start, dbn.recipe, f"{LAST_EPOCH}.{d}.")
        dbn.data_info = dict(meta.get("data") or {})
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: inconsistent checkpoint ({first_line})") from None
    return dbn.to(device)
