"""The format of a run folder's records, typed once: ``summary.json`` (format
``featvis.run/2``) and ``evaluation.json``, as :class:`~typing.TypedDict` s that the
pipeline writes, :func:`load_summary` and :func:`load_evaluation` validate (field by field,
from these declarations: :func:`problem`) and the gallery reads.

``summary.json`` describes the model, the settings and, per layer, its key, folder, units,
figures, the overview ``sections`` and per unit the ``panels`` the gallery draws (titles,
legends and captions are plain text). Layer folders are the key sanitized plus a short hash
of it, so ``a.b`` and ``a_b`` never collide. A unit's record also holds what its methods
record of it (``examples``, ``maximize``, ...: not declared here). (No ``from __future__
import annotations`` here: a TypedDict reads ``NotRequired`` when its class is made.)
"""


import hashlib
import os
import re
import types
from pathlib import Path
from typing import (Annotated, Any, NotRequired, Required, TypedDict, Union, get_args,
                    get_origin, get_type_hints, is_typeddict)

from ...errors import FeatvisError
from ..safejson import loads as parse_json

__all__ = ["RUN_FORMAT", "LEGACY_RUN_FORMATS", "SUMMARY", "EVALUATION", "EVALUATION_FORMAT",
           "RunFolderError", "Summary", "Layer", "Section", "UnitRecord", "Panel", "Image", "Tile",
           "Flag", "Evaluation", "EvaluationLayer", "layer_folder", "check_segments",
           "problem", "pictures", "is_index", "load_summary", "load_evaluation"]

RUN_FORMAT = "featvis.run/2"
LEGACY_RUN_FORMATS = ("featvis.run/1",)
SUMMARY = "summary.json"
EVALUATION = "evaluation.json"          # written by `featvis evaluate --run`, optional
EVALUATION_FORMAT = "featvis.evaluation/1"
MAX_JSON_BYTES = 64 * 2**20             # far above any real summary; bounds the memory
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RunFolderError(FeatvisError):
    """A run folder that cannot be read (missing, malformed or of an older format)."""


def check_segments(rel: str) -> str:
    """``rel`` if it is a relative path of segments (at most 128 characters) made of
    letters, digits and ``._-`` (no ``.`` or ``..``, no ``:``): the only paths featvis
    writes or links to in a run."""
    parts = rel.split("/") if isinstance(rel, str) else []
    if not parts or any(not _SEGMENT.match(p) or p in (".", "..") for p in parts):
        raise ValueError(f"{rel!r} is not a plain relative path (letters, digits, '._-')")
    return rel


def layer_folder(key: int | str) -> str:
    """The folder of a layer: ``layer`` + the key with anything but letters, digits and
    ``_-`` made ``_``, + a short hash of the key itself (so different keys never collide)."""
    text = str(key)
    return f"layer{re.sub(r'[^A-Za-z0-9_-]', '_', text)[:40]}-" \
           f"{hashlib.sha256(text.encode()).hexdigest()[:6]}"


# -- the declarations ------------------------------------------------------------------------
def is_index(value: object) -> bool:
    """a number from 0 to 10^9"""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9


def _key(value: int | str) -> bool:
    """a layer number or a name of 1..1000 characters"""
    return is_index(value) if isinstance(value, int) else 0 < len(value) <= 1000


Index = Annotated[int, is_index]               # a layer or unit number
Key = Annotated[Union[int, str], _key]         # a layer: a depth or a module's name
File = Annotated[str, check_segments]          # a file of the run, relative to its root


def _layout(value: list) -> bool:
    """[rows, cols, height, width, spacing]: counts from 1 and pixels under 10^5"""
    return len(value) == 5 and all(0 <= v < 10**5 for v in value) and min(value[:4]) > 0


def _cell_count(value: int) -> bool:
    """a count from 1 to 10^5"""
    return 0 < value < 10**5


class Image(TypedDict):
    file: File
    caption: str
    alt: str
    style: str                               # "single" | "strip" | a method's own
    grid: NotRequired[Annotated[list[int], _layout]]     # its cells, where known


class Tile(TypedDict):
    """What stands for a unit in a layer's overviews: the first ``cells`` cells of the first
    row of one of its pictures (a grid of ``grid``'s layout)."""
    file: File
    grid: Annotated[list[int], _layout]
    cells: Annotated[int, _cell_count]


