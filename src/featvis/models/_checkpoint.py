"""The checkpoint file format (described in :mod:`featvis.checkpoint`, its public face).

It lives below :class:`~featvis.models.DBN` so that ``DBN.save`` and ``DBN.load`` can use it
without an import circle: it never imports the DBN, :func:`read_dbn` is handed the class to
build.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import reprlib
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from .. import safejson
from .._version import __version__
from ..errors import CheckpointError
from ..fileio import atomic_write_bytes
from ..train import TrainingRecipe, check_snapshot

__all__ = ["encode_dbn", "save_dbn", "read_dbn", "FORMAT", "MAX_SIZES"]

FORMAT = "featvis.dbn/2"
FORMAT_1 = "featvis.dbn/1"   # still read: recipes then said k for cd_steps, and could be partial
LAST_EPOCH = "last_epoch"
MAX_SIZES = 64   # layer sizes a checkpoint may list (input + 63 hidden layers)
MAX_META_CHARS = 16 * 2**20   # the metadata of a real checkpoint is a few kB

Model = TypeVar("Model", bound=nn.Module)


def encode_dbn(dbn: nn.Module) -> bytes:
    """The bytes of ``dbn``'s checkpoint file."""
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
    return safetensors_bytes(tensors, metadata={"featvis": json.dumps(meta, allow_nan=False)})


def save_dbn(dbn: nn.Module, path: str | os.PathLike) -> None:
    """Write ``dbn`` to ``path`` (temporary file, fsync, rename)."""
    atomic_write_bytes(path, encode_dbn(dbn))


def read_dbn(cls: type[Model], path: str | os.PathLike,
             device: str | torch.device = "cpu") -> Model:
    """A new ``cls`` (the DBN class) from a checkpoint written by :func:`save_dbn`;
    :class:`CheckpointError` if the file is not one.

    The metadata is checked against the tensor shapes in the safetensors header before any
    tensor is read or any layer allocated, so a small file cannot claim a huge model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = _read_meta(path, f.metadata() or {})
            _check_layout(path, meta, f)
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file "
                              f"(truncated or corrupt: {exc})") from None
    norm = tensors["_input_norm"].item()   # NaN means unknown: the model is untrained
    if not (math.isnan(norm) or 0 < norm < math.inf):
        raise CheckpointError(f"{path}: _input_norm is {norm}, not a positive norm "
                              "(or NaN for unknown)")
    for name, t in tensors.items():
        if name != "_input_norm" and t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: {name} contains NaN or infinite values")
    try:
        dbn = cls(meta["sizes"], seed=None)
        for name in [name for name in tensors if name.startswith(LAST_EPOCH + ".")]:
            _, d, field = name.split(".", 2)
            if not 1 <= int(d) < dbn.n_layers:
                raise ValueError(f"tensor {name} names no hidden layer below the top")
            dbn.last_epoch_starts.setdefault(int(d), {})[field] = tensors.pop(name)
        dbn.load_state_dict(tensors, strict=True)
        for rbm, history in zip(dbn.rbms, meta["history"], strict=True):
            rbm.history = [dict(entry) for entry in history]
        dbn.recipe = _read_recipe(meta)
        for d, start in dbn.last_epoch_starts.items():
            if dbn.recipe is None:
                raise ValueError("a record of the last epoch without a training recipe")
            check_snapshot(dbn.rbms[d - 1], start, dbn.recipe, f"{LAST_EPOCH}.{d}.")
        dbn.data_info = dict(meta.get("data") or {})
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: inconsistent checkpoint ({first_line})") from None
    return dbn.to(device)


def _read_recipe(meta: dict) -> TrainingRecipe | None:
    """The training recipe of ``meta`` (``None``: never trained).

    Format 2 recipes name every field. Format 1 ones say ``k`` for ``cd_steps``, and those
    saved before ``reshuffle`` and ``next_layer_data`` existed were trained with a new batch
    order every epoch and handed the final up-pass to the next layer.
    """
    recipe = meta["recipe"]
    if recipe is None:
        return None
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe must be an object or null, got {reprlib.repr(recipe)}")
    if meta["format"] == FORMAT_1:
        recipe = {"reshuffle": True, "next_layer_data": "final", **recipe}
        if "k" in recipe:
            recipe["cd_steps"] = recipe.pop("k")
    else:
        missing = [f.name for f in dataclasses.fields(TrainingRecipe) if f.name not in recipe]
        if missing:
            raise ValueError(f"recipe lacks {', '.join(missing)}")
    return TrainingRecipe(**recipe)


def _read_meta(path: Path, header: dict[str, str]) -> dict:
    """The featvis metadata of a safetensors header, parsed with bounded nesting."""
    if "featvis" not in header:
        raise CheckpointError(f"{path}: safetensors file without featvis metadata "
                              "(not a featvis checkpoint)")
    if len(header["featvis"]) > MAX_META_CHARS:
        raise CheckpointError(f"{path}: featvis metadata of {len(header['featvis'])} characters, "
                              f"above the {MAX_META_CHARS} a checkpoint ever needs")
    try:
        meta = safejson.loads(header["featvis"], f"{path}: featvis metadata")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT_1, FORMAT):
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{path}: unsupported checkpoint format {reprlib.repr(found)}")
    return meta


def _check_layout(path: Path, meta: dict, f: safe_open) -> None:
    """:class:`CheckpointError` unless the header holds exactly the tensors that
    ``meta["sizes"]`` implies (names, shapes, floating dtypes), plus records of last epochs,
    and ``meta["history"]`` has one list per layer. Reads no tensor data."""
    def refuse(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: inconsistent checkpoint ({problem})")

    sizes = meta.get("sizes")
    if not (isinstance(sizes, list) and 2 <= len(sizes) <= MAX_SIZES
            and all(type(s) is int and s >= 1 for s in sizes)):
        raise refuse(f"sizes must be a list of 2 to {MAX_SIZES} positive integers, "
                     f"got {reprlib.repr(sizes)}")
    expected = {"_input_norm": ()}
    for d, (v, h) in enumerate(zip(sizes[:-1], sizes[1:])):
        expected.update({f"rbms.{d}.weight": (h, v), f"rbms.{d}.visible_bias": (v,),
                         f"rbms.{d}.hidden_bias": (h,)})
    names = f.keys()
    odd = next((n for n in names if n not in expected and not n.startswith(LAST_EPOCH + ".")),
               None)
    if odd is not None:
        raise refuse(f"unexpected tensor {reprlib.repr(odd)}")
    present = set(names)
    for name, shape in expected.items():
        if name not in present:
            raise refuse(f"sizes {reprlib.repr(sizes)} need {name}, which is missing")
        info = f.get_slice(name)
        if tuple(info.get_shape()) != shape or not info.get_dtype().startswith(("F", "BF")):
            raise refuse(f"sizes {reprlib.repr(sizes)} need {name} as a float tensor of shape "
                         f"{shape}, found {info.get_dtype()} {tuple(info.get_shape())}")
    history = meta.get("history")
    if not (isinstance(history, list) and len(history) == len(sizes) - 1
            and all(isinstance(h, list) for h in history)):
        raise refuse(f"history must hold one list per layer ({len(sizes) - 1}), "
                     f"got {reprlib.repr(history)}")
