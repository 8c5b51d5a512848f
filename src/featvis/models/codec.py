"""The checkpoint file formats (described in :mod:`featvis.models.checkpoint`, their public face).

They live below the models so that ``DBN.save``, ``ReferenceCNN.load`` and the like can use
them without an import circle: this module imports no model, :func:`read_dbn` and
:func:`read_model` are handed the class to build.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import reprlib
from pathlib import Path
from typing import Callable, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from .._version import __version__
from ..devices import check_device
from ..errors import CheckpointError, first_line
from ..io.fileio import atomic_write_bytes
from ..io.safetensors_file import featvis_metadata, read_safetensors
from .training import VISIBLE_KINDS, TrainingRecipe, check_snapshot
from .metadata import check_data_info, check_history, check_test_accuracy, recipe_from
from ..data.whitening import KINDS as WHITENING_KINDS
from ..data.whitening import Whitening

__all__ = ["encode_dbn", "save_dbn", "read_dbn", "encode_model", "save_model", "read_model",
           "read_format", "FORMAT", "MODEL_FORMAT", "MAX_SIZES"]

FORMAT = "featvis.dbn/2"
FORMAT_1 = "featvis.dbn/1"   # still read: recipes then said k for cd_steps, and could be partial
DBN_FORMATS = (FORMAT_1, FORMAT)
MODEL_FORMAT = "featvis.model/1"   # every built-in kind but the DBN; "kind" says which
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")   # what a checkpoint's tensor may be stored as
LAST_EPOCH = "last_epoch"
WHITENING = "whitening."   # the prefix of a whitening's tensors
MAX_SIZES = 64   # layer sizes a checkpoint may list (input + 63 hidden layers)
# Recipe fields added within format 2 (Gaussian visible units): files without them were
# trained before they existed, i.e. with their defaults.
LATER_RECIPE_FIELDS = ("sigma", "sigma_decay", "sigma_floor", "layers")

Model = TypeVar("Model", bound=nn.Module)
T = TypeVar("T")


def encode_dbn(dbn: nn.Module) -> bytes:
    """The bytes of ``dbn``'s checkpoint file."""
    meta = {
        "format": FORMAT,
        "featvis_version": __version__,
        "sizes": dbn.sizes,
        # The input units and the sigma the model was built with (the current, possibly
        # annealed one is the tensor rbms.0._sigma); files without them are binary.
        "visible": dbn.visible,
        "sigma": dbn.rbms[0].initial_sigma,
        "recipe": None if dbn.recipe is None else dbn.recipe.to_dict(),
        "history": [rbm.history for rbm in dbn.rbms],
        "data": dbn.data_info,
        "whitening": None if dbn.whitening is None else dbn.whitening.config(),
    }
    tensors = dict(dbn.state_dict())
    if dbn.whitening is not None:
        tensors.update({WHITENING + name: t for name, t in dbn.whitening.to_tensors().items()})
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
    tensor is read or any layer allocated, so a small file cannot claim a huge model. Files
    without ``visible`` (written before Gaussian visible units) hold binary models.
    """
    path = Path(path)
    device = check_device(device)

    def read(f: safe_open) -> tuple[dict, nn.Module, dict[str, torch.Tensor]]:
        meta = _read_meta(path, f.metadata() or {})
        if meta["format"] not in DBN_FORMATS:
            raise CheckpointError(f"{path}: {_describe(meta)}, not a DBN (featvis.load reads "
                                  "any featvis checkpoint)")
        visible = meta.get("visible", "binary")
        if not isinstance(visible, str) or visible not in VISIBLE_KINDS:
            raise _refuse(path, "visible must be 'binary' or 'gaussian', got "
                                f"{reprlib.repr(visible)}")
        _check_layout(path, meta, f, visible)
        return meta, {name: f.get_tensor(name) for name in f.keys()}

    meta, tensors = _open(path, read)
    norm = tensors["_input_norm"].item()   # NaN means unknown: the model is untrained
    if not (math.isnan(norm) or 0 < norm < math.inf):
        raise CheckpointError(f"{path}: _input_norm is {norm}, not a positive norm "
                              "(or NaN for unknown)")
    for name, t in tensors.items():
        if name != "_input_norm" and t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: {name} contains NaN or infinite values")
        if name.endswith("._sigma") and not (t > 0).all():
            raise CheckpointError(f"{path}: {name} is not a positive standard deviation")
    try:
        dbn = cls(meta["sizes"], visible=meta.get("visible", "binary"),
                  sigma=meta.get("sigma", 1.0), seed=None)
        whitening = {name.removeprefix(WHITENING): tensors.pop(name)
                     for name in [n for n in tensors if n.startswith(WHITENING)]}
        for name in [name for name in tensors if name.startswith(LAST_EPOCH + ".")]:
            _, d, field = (name.split(".", 2) + ["", ""])[:3]
            if not (d.isdigit() and field and 1 <= int(d) < dbn.n_layers):
                raise ValueError(f"tensor {name} names no hidden layer below the top")
            dbn.last_epoch_starts.setdefault(int(d), {})[field] = tensors.pop(name)
        dbn.load_state_dict(tensors, strict=True)
        for rbm, history in zip(dbn.rbms, meta["history"], strict=True):   # checked
            rbm.history = [dict(entry) for entry in history]
        dbn.recipe = _read_recipe(meta)
        for d, start in dbn.last_epoch_starts.items():
            if dbn.recipe is None:
                raise ValueError("a record of the last epoch without a training recipe")
            check_snapshot(dbn.rbms[d - 1], start, dbn.recipe, f"{LAST_EPOCH}.{d}.")
        dbn.data_info = check_data_info(meta.get("data"))
        if meta.get("whitening") is not None:
            dbn.whitening = Whitening.from_parts(meta["whitening"], whitening)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: inconsistent checkpoint ({first_line(exc)})") from None
    return dbn.to(device)


def _read_recipe(meta: dict) -> TrainingRecipe | None:
    """The training recipe of ``meta`` (``None``: never trained).

    Format 2 recipes name every field but the ``sigma`` ones, added later (their defaults
    fill in). Format 1 ones say ``k`` for ``cd_steps``, and those saved before ``reshuffle``
    and ``next_layer_data`` existed were trained with a new batch order every epoch and
    handed the final up-pass to the next layer.
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
        missing = [f.name for f in dataclasses.fields(TrainingRecipe)
                   if f.name not in recipe and f.name not in LATER_RECIPE_FIELDS]
        if missing:
            raise ValueError(f"recipe lacks {', '.join(missing)}")
    return recipe_from(recipe)


