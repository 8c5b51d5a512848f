"""The ``featvis`` sub-commands but ``train`` (:mod:`featvis.cli.recipes`): thin layers
over the library that check what the arguments decide before any work."""

from __future__ import annotations

import argparse
import sys
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..data.images import MAX_PIXELS
from ..errors import FeatvisError, UserCodeError, first_line
from .argtypes import conv_text

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> "torch.device":
    """``--device``: ``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA device that is
    not there is an error naming the option."""
    from ..devices import resolve_device as resolve

    try:
        return resolve(name)
    except FeatvisError as exc:
        raise FeatvisError(f"--device {first_line(exc).removeprefix('device ')}") from None


def _mnist(split: str, data: Path | None, width: int | None
           ) -> tuple["torch.Tensor", "torch.Tensor"]:
    """An MNIST split (embedded or from ``data``) whose images are ``width`` pixels wide (any
    width for ``None``)."""
    from ..data.mnist import load_mnist

    images, labels = load_mnist(split, data)
    if width is not None and images.shape[1] != width:
        raise FeatvisError(f"the data has {images.shape[1]} pixels per image but the model's "
                           f"input layer has {width} units")
    return images, labels


def _check_new_file(path: Path, option: str, force: bool, resume: bool = False,
                    reading: Sequence[tuple[str, Path | None]] = ()) -> None:
    """Refuse, before any work, a file ``path`` that the command may not write: one of the
    inputs it reads (``reading``: option and path; never, ``--force`` or not), a folder, a
    path it cannot create, or an existing file without ``--force`` (``--resume`` for
    train)."""
    from ..io.fileio import check_creatable

    if not resume:
        _check_not_input(path, option, reading)
    check_creatable(path, option)
    if path.is_dir():
        raise FeatvisError(f"{option} {path}: is a folder; give a file name")
    if resume and not path.is_file():
        raise FeatvisError(f"--resume: no checkpoint at {path}")
    if os.path.lexists(path) and not resume and not force:
        again = "--resume continues its training, " if option == "--out" else ""
        raise FeatvisError(f"{option} {path}: exists; refusing to overwrite it ({again}--force "
                           "replaces it)")


def _check_not_input(out: Path, option: str, reading: Sequence[tuple[str, Path | None]]
                     ) -> None:
    """Refuse an output ``out`` that is one of the inputs being read, or lies inside an
    input folder (which the next run would read it from)."""
    for name, source in reading:
        if source is None or not os.path.lexists(source):
            continue
        same = os.path.realpath(out) == os.path.realpath(source) or (
            os.path.exists(out) and os.path.samefile(out, source))
        if same:
            raise FeatvisError(f"{option} {out}: is the {name} being read ({source}); "
                               "featvis never "
                               "replaces its input, --force or not: choose another "
                               f"{option}")
        if name == "--images" and os.path.isdir(source):
            from ..io.runfolder import path_inside

            if path_inside(out, source) is not None:
                raise FeatvisError(f"{option} {out}: lies inside the {name} folder {source}, "
                                   f"which featvis reads; choose an {option} outside it")


