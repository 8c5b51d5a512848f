"""Offline shards of dataset-example mining, for clusters without a process group.

Each machine mines one shard ``i/N`` of the data (:func:`mine_shard`: the global batches
``b`` of ``batch_size`` inputs with ``b % N == i``, as :func:`featvis.pipeline.distributed
.mine_top_examples` splits them) and writes one safetensors file (:func:`save_shard`,
format ``featvis.shard/2``): every layer's :class:`~featvis.methods.topk.TopK` tensors under
``layer{j}.`` and JSON metadata with the shard's place, the fingerprints of the model and
the data, the mining settings and each layer's state. :func:`merge_shards` takes all N files
in any order, refuses a missing, repeated or foreign one (another split, model, data or
settings) with a one-line error naming the file, and returns what one pass over all the
data mines, bit for bit (with the same number of torch threads per process: a matmul's
rounding may depend on it).

Files are read as hostile: the header's size is bounded before it is parsed, metadata is
checked against the tensors' dtypes and shapes before any tensor is read, entries against
their order and ranges and each example index against the shard's own batches. Nothing is
ever unpickled. Writes are atomic.
"""

from __future__ import annotations

import json
import os
import reprlib
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from .._version import __version__
from ..data.tensors import check_inputs
from .distributed import _split, examples_from_states, mine_top_examples
from ..errors import CheckpointError, DataError, first_line, is_int
from ..params import check_int
from ..io.fileio import atomic_write_bytes
from ..data import stream
from ..data.stream import Data, Loading
from ..io.fingerprint import model_fingerprint
from ..methods.examples import Checkpoint
from ..methods.running_statistics import (MAX_CLASSES, RunningStatistics, StatisticsPlan,
                                          class_labels, plan_record, top_of)
from ..methods.topk import MAX_POSITION_AXES, VALUE_DTYPES, TopExamples, TopK, entries_problem
from ..seam import DirectedProbe, Key, Probe, UnsupportedError, probe
from ..io.safetensors_file import featvis_metadata, read_safetensors
from ..units import Units, resolve_units

__all__ = ["SHARD_FORMAT", "MINING_FORMAT", "MAX_SHARD_HEADER", "shard_info", "mine_shard",
           "save_shard", "load_shard", "load_mining_state", "merge_shards", "shard_examples"]

SHARD_FORMAT = "featvis.shard/2"
MINING_FORMAT = "featvis.mining/1"  # a shard's states part-way, with the input to go on at
MAX_SHARD_HEADER = 16 * 2**20       # unit lists of a few large layers, with room to spare
MAX_COUNT = 2**40                   # what a file may claim for units, k, inputs or shards
TENSORS = ("values", "indices", "positions")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def _plan(model: torch.nn.Module, images: Data, layers: Key | Sequence[Key], k: int,
          units: Units | Mapping[Key, Units], batch_size: int):
    """The layers and units a shard mines, checked as :func:`~featvis.top_examples` checks
    them (before any mining)."""
    single = not isinstance(layers, Iterable) or isinstance(layers, str)
    keys = [layers] if single else list(layers)
    if not keys:
        raise ValueError("layer: no layers given")
    check_int("k", k)
    check_int("batch_size", batch_size)
    if not (isinstance(images, torch.Tensor) and images.dim() >= 2 or
            stream.is_dataset(images)):
        check_inputs(images)                   # refused, naming what it is
    if stream.count(images) < k:
        raise ValueError(f"k={k} is larger than the number of inputs ({stream.count(images)})")
    seam = probe(model, stream.input_shape(images))
    if isinstance(seam, DirectedProbe):
        raise UnsupportedError("shards: directions are mined in one process or on "
                               "torch.distributed ranks (visualize), not in shard files")
    infos = {key: seam.layer(key) for key in keys}
    wanted = units if isinstance(units, Mapping) else dict.fromkeys(infos, units)
    extra = [key for key in wanted if key not in infos]
    if extra:
        raise ValueError(f"units: layer {extra[0]!r} is not among the layers asked for")
    resolved = {key: resolve_units(wanted.get(key), info.units, seam.device)
                for key, info in infos.items()}
    return seam, infos, wanted, resolved