class Panel(TypedDict):
    """What the gallery shows of one method on a unit's page."""
    method: str
    title: str
    images: list[Image]
    facts: list[tuple[str, Any]]             # (label, value) rows


class UnitRecord(TypedDict, total=False):
    """A shown unit: its pictures and panels, and what each method records of it."""
    unit: Required[Index]
    files: Required[dict[str, File]]
    panels: Required[list[Panel]]
    tiles: dict[str, Tile]                   # method -> what stands for the unit
    agreement: dict[str, float | None]


class Section(TypedDict):
    """An overview picture of a method over the layer's units."""
    method: str
    title: str
    legend: str
    file: File
    caption: str
    params: NotRequired[dict[str, Any]]      # the method's settings that made it


class Flag(TypedDict):
    """A figure that says a method's pictures may not show the model."""
    method: str
    figure: str
    value: NotRequired[float | None]
    explanation: str


class Layer(TypedDict):
    layer: Key
    name: str
    folder: File
    type: NotRequired[str]
    n_units: NotRequired[int]
    unit_shape: NotRequired[list[int]]                # the positions of each unit
    unit_axis: NotRequired[int]                       # where not 1: the output's axis of units
    unit_name: NotRequired[str]                       # "direction": directions as units
    units: list[Index]
    methods: list[str]
    unavailable: NotRequired[dict[str, str]]          # method title -> why not
    sections: list[Section]
    files: dict[str, File]                            # method -> its first section's file
    figures: dict[str, dict[str, float | None]]       # method -> label -> value
    notes: NotRequired[dict[str, str]]                # figure label -> what it means
    flags: NotRequired[list[Flag]]
    unit_details: list[UnitRecord]


class Summary(TypedDict):
    format: str
    featvis_version: NotRequired[str]
    model_sha256: str
    trained_layers: Index | None
    model: dict[str, Any]                    # the probe's description, path, normalization
    settings: NotRequired[dict[str, Any]]    # VisualizeSettings.record()
    sanity_settings: NotRequired[dict[str, int] | None]
    inputs: NotRequired[dict[str, Any]]      # what was mined: count, labelled
    layers: list[Layer]


class EvaluationLayer(TypedDict):
    layer: NotRequired[Index]
    name: str
    units: int
    reconstruction_error: float | None
    probe_accuracy: float | None


class Evaluation(TypedDict):
    format: str
    model: NotRequired[str]
    model_sha256: NotRequired[str]
    data: NotRequired[str]
    layers: list[EvaluationLayer]
    rbm1: dict[str, Any]                     # the first RBM's likelihood figures


# -- the validator ---------------------------------------------------------------------------
def problem(value: object, declared: Any, where: str = "") -> str | None:
    """The first way JSON ``value`` departs from the type ``declared`` (a TypedDict above, a
    ``list``/``dict``/``tuple``/union of them, ``str``, ``int``, ``float``, ``bool``,
    ``None``, ``Any``, or ``Annotated[type, check]``: a check returning False, its docstring
    saying what is expected, or raising a ValueError saying why), as
    ``"where: what"``; ``None`` if it conforms. Keys a TypedDict does not declare are let
    through (a method's own unit records)."""
    origin, args = get_origin(declared), get_args(declared)
    if origin in (NotRequired, Required):
        return problem(value, args[0], where)
    if origin is Annotated:                 # a check: False (its docstring says what) or
        found = problem(value, args[0], where)          # a ValueError saying why
        check = next((c for c in args[1:] if callable(c)), None)
        if found is not None or check is None:
            return found
        try:
            if not check(value):
                return f"{where or 'value'}: expected {check.__doc__}, got {_shown(value)}"
        except ValueError as exc:
            return f"{where or 'value'}: {exc}"
        return None
    if declared is Any:
        return None
    if origin in (Union, types.UnionType):
        if any(problem(value, option) is None for option in args):
            return None
        return _expected(where, " or ".join(_name(option) for option in args), value)
    if is_typeddict(declared):
        if not isinstance(value, dict):
            return _expected(where, "an object", value)
        for key in sorted(declared.__required_keys__ - value.keys()):
            return f"{where or 'value'}: missing {key!r}"
        for key, hint in get_type_hints(declared, include_extras=True).items():
            if key in value:
                found = problem(value[key], hint, f"{where}.{key}" if where else key)
                if found is not None:
                    return found
        return None
    if origin is list or origin is tuple:
        if not isinstance(value, list) or (origin is tuple and len(value) != len(args)):
            return _expected(where, _name(declared), value)
        hints = args if origin is tuple else [args[0]] * len(value)
        return next((found for i, (item, hint) in enumerate(zip(value, hints))
                     if (found := problem(item, hint, f"{where}[{i}]")) is not None), None)
    if origin is dict:
        if not isinstance(value, dict):
            return _expected(where, "an object", value)
        return next((found for key, item in value.items()
                     if (found := problem(item, args[1], f"{where}[{key!r}]")) is not None),
                    None)
    if declared is type(None) or declared is None:
        return None if value is None else _expected(where, "null", value)
    if declared is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif declared is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, declared)
    return None if ok else _expected(where, _name(declared), value)