def _reading(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """The inputs a command reads, by option: the checkpoint, weights, images and data."""
    return [(name, getattr(args, attr)) for name, attr in (
        ("model", "model"), ("--weights file", "weights"), ("--images", "images"),
        ("--data", "data")) if getattr(args, attr, None) is not None]


def _load_model(args: argparse.Namespace, device: "torch.device"):
    """The model of ``--model``: a user's ``module:factory`` (with ``--weights``), or a
    built-in kind read from the positional checkpoint (any featvis checkpoint); ``--model
    cnn`` or ``vit`` without one is the reference CNN or ViT with the weights shipped in the
    package."""
    from ..models.checkpoint import KINDS, load
    from ..models import reference_cnn, reference_vit
    from ..models.usermodel import load_factory, load_weights

    spec = args.model_spec
    if ":" not in spec and (args.model_args is not None or args.input_key is not None):
        raise FeatvisError(f"--{'model-args' if args.model_args is not None else 'input-key'} "
                           "is for --model package.module:factory, a module of your own")
    if ":" in spec:
        if args.model is not None:
            raise FeatvisError(f"give either a checkpoint or --model {spec}, not both")
        model = load_factory(spec, args.model_args)
        if args.weights is not None:
            load_weights(model, args.weights)
        return model.to(device), args.weights
    if spec not in ("dbn", *KINDS):
        raise FeatvisError(f"--model {spec!r}: unknown built-in kind (dbn, "
                           f"{', '.join(KINDS)}), and no package.module:factory")
    if args.weights is not None:
        raise FeatvisError("--weights is for --model package.module:factory; a checkpoint "
                           "holds its own weights")
    shipped = {"cnn": reference_cnn, "vit": reference_vit}
    if args.model is None and spec in shipped:
        return shipped[spec](pretrained=True, device=device), None
    if args.model is None:
        raise FeatvisError("give a checkpoint written by 'featvis train', or --model cnn or "
                           "vit (shipped), or --model package.module:factory")
    return load(args.model, device=device), args.model


def _inputs(args: argparse.Namespace, seam) -> tuple[object, object, object]:
    """The inputs a command shows, shaped for the model (a tensor, or for --images a
    dataset read as it streams), their labels (or None) and their normalization."""
    from ..data import stream
    from ..data.normalization import Normalization, parse_normalize
    from ..data.mnist import load_mnist
    from ..data.images import open_dataset
    from ..data.tensors import picture_shape

    shape = args.input_shape or seam.input_shape
    recipe = seam.describe().get("data", {}).get("patches")
    if recipe is not None:                  # a model of natural patches: the same patches
        from ..data.natural import model_inputs

        if args.normalize is not None:
            raise FeatvisError("--normalize: a model of natural patches reads them as it was "
                               "trained (whitened, contrast-normalized)")
        patches = model_inputs(recipe, seam.whitening(), args.images,
                               max_pixels=args.max_pixels)
        return patches.view(len(patches), *(shape or patches.shape[1:])), None, None
    if args.images is not None:
        channels = shape[0] if shape is not None and len(shape) == 3 else None
        images = open_dataset(args.images, channels=channels, resize=args.resize,
                              max_pixels=args.max_pixels)
        labels = images.labels
        _check_shape(images.input_shape, shape, "the images")
        _check_forward(seam, shape or images.input_shape, args)       # before decoding
    else:
        images, labels = load_mnist(args.split, args.data, max_bytes=args.max_bytes)
        shape = shape or picture_shape(images.shape[1:])     # MNIST as (1, 28, 28)
        _check_shape(tuple(images.shape[1:]), shape, "the MNIST images")
        _check_forward(seam, shape, args)
    if shape is not None and tuple(shape) != stream.input_shape(images):
        images = stream.mapped(images, lambda x: x.reshape(len(x), *shape), shape)
    normalization = None
    if args.normalize is not None:
        picture = stream.input_shape(images)
        channels = picture[0] if len(picture) == 3 else 1
        normalization = Normalization(*parse_normalize(args.normalize, channels))
    return images, labels, normalization


def _check_shape(given: tuple[int, ...], shape: tuple[int, ...] | None, what: str) -> None:
    """The data's one input must hold as many values as the model's (reshaped to it)."""
    import math

    if shape is not None and math.prod(given) != math.prod(shape):
        raise FeatvisError(f"one input of {what} has shape {given} ({math.prod(given)} values), "
                           f"the model takes {tuple(shape)}: give --input-shape C,H,W of the "
                           "data's values, or --resize H,W for images")


def _check_forward(seam, shape: tuple[int, ...], args: argparse.Namespace) -> None:
    """Run a module once on one zero input of ``shape`` (its layer discovery), before the
    data is decoded: a model that cannot take it is one line naming the flags to change."""
    from ..seam.dispatch import probe

    try:
        probe(seam.model, shape, unit_axis=seam.unit_axis, forward=seam.forward).layer_keys()
    except UserCodeError as exc:
        raise _shape_hint(exc, "--input-shape C,H,W" +
                          (" or --resize H,W" if args.images is not None else "")) from None


def _shape_hint(exc: UserCodeError, flags: str) -> UserCodeError:
    """``exc`` with the flags that change the input's shape, where the model's error may be
    about the shape (not an exit)."""
    if not isinstance(exc.__cause__, (RuntimeError, ValueError, TypeError, IndexError,
                                      AssertionError)):       # torch's own shape asserts
        return exc
    return UserCodeError(f"{first_line(exc)}; change the input's shape with {flags}")


def _check_input_limits(args: argparse.Namespace) -> None:
    """``--input-shape`` and ``--resize`` within ``--max-pixels``; ``--resize`` only with
    ``--images`` (checked before any work)."""
    import math

    limit = getattr(args, "max_pixels", MAX_PIXELS)
    for option, value in (("--input-shape", getattr(args, "input_shape", None)),
                          ("--resize", getattr(args, "resize", None))):
        if value is not None and math.prod(value) > limit:
            raise FeatvisError(f"{option} {','.join(map(str, value))}: "
                               f"{math.prod(value)} values in one input, above "
                               f"--max-pixels {limit}")
    if getattr(args, "resize", None) is not None:
        if len(args.resize) != 2:
            raise FeatvisError("--resize takes H,W (two sizes)")
        if args.images is None:
            raise FeatvisError("--resize resizes the --images; without --images there is "
                               "nothing to resize (MNIST is 28x28)")


def _settings(args: argparse.Namespace, seam, **given):
    """The :class:`~featvis.VisualizeSettings` of the options given on the command line (the
    others keep the library's defaults; a declared option left out is absent from ``args``),
    plugins' parameters in ``options``; ``given`` overrides, e.g. what merged shards were
    mined with."""
    import dataclasses

    from ..pipeline.visualization import VisualizeSettings

    values, declared = vars(args), VisualizeSettings.declared()
    fields = {f.name for f in dataclasses.fields(VisualizeSettings)} - {"options"}
    chosen = {name: values[name] for name in fields & values.keys()
              if values[name] is not None or name in declared}
    options = {name: values[name] for name in declared.keys() - fields if name in values}
    if chosen.get("layers") is not None:           # NAME@AXIS: the axis is the probe's
        chosen["layers"] = [seam.key_from_text(text.rpartition("@")[0] or text)
                            for text in chosen["layers"]]
    if isinstance(chosen.get("units"), dict):      # LAYER:UNIT,...: keys as the probe's
        chosen["units"] = {seam.key_from_text(text): units
                           for text, units in chosen["units"].items()}
    return VisualizeSettings(**(chosen | {"options": options} | given))


def unit_axes(layers: Sequence[str] | None) -> dict[str, int]:
    """The unit axes ``--layers NAME@AXIS,...`` names (``blocks.0@-1``: the last axis)."""
    axes = {}
    for text in layers or ():
        name, at, axis = text.rpartition("@")
        if at:
            try:
                axes[name] = int(axis)
            except ValueError:
                raise FeatvisError(f"--layers {text}: expected NAME@AXIS with an integer "
                                   "axis (e.g. blocks.0@-1 for the last)") from None
    return axes


def _model_and_inputs(args: argparse.Namespace, device: "torch.device", check_out: bool,
                      directions: dict | None = None):
    """``(model, model_path, images, labels, normalization, seam)`` of the command line;
    with ``check_out`` the output folder is checked before the data is read, and so are
    ``directions`` where the model knows its input's shape."""
    from ..data import stream
    from ..seam import directed, probe
    from ..io.runfolder import plan_replacement

    model, model_path = _load_model(args, device)
    axes = unit_axes(getattr(args, "layers", None))
    seam = probe(model, args.input_shape, unit_axis=axes, forward=_forward(args))
    if directions is not None and seam.input_shape is not None:
        directed(seam, directions)
    if check_out:
        from ..io.fileio import check_creatable

        _check_not_input(args.out, "--out", _reading(args))
        check_creatable(args.out, "--out")
        plan_replacement(args.out, force=args.force,                   # before reading data
                         reading=[model_path] if model_path else ())
    images, labels, normalization = _inputs(args, seam)
    return (model, model_path, images, labels, normalization,
            probe(model, stream.input_shape(images), unit_axis=axes, forward=seam.forward))


MAX_DIRECTIONS_BYTES = 2**30     # a --directions file: 256 M float32 values


def _directions(args: argparse.Namespace) -> dict | None:
    """The --directions file's tensors by layer name (``None`` without one)."""
    if args.directions is None:
        return None
    from ..io.safetensors_file import read_tensors

    return read_tensors(args.directions, "directions", MAX_DIRECTIONS_BYTES)


def _forward(args: argparse.Namespace):
    """How the module takes a batch: ``model({NAME: x})`` for --input-key NAME, else
    ``None`` (``model(x)``)."""
    key = args.input_key
    return None if key is None else lambda model, x: model({key: x})


def _print_flags(summary) -> None:
    """A line on stderr per flagged figure of a run (stdout stays its path alone)."""
    for layer in summary["layers"]:
        titles = {s["method"]: s["title"] for s in layer["sections"]}
        for f in layer.get("flags") or []:
            value = "" if f.get("value") is None else f" {f['value']:.3g}"
            print(f"featvis: flag: {layer['name']}, {titles.get(f['method'], f['method'])}: "
                  f"{f['figure']}{value} ({f['explanation']})", file=sys.stderr)


def cmd_visualize(args: argparse.Namespace) -> int:
    from ..pipeline import distributed
    from ..pipeline.visualization import visualize

    device = resolve_device(args.device)
    directions = _directions(args)
    ctx = distributed.from_environment(device, args.timeout) if args.distributed \
        else distributed.Context(device=device)
    with ctx:
        checkpoint = _checkpoint(args, (ctx.rank, ctx.world_size))
        model, model_path, images, labels, normalization, seam = _model_and_inputs(
            args, ctx.device, check_out=ctx.is_main, directions=directions)
        summary = visualize(seam, images, args.out, _settings(args, seam), labels=labels,
                            normalization=normalization, model_path=model_path,
                            force=args.force, progress=not args.quiet, ctx=ctx,
                            directions=directions, loading=_loading(args),
                            checkpoint=checkpoint)
    if ctx.is_main:
        _print_flags(summary)
        print(args.out)
    return 0


def _loading(args: argparse.Namespace):
    """How --images are read while mining (--workers, --loader-batch-size)."""
    from ..data.stream import Loading

    return Loading(workers=args.workers, batch_size=args.loader_batch_size)


def _checkpoint(args: argparse.Namespace, share: tuple[int, int]):
    """The mining state beside --out (--state-every, --resume; --force starts afresh)."""
    from ..pipeline.resume import MiningCheckpoint

    return MiningCheckpoint(args.out, share, every=args.state_every, resume=args.resume,
                            force=args.force)


def cmd_mine(args: argparse.Namespace) -> int:
    from ..data import stream
    from ..io.fileio import holding
    from ..pipeline.shards import mine_shard, save_shard
    from ..pipeline.visualization import shown_units, statistics_plan

    _check_new_file(args.out, "--out", args.force, reading=_reading(args))
    checkpoint = _checkpoint(args, args.shard)
    model, _, images, labels, normalization, seam = _model_and_inputs(
        args, resolve_device(args.device), check_out=False)
    settings = _settings(args, seam, methods=("examples", "statistics") if args.statistics
                         else ("examples",))
    keys = settings.check(seam, n_inputs=len(images))
    inputs = images if normalization is None else stream.mapped(images, normalization.normalize)
    with holding(args.out):      # a second run to the same --out refuses while this one runs
        states = mine_shard(seam, inputs, keys, settings.k,
                            {key: shown_units(seam.layer(key), settings) for key in keys},
                            shard=args.shard, loading=_loading(args), progress=not args.quiet,
                            checkpoint=checkpoint, statistics=statistics_plan(settings),
                            labels=labels, precision=settings.precision)
        save_shard(args.out, states)
        checkpoint.remove()
    print(args.out)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ..data import stream
    from ..pipeline.shards import merge_shards, shard_examples
    from ..pipeline.visualization import shown_units, visualize

    states, info = merge_shards(args.states)                  # refusals before the model
    model, model_path, images, labels, normalization, seam = _model_and_inputs(
        args, resolve_device(args.device), check_out=True)
    mined = dict(zip(info["settings"]["layers"], info["settings"]["units"]))
    layers = list(mined)        # as mined; the default ones are recorded as the default
    gathered = info["settings"].get("statistics") or {}      # the statistics' settings too
    if gathered and gathered["seed"] != args.seed:
        raise FeatvisError(f"--seed {args.seed}: the shards' value bands were drawn with seed "
                           f"{gathered['seed']}; give --seed {gathered['seed']}")
    settings = _settings(args, seam, k=info["settings"]["k"],
                         layers=None if layers == seam.default_layers() else layers,
                         precision=info["settings"].get("precision", "float32"),
                         **{name: value for name, value in gathered.items()
                            if name not in ("classes", "labels_sha256", "seed")})
    for key in settings.check(seam, n_inputs=len(images)):
        info_units = mined[key] if mined[key] is not None else \
            list(range(seam.layer(key).units))
        if shown_units(seam.layer(key), settings) != info_units:
            raise FeatvisError(f"the shards hold {len(mined[key])} units of layer {key}, "
                               "visualize would show others: give --units as to 'featvis "
                               "mine'")
    inputs = images if normalization is None else stream.mapped(images, normalization.normalize)
    visualize(seam, images, args.out, settings, labels=labels, normalization=normalization,
              model_path=model_path, force=args.force, progress=not args.quiet,
              examples=shard_examples(states, info, model, inputs), loading=_loading(args))
    print(args.out)
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from ..seam.dispatch import probe

    model, _ = _load_model(args, resolve_device("cpu"))
    seam = probe(model, args.input_shape, forward=_forward(args))
    try:
        infos = [seam.layer(key) for key in seam.layer_keys()]
    except UserCodeError as exc:
        raise _shape_hint(exc, "--input-shape C,H,W") from None
    rows = [(str(i.name), i.type, str(i.units), "x".join(map(str, i.unit_shape)) or "-",
             "x".join(map(str, i.output_shape))) for i in infos]
    header = ("layer", "type", "units", "unit shape", "output shape")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(5)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import build_gallery

    print(build_gallery(args.run_dir, force=args.force))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..pipeline.demo import (CDBN_DEMO, DEMO_SIZES, NATURAL_SIZES, run_cdbn_demo,
                                 run_demo, run_natural_demo, run_shipped_demo)

    if args.dataset == "natural" and args.model_kind != "dbn":
        raise FeatvisError("--dataset natural is for --model dbn (a DBN with Gaussian "
                           "visible units)")
    if args.images is not None and args.dataset != "natural":
        raise FeatvisError("--images is for --dataset natural")
    if args.model_kind == "cdbn" and args.sizes is not None:
        raise FeatvisError("--sizes is for --model dbn; the convolutional DBN demo's layers "
                           f"are {conv_text(CDBN_DEMO['layers'])} (FILTERSxSIZExPOOL)")
    if args.dataset == "natural":
        index = run_natural_demo(args.out, images=args.images, max_pixels=args.max_pixels,
                                 seed=args.seed,
                                 sizes=args.sizes or NATURAL_SIZES, units=args.units or 100,
                                 device=resolve_device(args.device), progress=not args.quiet,
                                 force=args.force)
    elif args.model_kind == "cdbn":
        index = run_cdbn_demo(args.out, data=args.data, seed=args.seed, units=args.units,
                              epochs=args.epochs,
                              device=resolve_device(args.device), progress=not args.quiet,
                              force=args.force)
    elif args.model_kind in ("cnn", "vit"):
        index = run_shipped_demo(args.model_kind, args.out, data=args.data, seed=args.seed,
                                 units=args.units or 16, device=resolve_device(args.device),
                                 progress=not args.quiet, force=args.force)
    else:
        index = run_demo(args.out, data=args.data, epochs=args.epochs or 10, seed=args.seed,
                         sizes=args.sizes or DEMO_SIZES, units=args.units or 100,
                         device=resolve_device(args.device), progress=not args.quiet,
                         force=args.force)
    from ..io.runfolder import load_summary

    _print_flags(load_summary(Path(index).parent))
    print(index)
    return 0


def _format_evaluation(result: dict) -> str:
    """The per-layer table and the first RBM's likelihood figures, as text."""
    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [f"{'layer':<10}{'units':>7}{'recon. error':>15}{'probe accuracy':>17}"]
    for row in result["layers"]:
        lines.append(f"{row['name']:<10}{row['units']:>7}"
                     f"{fmt(row['reconstruction_error'], '.3f'):>15}"
                     f"{fmt(row['probe_accuracy'], '.2%'):>17}")
    rbm1 = result["rbm1"]
    lines.append(f"RBM 1: pseudo-log-likelihood {rbm1['pseudo_likelihood']:.2f} per case")
    if "log_z" in rbm1:
        lines.append(f"RBM 1: AIS log Z {rbm1['log_z']:.2f} (3 s.e.: "
                     f"{fmt(rbm1['log_z_low'], '.2f')} .. {rbm1['log_z_high']:.2f}, "
                     f"{rbm1['ais_runs']} runs); test log-likelihood "
                     f"{rbm1['test_log_likelihood']:.2f} nats per case")
    return "\n".join(lines)


def _check_run_of(run: Path, fingerprint: str) -> None:
    """``evaluate --run`` must be given a run of the model being evaluated."""
    from ..io.runfolder import load_summary

    if load_summary(run)["model_sha256"] != fingerprint:
        raise FeatvisError(f"--run {run}: that run shows another model (its model_sha256 "
                           "differs from this checkpoint's)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from ..models.evaluation import evaluate_model
    from ..io.fileio import atomic_write_bytes
    from ..io.fingerprint import model_fingerprint
    from ..models import DBN
    from ..report import gallery_files
    from ..io.runfolder import (EVALUATION, EVALUATION_FORMAT, check_run_targets, path_inside,
                                recover, write_into_run)

    device = resolve_device(args.device)
    dbn = DBN.load(args.model, device=device)
    fingerprint = model_fingerprint(dbn)
    if args.json is not None:               # everything the arguments decide, before any work
        _check_new_file(args.json, "--json", args.force, reading=_reading(args))
        if args.run is not None and path_inside(args.json, args.run) is not None:
            raise FeatvisError(f"--json {args.json}: inside --run {args.run}, where featvis "
                               f"writes {EVALUATION} itself")
    if args.run is not None:                # a run folder that cannot take the figures
        recover(args.run)
        _check_run_of(args.run, fingerprint)
        check_run_targets(args.run, [EVALUATION, *gallery_files(args.run)], force=args.force)
    train, test = (_mnist(split, args.data, dbn.sizes[0]) for split in ("train", "test"))
    result = evaluate_model(dbn, train, test, ais_runs=args.ais_runs, seed=args.seed,
                            progress=not args.quiet)
    result = {"format": EVALUATION_FORMAT, "model": str(args.model),
              "model_sha256": fingerprint,
              "data": str(args.data) if args.data else "embedded subset"} | result
    print(_format_evaluation(result))
    payload = json.dumps(result, indent=1, allow_nan=False).encode()
    if args.json is not None:
        atomic_write_bytes(args.json, payload)
    if args.run is not None:
        _check_run_of(args.run, fingerprint)     # again: it may have been replaced
        write_into_run(args.run, {EVALUATION: payload, **gallery_files(args.run, result)},
                       force=args.force)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    """Every registered method: name, title, what a layer needs, its options."""
    from ..methods import registered

    methods = registered()
    width = max(map(len, methods)) + 2
    for method in methods.values():
        needs = ", ".join(sorted(method.requires)) or "nothing"
        options = " ".join(f"--{name.replace('_', '-')}" for name in method.params)
        print(f"{method.name:<{width}}{method.title} (needs: {needs}"
              f"{'; options: ' + options if options else ''})")
    return 0