def _read_meta(path: Path, header: dict[str, str]) -> dict:
    """The featvis metadata of a checkpoint's safetensors header, parsed with bounded
    nesting."""
    meta = featvis_metadata(path, header, "checkpoint", (*DBN_FORMATS, MODEL_FORMAT))
    if meta["format"] == MODEL_FORMAT and not isinstance(meta.get("kind"), str):
        raise CheckpointError(f"{path}: inconsistent checkpoint (kind must be a string, got "
                              f"{reprlib.repr(meta.get('kind'))})")
    return meta


def _describe(meta: dict) -> str:
    """What a checkpoint holds, for messages: "a DBN checkpoint (featvis.dbn/2)"."""
    what = "DBN" if meta["format"] in DBN_FORMATS else reprlib.repr(meta["kind"])
    return f"a {what} checkpoint ({meta['format']})"


def _open(path: Path, read: Callable[[safe_open], T]) -> T:
    """``read(f)`` of the checkpoint at ``path``, any failure a one-line CheckpointError."""
    return read_safetensors(path, read, "checkpoint")


def read_format(path: str | os.PathLike) -> tuple[str, str | None]:
    """The format of the featvis checkpoint at ``path`` and its kind (``None`` for a DBN),
    from the header alone; :class:`CheckpointError` if it is no featvis checkpoint."""
    path = Path(path)
    meta = _open(path, lambda f: _read_meta(path, f.metadata() or {}))
    return meta["format"], meta.get("kind") if meta["format"] == MODEL_FORMAT else None


def encode_model(model: nn.Module) -> bytes:
    """The bytes of a ``featvis.model/1`` checkpoint of ``model``, a built-in kind with
    ``kind``, ``config``, ``data_info``, ``recipe`` and ``test_accuracy`` attributes."""
    meta = {
        "format": MODEL_FORMAT,
        "kind": model.kind,
        "featvis_version": __version__,
        "config": model.config,
        "data": model.data_info,
        "recipe": model.recipe,
        "test_accuracy": model.test_accuracy,
    }
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    return safetensors_bytes(tensors, metadata={"featvis": json.dumps(meta, allow_nan=False)})