def shard_info(model: torch.nn.Module | Probe, images: Data, layers: Key | Sequence[Key],
               k: int = 9, units: Units | Mapping[Key, Units] = None,
               batch_size: int = 1000, shard: tuple[int, int] = (0, 1), *,
               statistics: StatisticsPlan | None = None, labels: torch.Tensor | None = None,
               precision: str = "float32") -> dict:
    """The JSON-ready description of shard ``(i, N)`` of mining ``layers`` of ``model`` over
    ``images`` (with ``statistics``, over ``labels``' classes): what every shard of one
    run must share (fingerprints, ``inputs``, ``settings``) and its place (``shard: [i,
    N]``). A dataset's fingerprint is of its count and its first
    :data:`~featvis.data.stream.SAMPLE` inputs."""
    index, count = _split(None, shard)
    seam, infos, wanted, resolved = _plan(model, images, layers, k, units, batch_size)
    n = stream.count(images)
    batches = -(-n // batch_size)
    if count > batches:
        raise ValueError(f"shard {index}/{count}: {n} inputs make {batches} "
                         f"batch(es) of {batch_size}, so at most {batches} shard(s): give "
                         f"--shard i/N with N <= {batches}")
    settings = {"k": k, "batch_size": batch_size, "layers": list(infos),
                "units": [None if wanted.get(key) is None else resolved[key].tolist()
                          for key in infos]}
    if precision != "float32":
        settings["precision"] = precision
    if statistics is not None:
        settings["statistics"] = plan_record(statistics, *class_labels(images, labels))
    return {"shard": [index, count], "model_sha256": model_fingerprint(seam.model),
            "data_sha256": stream.data_fingerprint(images), "inputs": n, "settings": settings}


def mine_shard(model: torch.nn.Module | Probe, images: Data, layers: Key | Sequence[Key],
               k: int = 9, units: Units | Mapping[Key, Units] = None,
               batch_size: int = 1000, shard: tuple[int, int] = (0, 1),
               info: dict | None = None, *, loading: Loading | None = None,
               progress: bool = False, checkpoint: Checkpoint | None = None,
               statistics: StatisticsPlan | None = None, labels: torch.Tensor | None = None,
               precision: str = "float32") -> dict[Key, TopK | RunningStatistics]:
    """The top-k states, by layer, of shard ``(i, N)`` of ``images`` (a dataset's inputs of
    the shard alone are read, as ``loading`` says), with ``statistics`` their
    :class:`~featvis.methods.running_statistics.RunningStatistics` (``labels``: per class);
    each top-k's ``info`` is the shard's :func:`shard_info` (computed unless given), which
    :func:`save_shard` writes. A ``checkpoint``
    (:class:`~featvis.pipeline.resume.MiningCheckpoint`) continues a killed pass and
    saves its state as it goes.

    Example:
        >>> states = mine_shard(dbn, images, [1, 2, 3], shard=(1, 4))   # doctest: +SKIP
        >>> save_shard("state_1.safetensors", states)
    """
    if info is None:
        info = shard_info(model, images, layers, k, units, batch_size, shard,
                          statistics=statistics, labels=labels, precision=precision)
    states = mine_top_examples(model, images, layers, k, units, batch_size, shard=shard,
                               loading=loading, progress=progress, checkpoint=checkpoint,
                               statistics=statistics, labels=labels, precision=precision)
    if list(states) != info["settings"]["layers"] or info["shard"] != list(_split(None, shard)):
        raise ValueError("info: describes another shard or other layers than these")
    for state in states.values():
        top_of(state).info = info
    return states


def save_shard(path: str | os.PathLike, states: Mapping[Key, TopK | RunningStatistics],
               info: dict | None = None, *, next_input: int | None = None) -> None:
    """Write one shard's states (all layers: their top-k, or their statistics, under
    ``layer{j}.statistics.``) to ``path`` as one safetensors file (temporary, fsync,
    rename). ``info`` defaults to the states' own (:func:`mine_shard` puts it there). With
    ``next_input`` the states are part-way, a mining state (format ``featvis.mining/1``,
    :mod:`featvis.pipeline.resume`) to continue at that input."""
    if not states:
        raise ValueError("save_shard: no states")
    if info is None:
        info = top_of(next(iter(states.values()))).info
    _check_info(Path(path), info, list(states))
    tensors, layers = {}, []
    for j, kept in enumerate(states.values()):
        state = top_of(kept)
        for name in TENSORS:
            tensors[f"layer{j}.{name}"] = getattr(state, name).detach().cpu().contiguous()
        if isinstance(kept, RunningStatistics):
            tensors |= {f"layer{j}.statistics.{name}": t for name, t in kept.tensors().items()
                        if not name.startswith("top.")}
        layers.append({"units": state.units, "k": state.k,
                       "position_axes": state.position_axes,
                       "count": state.count,
                       "dtype": next(n for n, d in VALUE_DTYPES.items() if d == state.dtype)})
    meta = {**info, "format": SHARD_FORMAT, "featvis_version": __version__, "states": layers}
    if next_input is not None:
        meta |= {"format": MINING_FORMAT, "next": next_input}
    text = json.dumps(meta, sort_keys=True, allow_nan=False)
    data = safetensors_bytes(tensors, metadata={"featvis": text})
    if int.from_bytes(data[:8], "little") > MAX_SHARD_HEADER:
        raise ValueError(f"save_shard: a header above {MAX_SHARD_HEADER} bytes (too many "
                         "units listed)")
    atomic_write_bytes(path, data)


def _refuse(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: inconsistent shard file ({problem})")


def _key(value: object) -> bool:
    return (is_int(value) and value >= 0) or (isinstance(value, str) and len(value) < 1000)


def _check_info(path: Path, info: object, keys: list | None = None) -> dict:
    """``info`` if it is a sound shard description (``keys``: the layers it must list)."""
    if not isinstance(info, dict):
        raise _refuse(path, f"metadata must be an object, got {reprlib.repr(info)}")
    shard = info.get("shard")
    if not (isinstance(shard, list) and len(shard) == 2 and all(is_int(v) for v in shard)
            and 0 <= shard[0] < shard[1] <= MAX_COUNT):
        raise _refuse(path, f"shard must be [i, N] with 0 <= i < N, got {reprlib.repr(shard)}")
    for name in ("model_sha256", "data_sha256"):
        if not (isinstance(info.get(name), str) and _HEX.match(info[name])):
            raise _refuse(path, f"{name} must be a sha256 hex digest, got "
                                f"{reprlib.repr(info.get(name))}")
    if not (is_int(info.get("inputs")) and 1 <= info["inputs"] <= MAX_COUNT):
        raise _refuse(path, f"inputs must be a positive integer, got "
                            f"{reprlib.repr(info.get('inputs'))}")
    settings = info.get("settings")
    if not isinstance(settings, dict) or \
            set(settings) - {"statistics", "precision"} != {"k", "batch_size", "layers", "units"}:
        raise _refuse(path, f"settings must hold k, batch_size, layers, units (and "
                            f"statistics, precision), got {reprlib.repr(settings)}")
    if settings.get("precision", "bfloat16") != "bfloat16":
        raise _refuse(path, f"settings.precision must be bfloat16 where given, got "
                            f"{reprlib.repr(settings['precision'])}")
    if settings.get("statistics") is not None:
        _check_plan(path, settings["statistics"])
    for name in ("k", "batch_size"):
        if not (is_int(settings[name]) and 1 <= settings[name] <= MAX_COUNT):
            raise _refuse(path, f"settings.{name} must be a positive integer, got "
                                f"{reprlib.repr(settings[name])}")
    layers, units = settings["layers"], settings["units"]
    if not (isinstance(layers, list) and layers and all(_key(key) for key in layers)
            and len(set(map(repr, layers))) == len(layers)):
        raise _refuse(path, f"settings.layers must be distinct layer keys, got "
                            f"{reprlib.repr(layers)}")
    if keys is not None and layers != keys:
        raise ValueError(f"info lists layers {layers}, the states {keys}")
    if not (isinstance(units, list) and len(units) == len(layers) and all(
            u is None or (isinstance(u, list) and u and all(is_int(i) and 0 <= i < MAX_COUNT
                                                            for i in u)) for u in units)):
        raise _refuse(path, "settings.units must list, per layer, null or unit indices")
    return info


def _check_plan(path: Path, plan: object) -> None:
    """Refuse a ``settings.statistics`` that is not a :class:`StatisticsPlan` record with
    ``classes``."""
    fields = {"bins", "bands", "per_band", "threshold", "seed", "classes", "labels_sha256"}
    if not (isinstance(plan, dict) and set(plan) == fields and is_int(plan["classes"])
            and 0 <= plan["classes"] <= MAX_CLASSES and
            (plan["labels_sha256"] is None) == (plan["classes"] == 0) and
            (plan["labels_sha256"] is None or _HEX.match(str(plan["labels_sha256"])))):
        raise _refuse(path, f"settings.statistics must hold {', '.join(sorted(fields))} "
                            f"(classes in 0..{MAX_CLASSES}, the labels' digest with classes), "
                            f"got {reprlib.repr(plan)}")
    try:
        StatisticsPlan(**{name: plan[name] for name in fields - {"classes", "labels_sha256"}})
    except ValueError as exc:
        raise _refuse(path, f"settings.statistics: {first_line(exc)}") from None


def _statistics_of(settings: dict) -> tuple[StatisticsPlan, int] | None:
    """The statistics a shard's settings gather and their classes (``None``: none)."""
    plan = settings.get("statistics")
    if plan is None:
        return None
    return StatisticsPlan(**{n: v for n, v in plan.items()
                             if n not in ("classes", "labels_sha256")}), plan["classes"]


def load_shard(path: str | os.PathLike) -> tuple[dict[Key, TopK], dict]:
    """``(states by layer, info)`` of a file written by :func:`save_shard`; a one-line
    :class:`CheckpointError` naming the file for anything else."""
    return _load(Path(path), SHARD_FORMAT)


def load_mining_state(path: str | os.PathLike) -> tuple[dict[Key, TopK], dict]:
    """``(states by layer, info)`` of a mining state (:func:`save_shard` with
    ``next_input``, which ``info["next"]`` holds), checked as :func:`load_shard` checks a
    shard, and every entry from an input before the next."""
    return _load(Path(path), MINING_FORMAT)


def _load(path: Path, format: str) -> tuple[dict[Key, TopK], dict]:
    what = "shard" if format == SHARD_FORMAT else "mining state"
    states, info = read_safetensors(path, lambda f: _read(path, f, format), what,
                                    MAX_SHARD_HEADER)
    for j, state in enumerate(states.values()):
        _check_entries(path, j, state, info)
    return states, info


def _read(path: Path, f: safe_open, format: str) -> tuple[dict[Key, TopK], dict]:
    meta = featvis_metadata(path, f.metadata() or {},
                            "shard" if format == SHARD_FORMAT else "mining state", (format,))
    info = _check_info(path, meta)
    if format == SHARD_FORMAT and "next" in meta:
        raise _refuse(path, "a shard holds every input of its batches, no 'next'")
    if format == MINING_FORMAT:
        (index, count), batch = info["shard"], info["settings"]["batch_size"]
        following = meta.get("next")
        if not (is_int(following) and 0 <= following <= info["inputs"] + count * batch
                and stream.share_begins(batch, (index, count), following)):
            raise _refuse(path, f"next must start a batch of shard {index}/{count}, got "
                                f"{reprlib.repr(following)}")
    settings = info["settings"]
    layers = meta.get("states")
    if not (isinstance(layers, list) and len(layers) == len(settings["layers"])):
        raise _refuse(path, "states must describe each layer of settings.layers")
    expected = {f"layer{j}.{name}" for j in range(len(layers)) for name in TENSORS}
    gathered = _statistics_of(settings)
    if gathered is not None:
        tops = ["bottom", *(f"class{c}" for c in range(gathered[1]))]
        expected |= {f"layer{j}.statistics.{name}" for j in range(len(layers))
                     for name in [*RunningStatistics.TENSORS, "count",
                                  *(f"{t}.{n}" for t in tops for n in TENSORS)]}
    names = set(f.keys())
    if names != expected:
        odd = sorted(names ^ expected)[0]
        raise _refuse(path, f"tensor {odd!r} is {'unexpected' if odd in names else 'missing'}")
    k = settings["k"]
    states = {}
    for j, (key, layer, units) in enumerate(zip(settings["layers"], layers, settings["units"])):
        if not isinstance(layer, dict):
            raise _refuse(path, f"states[{j}] must be an object")
        n, count = layer.get("units"), layer.get("count")
        if not (is_int(n) and 1 <= n <= MAX_COUNT) or (units is not None and len(units) != n):
            raise _refuse(path, f"layer {key!r}: units must be a positive integer matching "
                                f"settings.units, got {reprlib.repr(n)}")
        if layer.get("k") != k or not (is_int(count) and 0 <= count <= k):
            raise _refuse(path, f"layer {key!r}: k must be settings.k={k} and count in 0..k, "
                                f"got {reprlib.repr(layer.get('k'))}, {reprlib.repr(count)}")
        axes = layer.get("position_axes")
        if not (is_int(axes) and 0 <= axes <= MAX_POSITION_AXES) \
                or layer.get("dtype") not in VALUE_DTYPES:
            raise _refuse(path, f"layer {key!r}: position_axes must be an integer in "
                                f"0..{MAX_POSITION_AXES} and dtype one of "
                                f"{', '.join(VALUE_DTYPES)}")
        shapes = {"values": ((n, count), layer["dtype"]), "indices": ((n, count), "I64"),
                  "positions": ((n, count, axes), "I64")}
        for name, (shape, dtype) in shapes.items():
            found = f.get_slice(f"layer{j}.{name}")
            if (tuple(found.get_shape()), found.get_dtype()) != (shape, dtype):
                raise _refuse(path, f"layer{j}.{name} must be {dtype} of shape {shape}, found "
                                    f"{found.get_dtype()} {tuple(found.get_shape())}")
        state = TopK(n, k, axes, dtype=VALUE_DTYPES[layer["dtype"]])
        state.values, state.indices, state.positions = (f.get_tensor(f"layer{j}.{name}")
                                                         for name in TENSORS)
        states[key] = state if gathered is None else _statistics(path, f, j, key, state,
                                                                 gathered)
    return states, info


def _statistics(path: Path, f: safe_open, j: int, key: Key, top: TopK,
                gathered: tuple[StatisticsPlan, int]) -> RunningStatistics:
    """Layer ``j``'s statistics in an open shard file, around its ``top``."""
    prefix = f"layer{j}.statistics."
    tensors = {name[len(prefix):]: f.get_tensor(name) for name in f.keys()
               if name.startswith(prefix)}
    tensors |= {f"top.{name}": getattr(top, name) for name in TENSORS}
    plan, classes = gathered
    try:
        state = RunningStatistics.from_tensors(tensors, top.k, plan, classes,
                                               top.position_axes)
    except ValueError as exc:
        raise _refuse(path, f"layer {key!r} statistics: {first_line(exc)}") from None
    if state.edges.shape[0] != top.units:
        raise _refuse(path, f"layer {key!r} statistics: edges must have a row per unit")
    return state


def _check_entries(path: Path, j: int, kept: TopK | RunningStatistics, info: dict) -> None:
    """:class:`CheckpointError` unless layer ``j``'s entries (its top-k, and its
    statistics' bottom, class tops and band members) are in range, in the strict order,
    distinct, and each from one of this shard's own batches."""
    (index, count), batch = info["shard"], info["settings"]["batch_size"]
    where = f"layer {info['settings']['layers'][j]!r}"
    end = min(info["inputs"], info.get("next", info["inputs"]))
    tops = [kept] if isinstance(kept, TopK) else [kept.top, kept.bottom, *kept.class_top]
    seen = _share_inputs(end, batch, index, count)
    if tops[0].count != min(tops[0].k, seen) or (isinstance(kept, RunningStatistics)
                                                  and kept.count != seen):
        raise _refuse(path, f"{where}: the shard's {seen} inputs must all be counted")
    members = [t.indices for t in tops]
    if isinstance(kept, RunningStatistics):
        members.append(kept.band_indices[kept.band_indices >= 0])
    for i in members:
        if (i < 0).any() or (i >= end).any():
            raise _refuse(path, f"{where}: indices must be in 0..{end - 1}")
        if ((i // batch) % count != index).any():
            bad = i[(i // batch) % count != index][0].item()
            raise _refuse(path, f"{where}: example {bad} is not in shard {index}/{count}'s "
                                "batches")
    for state in tops:
        problem = entries_problem(state.values, state.indices, state.positions)
        if problem:
            raise _refuse(path, f"{where}: {problem}")


def _share_inputs(end: int, batch: int, index: int, count: int) -> int:
    """How many of inputs ``0..end - 1`` the batches of share ``index`` of ``count`` hold."""
    batches = -(-end // batch)                       # global batches, the last maybe short
    mine = max(0, -(-(batches - index) // count))
    short = batches and (batches - 1) % count == index and end % batch
    return mine * batch - (batch - end % batch if short else 0)


def _common(info: dict) -> dict:
    return {name: info[name] for name in ("model_sha256", "data_sha256", "inputs", "settings")}


def merge_shards(paths: Sequence[str | os.PathLike]) -> tuple[dict[Key, TopK], dict]:
    """The states of all N shards of one run merged: ``(states by layer, info)``, what one
    pass over all the data mines, bit for bit; ``info`` holds the fingerprints, ``inputs``,
    ``settings`` and ``shards: N``. Every shard must be given once; a missing or repeated
    one, or one of another split, model, data or settings is refused with one line naming
    the file."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("merge_shards: no shard files given")
    loaded = [(path, *load_shard(path)) for path in paths]
    first_path, _, first = loaded[0]
    n = first["shard"][1]
    by_index: dict[int, tuple[Path, dict[Key, TopK]]] = {}
    for path, states, info in loaded:
        i, count = info["shard"]
        if count != n:
            raise CheckpointError(f"{path}: shard {i}/{count} is of a split in {count}, "
                                  f"{first_path} of a split in {n}")
        for name, what in (("model_sha256", "model"), ("data_sha256", "data")):
            if info[name] != first[name]:
                raise CheckpointError(f"{path}: shard of another {what} ({name} "
                                      f"{info[name][:16]}..., {first_path} has "
                                      f"{first[name][:16]}...)")
        if _common(info) != _common(first):
            raise CheckpointError(f"{path}: shard mined with other settings than {first_path} "
                                  f"({json.dumps(info['settings'])[:200]})")
        if i in by_index:
            raise CheckpointError(f"{path}: shard {i}/{n} is given twice (also "
                                  f"{by_index[i][0]})")
        by_index[i] = (path, states)
    missing = [i for i in range(n) if i not in by_index]
    if missing:
        raise CheckpointError(f"shard{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(f'{i}/{n}' for i in missing[:10])}"
                              f"{' ...' if len(missing) > 10 else ''} missing: "
                              f"{len(paths)} of {n} files given ({first_path}, ...)")
    merged: dict[Key, TopK] = {}
    for i in range(n):
        path, states = by_index[i]
        for key, state in states.items():
            try:
                merged[key] = state if key not in merged else merged[key].merge(state)
            except DataError as exc:
                raise CheckpointError(f"{path}: layer {key!r} cannot join the other shards "
                                      f"({first_line(exc)})") from None
    return merged, {**_common(first), "shards": n}


def shard_examples(states: Mapping[Key, TopK], info: dict, model: torch.nn.Module,
                   images: Data) -> dict[Key, TopExamples]:
    """The :class:`~featvis.TopExamples` of merged shards, by layer, exactly as
    :func:`~featvis.top_examples` reports them; :class:`DataError` unless ``model`` and
    ``images`` are the ones the shards were mined from."""
    if model_fingerprint(model) != info["model_sha256"]:
        raise DataError(f"the shards were mined from another model (model_sha256 "
                        f"{info['model_sha256'][:16]}...)")
    if stream.data_fingerprint(images) != info["data_sha256"]:
        raise DataError(f"the shards were mined from other data (data_sha256 "
                        f"{info['data_sha256'][:16]}..., {info['inputs']} inputs)")
    units = dict(zip(info["settings"]["layers"], info["settings"]["units"]))
    return examples_from_states(model, images, states, units)
