"""Checks of the JSON metadata a checkpoint carries besides its tensors (training history,
data description, recipe, test accuracy): every field that featvis reads later is checked
at load, so that a malformed file is refused in one line instead of failing a run late."""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib

from ..errors import is_int
from .training import TrainingRecipe

__all__ = ["check_history", "check_data_info", "check_test_accuracy", "recipe_from"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
HISTORY_NUMBERS = ("error_sum", "error_per_case")    # what every epoch's entry records
DATA_STRINGS = ("name", "source")
DATA_OBJECTS = ("patches", "whitening")


def _number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def check_history(history: object, layers: int) -> list[list[dict]]:
    """``history`` as one list per layer of epoch entries, each ``{"epoch": n >= 1,
    "error_sum": x, "error_per_case": x, ...}`` with finite numbers only; else a ValueError
    naming the first bad entry."""
    if not (isinstance(history, list) and len(history) == layers
            and all(isinstance(h, list) for h in history)):
        raise ValueError(f"history must hold one list per layer ({layers}), got "
                         f"{reprlib.repr(history)}")
    for d, entries in enumerate(history, start=1):
        for j, entry in enumerate(entries):
            where = f"history of layer {d}, entry {j}"
            if not isinstance(entry, dict):
                raise ValueError(f"{where} must be an object, got {reprlib.repr(entry)}")
            epoch = entry.get("epoch")
            if not (is_int(epoch) and epoch >= 1):
                raise ValueError(f"{where}: epoch must be a positive integer, got "
                                 f"{reprlib.repr(epoch)}")
            missing = [key for key in HISTORY_NUMBERS if key not in entry]
            if missing:
                raise ValueError(f"{where} lacks {', '.join(missing)}")
            odd = next((key for key, value in entry.items() if not _number(value)), None)
            if odd is not None:
                raise ValueError(f"{where}: {odd} must be a finite number, got "
                                 f"{reprlib.repr(entry[odd])}")
    return [[dict(entry) for entry in entries] for entries in history]


def check_data_info(data: object) -> dict:
    """A checkpoint's ``data`` description (``None`` or an object) with its known fields
    typed: ``name``, ``source`` strings, ``n_train`` a count, ``data_sha256`` a sha256,
    ``patches`` and ``whitening`` objects."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"data must be an object, got {reprlib.repr(data)}")
    for key in DATA_STRINGS:
        if key in data and not isinstance(data[key], str):
            raise ValueError(f"data {key} must be a string, got {reprlib.repr(data[key])}")
    if "n_train" in data and not (is_int(data["n_train"]) and data["n_train"] >= 0):
        raise ValueError(f"data n_train must be a count, got {reprlib.repr(data['n_train'])}")
    if "data_sha256" in data and not (isinstance(data["data_sha256"], str)
                                      and _HEX64.match(data["data_sha256"])):
        raise ValueError(f"data data_sha256 must be 64 hex digits, got "
                         f"{reprlib.repr(data['data_sha256'])}")
    for key in DATA_OBJECTS:
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ValueError(f"data {key} must be an object, got {reprlib.repr(data[key])}")
    return dict(data)


def check_test_accuracy(results: object) -> dict:
    """``{split: {"correct": c, "total": t, "accuracy": c / t}}``, counts consistent."""
    if results is None:
        return {}
    if not isinstance(results, dict):
        raise ValueError(f"test_accuracy must be an object, got {reprlib.repr(results)}")
    for split, entry in results.items():
        ok = isinstance(entry, dict) and set(entry) == {"correct", "total", "accuracy"} and \
            is_int(entry["correct"]) and is_int(entry["total"]) and \
            0 <= entry["correct"] <= entry["total"] and _number(entry["accuracy"]) and \
            0 <= entry["accuracy"] <= 1
        if not ok:
            raise ValueError(f"test_accuracy {split!r} must be {{correct, total, accuracy}} "
                             f"with 0 <= correct <= total, got {reprlib.repr(entry)}")
    return {split: dict(entry) for split, entry in results.items()}


def recipe_from(fields: object) -> TrainingRecipe:
    """The :class:`~featvis.models.training.TrainingRecipe` of a checkpoint's recipe fields; an
    unknown field is a ValueError naming it (the recipe's own checks do the rest)."""
    if not isinstance(fields, dict):
        raise ValueError(f"recipe must be an object, got {reprlib.repr(fields)}")
    known = {f.name for f in dataclasses.fields(TrainingRecipe)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"recipe has unknown field(s) {', '.join(map(repr, unknown[:5]))}")
    return TrainingRecipe(**fields)