def _name(declared: Any) -> str:
    origin = get_origin(declared)
    if origin is Annotated:
        return _name(get_args(declared)[0])
    if origin is list or origin is tuple:
        return "a list"
    if origin is dict or is_typeddict(declared):
        return "an object"
    if declared is type(None) or declared is None:
        return "null"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"
            }.get(declared, getattr(declared, "__name__", str(declared)))


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _expected(where: str, what: str, value: object) -> str:
    return f"{where or 'value'}: expected {what}, got {_shown(value)}"


# -- loading ---------------------------------------------------------------------------------
def _require(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise RunFolderError(f"{path}: {message}")


def _read_json(path: Path) -> object:
    _require(path.is_file() and not path.is_symlink(), path, "not a regular file")
    _require(path.stat().st_size <= MAX_JSON_BYTES, path,
             f"larger than {MAX_JSON_BYTES >> 20} MiB (not a featvis file)")
    try:
        return parse_json(path.read_bytes(), str(path))
    except ValueError as exc:
        raise RunFolderError(str(exc)) from None


def pictures(summary: Summary) -> list[str]:
    """Every picture a (validated) summary names: layer overviews, sections, panels."""
    names: list[str] = []
    for layer in summary["layers"]:
        names += list(layer["files"].values())
        names += [section["file"] for section in layer["sections"]]
        names += [image["file"] for unit in layer["unit_details"] for panel in unit["panels"]
                  for image in panel["images"]]
        names += [tile["file"] for unit in layer["unit_details"]
                  for tile in unit.get("tiles", {}).values()]
    return names


def load_summary(run_dir: str | os.PathLike) -> Summary:
    """Read ``summary.json`` and check it against :class:`Summary` and every PNG it names;
    :class:`RunFolderError` if the folder is broken or of an older format."""
    run_dir = Path(run_dir)
    path = run_dir / SUMMARY
    _require(run_dir.is_dir(), run_dir, "not a folder")
    _require(path.is_file(), path, "missing (not a featvis visualize output folder?)")
    summary = _read_json(path)
    found = summary.get("format") if isinstance(summary, dict) else None
    _require(found not in LEGACY_RUN_FORMATS, path,
             f"written by an older featvis ({found}); run 'featvis visualize' again to "
             "rebuild this folder")
    _require(found == RUN_FORMAT, path,
             f"not a featvis run summary (format {RUN_FORMAT} expected)")
    found = problem(summary, Summary)
    _require(found is None, path, f"malformed: {found}")
    _require(bool(summary["layers"]), path, "malformed: layers: expected at least one")
    for name in pictures(summary):
        image = run_dir / name
        _require(image.is_file() and not image.is_symlink(), image,
                 "missing image named in summary.json")
    return summary


def load_evaluation(run_dir: str | os.PathLike) -> Evaluation | None:
    """The run's ``evaluation.json`` if there is one, checked against :class:`Evaluation`;
    :class:`RunFolderError` if broken."""
    path = Path(run_dir) / EVALUATION
    if not path.exists():
        return None
    evaluation = _read_json(path)
    _require(isinstance(evaluation, dict) and evaluation.get("format") == EVALUATION_FORMAT,
             path, f"not a featvis evaluation (format {EVALUATION_FORMAT} expected)")
    found = problem(evaluation, Evaluation)
    _require(found is None, path, f"malformed: {found}")
    return evaluation