def save_model(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model``'s ``featvis.model/1`` checkpoint to ``path`` (temporary file, fsync,
    rename)."""
    atomic_write_bytes(path, encode_model(model))


def read_model(cls: type[Model], path: str | os.PathLike,
               device: str | torch.device = "cpu") -> Model:
    """A new ``cls`` (a built-in kind with ``kind`` and ``from_config``), in eval mode, from a
    checkpoint written by :func:`save_model`; :class:`CheckpointError` if the file is not one.

    The config is checked against the tensor names, shapes and dtypes of the safetensors
    header (the model is first built on the meta device, which allocates nothing) before any
    tensor is read; NaN and infinite weights are refused.
    """
    path = Path(path)
    device = check_device(device)

    def read(f: safe_open) -> tuple[dict, nn.Module, dict[str, torch.Tensor]]:
        meta = _read_meta(path, f.metadata() or {})
        if meta["format"] != MODEL_FORMAT or meta["kind"] != cls.kind:
            raise CheckpointError(f"{path}: {_describe(meta)}, not a {cls.kind!r} one "
                                  "(featvis.load reads any featvis checkpoint)")
        try:
            with torch.device("meta"):
                shell = cls.from_config(meta.get("config"), seed=None)
        except (TypeError, ValueError) as exc:
            raise _refuse(path, first_line(exc)) from None
        for key in ("data", "recipe", "test_accuracy"):
            if not isinstance(meta.get(key, {}), dict):
                raise _refuse(path, f"{key} must be an object, got {reprlib.repr(meta[key])}")
        expected = {name: tuple(t.shape) for name, t in shell.state_dict().items()}
        _check_tensors(path, f, expected, "the config needs")
        return meta, shell, {name: f.get_tensor(name).float() for name in expected}

    meta, model, tensors = _open(path, read)
    for name, t in tensors.items():              # after the cast: a float64 may overflow
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: {name} contains NaN or infinite values")
    model.load_state_dict(tensors, strict=True, assign=True)    # the shell takes them as is
    try:
        model.data_info = check_data_info(meta.get("data"))
        model.recipe = _layerwise_recipe(model, meta.get("recipe"))
        model.test_accuracy = check_test_accuracy(meta.get("test_accuracy"))
    except (TypeError, ValueError) as exc:
        raise _refuse(path, first_line(exc)) from None
    return model.eval().to(device)


def _layerwise_recipe(model: nn.Module, recipe: dict | None) -> dict:
    """A built-in kind's recipe; one with a ``history`` (a layer-wise model's) must hold a
    valid :class:`TrainingRecipe` and one list of epochs per layer."""
    recipe = dict(recipe or {})
    if "history" in recipe:
        recipe["history"] = check_history(recipe["history"], len(model.rbms))
        fields = {key: value for key, value in recipe.items() if key != "history"}
        if fields:
            recipe_from(fields)
    return recipe


def _refuse(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: inconsistent checkpoint ({problem})")


def _check_tensors(path: Path, f: safe_open, expected: dict[str, tuple[int, ...]],
                   needs: str, also: str | None = None) -> None:
    """:class:`CheckpointError` unless the header holds exactly the ``expected`` tensors
    (name -> shape, a float dtype), besides names starting with ``also``; ``needs`` says
    what asks for them ("the config needs"). Reads no tensor data."""
    odd = next((n for n in f.keys() if n not in expected
                and not (also and n.startswith(also))), None)
    if odd is not None:
        raise _refuse(path, f"unexpected tensor {reprlib.repr(odd)}")
    present = set(f.keys())
    for name, shape in expected.items():
        if name not in present:
            raise _refuse(path, f"{needs} {name}, which is missing")
        info = f.get_slice(name)
        if tuple(info.get_shape()) != shape or info.get_dtype() not in FLOAT_DTYPES:
            raise _refuse(path, f"{needs} {name} as a float tensor of shape {shape}, "
                                f"found {info.get_dtype()} {tuple(info.get_shape())}")


def _check_layout(path: Path, meta: dict, f: safe_open, visible: str = "binary") -> None:
    """:class:`CheckpointError` unless the header holds exactly the tensors that
    ``meta["sizes"]`` and the ``visible`` kind imply (names, shapes, floating dtypes), plus
    records of last epochs, and ``meta["history"]`` has one list per layer. Reads no tensor
    data."""
    sizes = meta.get("sizes")
    if not (isinstance(sizes, list) and 2 <= len(sizes) <= MAX_SIZES
            and all(type(s) is int and s >= 1 for s in sizes)):
        raise _refuse(path, f"sizes must be a list of 2 to {MAX_SIZES} positive integers, "
                            f"got {reprlib.repr(sizes)}")
    expected = {"_input_norm": ()}
    for d, (v, h) in enumerate(zip(sizes[:-1], sizes[1:])):
        expected.update({f"rbms.{d}.weight": (h, v), f"rbms.{d}.visible_bias": (v,),
                         f"rbms.{d}.hidden_bias": (h,)})
    if visible == "gaussian":
        expected["rbms.0._sigma"] = ()
    whitening = meta.get("whitening")
    if whitening is not None and not (isinstance(whitening, dict)
                                      and whitening.get("kind") in WHITENING_KINDS):
        raise _refuse(path, f"whitening must be null or an object with a kind of "
                            f"{', '.join(WHITENING_KINDS)}, got {reprlib.repr(whitening)}")
    if whitening is not None and whitening["kind"] == "zca":
        n = sizes[0]
        expected.update({f"{WHITENING}zca.mean": (n,), f"{WHITENING}zca.eigenvalues": (n,),
                         f"{WHITENING}zca.eigenvectors": (n, n)})
    kind = " with Gaussian visible units" if visible == "gaussian" else ""
    _check_tensors(path, f, expected, f"sizes {reprlib.repr(sizes)}{kind} need",
                   also=LAST_EPOCH + ".")
    try:
        check_history(meta.get("history"), len(sizes) - 1)
    except ValueError as exc:
        raise _refuse(path, str(exc)) from None
