"""The ``featvis`` command: thin sub-commands over the library.

Every user error (bad file, bad option, impossible request) prints one line on stderr and
exits with status 2; Ctrl-C exits with 130. Outputs are written atomically. torch is loaded
only once :func:`main` has set ``OMP_WAIT_POLICY`` (see there).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .._version import __version__
from ..errors import FeatvisError, Terminated, UserCodeError, first_line

if TYPE_CHECKING:
    import torch

EXIT_USAGE = 2
MAX_PIXELS = 50_000_000      # --max-pixels' default (featvis.data.MAX_PIXELS, not imported:
MAX_BYTES = 4 * 2**30        # --max-bytes' (featvis.data.MAX_IDX_BYTES); torch loads late)
# The bounds of every count the command line takes, checked before any work (the README's
# table lists them): option -> (lowest, highest).
LIMITS = {
    "--seed": (0, 2**63 - 1), "--epochs": (1, 10_000), "--batch-size": (1, 100_000),
    "--patch-size": (2, 512), "--patches": (1, 10_000_000), "--units": (1, 1_000_000),
    "--k": (1, 1000), "--top": (1, 1000), "--steps": (1, 100_000), "--restarts": (1, 1000),
    "--samples": (1, 10_000), "--ais-runs": (2, 10_000), "--max-pixels": (1, 2**31),
    "--max-bytes": (1, 2**40),
}
MAX_LAYER_UNITS = 65_536                 # one entry of --sizes
MAX_WEIGHTS = 2**28                      # all of --sizes' weights (1 GiB of float32)
CONV_LIMITS = {"filters": (1, 1024), "filter_size": (1, 64), "pool": (1, 16)}
MAX_CONV_LAYERS = 8
MAX_SNAPSHOTS = 64
MAX_TIMEOUT = 86_400.0


def _count(option: str) -> Callable[[str], int]:
    """The argparse type of ``option``: an integer within its :data:`LIMITS`."""
    low, high = LIMITS[option]

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in {low:,}..{high:,}, got "
                                             f"{text!r}")
        return value
    return parse


def _positive_number(text: str) -> float:
    """A finite number > 0 (a learning rate, a norm)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _timeout(text: str) -> float:
    value = _positive_number(text)
    if value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_TIMEOUT:g} seconds, got "
                                         f"{text!r}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _sizes_list(text: str) -> list[int]:
    """``--sizes``: 2 to 64 layer sizes of at most 65,536 units, at most 2^28 weights."""
    sizes = _int_list(text)
    if not 2 <= len(sizes) <= 64 or max(sizes) > MAX_LAYER_UNITS:
        raise argparse.ArgumentTypeError(f"expected 2 to 64 sizes of 1..{MAX_LAYER_UNITS:,} "
                                         f"units, got {text!r}")
    weights = sum(v * h for v, h in zip(sizes, sizes[1:]))
    if weights > MAX_WEIGHTS:
        raise argparse.ArgumentTypeError(f"{text!r} needs {weights:,} weights, above the "
                                         f"{MAX_WEIGHTS:,} (1 GiB of float32) featvis trains")
    return sizes


def _number_list(text: str, kind: type = int) -> list:
    try:
        return [kind(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated {kind.__name__}s, got {text!r}") from None


CONV_LAYER_KEYS = ("filters", "filter_size", "pool")     # a ConvDBN layer's spec


def _conv_layers(text: str) -> list[dict[str, int]]:
    """``FILTERSxSIZExPOOL,...`` (``40x10x2,40x6x2``) as ConvDBN layer specs."""
    layers = [part.strip().lower().split("x") for part in text.split(",")]
    if not all(len(values) == 3 and all(v.isdigit() and int(v) > 0 for v in values)
               for values in layers):
        raise argparse.ArgumentTypeError(f"expected FILTERSxSIZExPOOL,... of positive integers "
                                         f"(e.g. 40x10x2,40x6x2), got {text!r}")
    specs = [dict(zip(CONV_LAYER_KEYS, map(int, values))) for values in layers]
    odd = next((f"{key} {spec[key]}" for spec in specs for key, (low, high)
                in CONV_LIMITS.items() if not low <= spec[key] <= high), None)
    if odd is not None or len(specs) > MAX_CONV_LAYERS:
        bounds = ", ".join(f"{key} {low}..{high}" for key, (low, high) in CONV_LIMITS.items())
        raise argparse.ArgumentTypeError(f"expected at most {MAX_CONV_LAYERS} layers with "
                                         f"{bounds}, got {odd or text!r}")
    return specs


def _conv_text(layers: Sequence[dict]) -> str:
    """ConvDBN layer specs as ``--conv-layers`` spells them."""
    return ",".join("x".join(str(spec[key]) for key in CONV_LAYER_KEYS) for spec in layers)


def _shape(text: str) -> tuple[int, ...]:
    values = _number_list(text)
    if not 1 <= len(values) <= 3 or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected D, H,W or C,H,W (positive), got {text!r}")
    return tuple(values)


def _bounds(text: str) -> tuple[float, float] | str | None:
    """``LO,HI``, ``data`` (the inputs' range) or ``none``."""
    if text in ("data", "none"):
        return None if text == "none" else text
    return _pair(text)


def _pair(text: str) -> tuple[float, float]:
    import math

    values = _number_list(text, float)
    if len(values) != 2 or not all(map(math.isfinite, values)) or values[0] >= values[1]:
        raise argparse.ArgumentTypeError(f"expected two finite numbers LO,HI with LO < HI, "
                                         f"got {text!r}")
    return values[0], values[1]


def _snapshots(text: str) -> list[int]:
    steps = _number_list(text)
    if len(steps) > MAX_SNAPSHOTS or any(step < 0 for step in steps):
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SNAPSHOTS} steps >= 0, got "
                                         f"{text!r}")
    return steps


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer names, got {text!r}")
    return names


def resolve_device(name: str) -> "torch.device":
    """``--device``: ``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA device that is
    not there is an error naming the option."""
    from ..devices import resolve_device as resolve

    try:
        return resolve(name)
    except FeatvisError as exc:
        raise FeatvisError(f"--device {first_line(exc).removeprefix('device ')}") from None


def _device_name(text: str) -> str:
    import re

    if not re.match(r"^(auto|cpu|cuda(:[0-9]+)?)$", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:INDEX, got {text!r}")
    return text


def _add_common_options(p: argparse.ArgumentParser) -> None:
    """--data, --seed, --device and --quiet, shared by the commands that compute."""
    p.add_argument("--data", metavar="DIR", type=Path, default=None,
                   help="folder with the four MNIST IDX files (default: the embedded subset)")
    p.add_argument("--seed", type=_count("--seed"), default=0, help="random seed (default 0)")
    p.add_argument("--device", type=_device_name, default="auto", metavar="auto|cpu|cuda[:i]",
                   help="where to compute (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


_FORCE_RUN = ("replace an output folder that holds files featvis did not write: featvis's own "
              "files are replaced, the others carried into the new folder unchanged")


def _add_force(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--force", action="store_true", help=what)


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


def _check_same_data(saved: dict, current: dict) -> None:
    """``--resume`` must train on the data the checkpoint was trained on."""
    if "data_sha256" in saved:
        if saved["data_sha256"] != current["data_sha256"]:
            raise FeatvisError(f"--resume: the checkpoint was trained on other data "
                               f"({saved.get('source')}, {saved.get('n_train')} images) than "
                               f"{current['source']} ({current['n_train']} images)")
        return
    if (saved.get("source"), saved.get("n_train")) != (current["source"], current["n_train"]):
        raise FeatvisError(f"--resume: the checkpoint was trained on {saved.get('source')} "
                           f"({saved.get('n_train')} images), not {current['source']} "
                           f"({current['n_train']} images)")
    print("featvis train: warning: the checkpoint predates data fingerprints; only the data's "
          "source and size were compared", file=sys.stderr)


TRAIN_DEFAULTS = {"dbn": {"epochs": 10, "batch_size": 100, "recipe": "rbm.m"},   # rbm.m
                  "natural": {"epochs": 5, "batch_size": 100, "recipe": "lee"},
                  "cdbn": {"epochs": 5},     # the convolutional recipe's batch sizes
                  "cnn": {"epochs": 4, "batch_size": 128, "lr": 3e-3}}   # the reference CNN
DBN_SIZES = [784, 1000, 500, 250]
NATURAL_HIDDEN = [400, 200]      # a natural-patch DBN's hidden layers (Lee et al. 2008 scale)
NATURAL_OPTIONS = (("--images", "images", None), ("--patch-size", "patch_size", 14),
                   ("--patches", "patches", 100_000), ("--whiten", "whiten", "1/f"))
# A convolutional DBN's layers by data set (Lee et al. 2009's MNIST first layer, 40 filters of
# 10x10; parts above it), and its natural patches: larger than a DBN's, for its filters to
# slide over, and fewer (each holds many positions).
CDBN_LAYERS = {"mnist": "40x10x2,40x6x2", "natural": "24x10x2,40x6x2"}
CDBN_NATURAL = {"patch_size": 32, "patches": 10_000}
# The options of some kinds only, and what the others take instead.
KIND_OPTIONS = {"--sizes": ("dbn",), "--recipe": ("dbn",), "--conv-layers": ("cdbn",),
                "--resume": ("dbn", "cdbn"), "--dataset natural": ("dbn", "cdbn")}
KIND_INSTEAD = {"dbn": "a DBN's layers are --sizes",
                "cdbn": "a convolutional DBN's layers are --conv-layers FILTERSxSIZExPOOL,... "
                        "and it trains with the convolutional recipe (--lr, --epochs and "
                        "--batch-size adjust it)",
                "cnn": "the reference CNN trains on MNIST with fixed layers and does not "
                       "resume (it takes about a minute)"}


def _train_defaults(args: argparse.Namespace) -> None:
    """Fill the options the user left out with the defaults of ``--model``'s kind (and of
    ``--dataset``), and refuse the options that kind or data set does not have."""
    natural = args.dataset == "natural"
    given = {"--sizes": args.sizes is not None, "--recipe": args.recipe is not None,
             "--conv-layers": args.conv_layers is not None, "--resume": args.resume,
             "--dataset natural": natural}
    for option, kinds in KIND_OPTIONS.items():
        if given[option] and args.model_kind not in kinds:
            raise FeatvisError(f"{option} is for --model {' or '.join(kinds)}; "
                               f"{KIND_INSTEAD[args.model_kind]}")
    cdbn = args.model_kind == "cdbn"
    for option, name, default in NATURAL_OPTIONS:
        if getattr(args, name) is None:
            setattr(args, name, CDBN_NATURAL.get(name, default) if cdbn else default)
        elif not natural and name != "images":
            raise FeatvisError(f"{option} is for --dataset natural")
    if args.images is not None and not natural:
        raise FeatvisError("--images is for --dataset natural (photographs to cut patches "
                           "from); --data names an MNIST folder")
    if cdbn and args.whiten == "zca":
        raise FeatvisError("--whiten zca whitens whole patches, which a convolutional DBN's "
                           "small filters do not see whole: use 1/f (default) or none")
    kind = "natural" if natural and not cdbn else args.model_kind
    for name, value in TRAIN_DEFAULTS[kind].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if cdbn and args.conv_layers is None:
        args.conv_layers = _conv_layers(CDBN_LAYERS[args.dataset])
    if args.model_kind == "dbn" and args.sizes is None:
        args.sizes = [args.patch_size ** 2, *NATURAL_HIDDEN] if natural else DBN_SIZES
    if natural and not cdbn and args.sizes[0] != args.patch_size ** 2:
        raise FeatvisError(f"--sizes starts with {args.sizes[0]} inputs, but patches of "
                           f"{args.patch_size}x{args.patch_size} have {args.patch_size ** 2}")


def _announce(args: argparse.Namespace, recipe=None) -> None:
    """The settings a training run uses, defaults included, once every check has passed."""
    if recipe is None:
        print(f"featvis train: {args.model_kind}, epochs={args.epochs}, "
              f"batch_size={args.batch_size}, lr={args.lr:g}, seed={args.seed}", file=sys.stderr)
        return
    data = (f"natural patches {args.patch_size}x{args.patch_size} x {args.patches}, whiten "
            f"{args.whiten}" if args.dataset == "natural" else "MNIST")
    fields = ", ".join(f"{k}={v}" for k, v in recipe.to_dict().items())
    model, how = (f"dbn {'-'.join(map(str, args.sizes))}", f"recipe {args.recipe}") \
        if args.model_kind == "dbn" else \
        (f"cdbn {_conv_text(args.conv_layers)}", "the convolutional recipe")
    print(f"featvis train: {model} on {data}; {how}: {fields}", file=sys.stderr)


def _train_cnn(args: argparse.Namespace, out: Path) -> int:
    from ..data.mnist import load_mnist, mnist_info
    from ..io.fileio import holding
    from ..models import ReferenceCNN

    images, labels = load_mnist("train", args.data)
    model = ReferenceCNN(seed=args.seed).to(resolve_device(args.device))
    model.data_info = mnist_info(args.data, images)
    _announce(args)
    with holding(out):
        model.fit(images, labels, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  seed=args.seed, progress=not args.quiet)
        model.test_accuracy = {"test": model.score(*load_mnist("test", args.data))}
        model.save(out)
    result = model.test_accuracy["test"]
    print(f"test accuracy {100 * result['accuracy']:.2f}% ({result['correct']}/"
          f"{result['total']})", file=sys.stderr)
    print(out)
    return 0


def _training_data(args: argparse.Namespace):
    """``(inputs, data_info, whitening)`` of ``--dataset``: MNIST's training images, or
    natural patches cut from ``--images`` (or the bundled photographs) and whitened; flat,
    as a DBN reads them."""
    from ..data.mnist import mnist_info

    if args.dataset == "natural":
        from ..data.natural import natural_info, training_inputs

        inputs, patches, whitening = training_inputs(
            args.images, size=args.patch_size, count=args.patches, seed=args.seed,
            whiten=args.whiten, max_pixels=args.max_pixels)
        return inputs, natural_info(patches, inputs), whitening
    images, _ = _mnist("train", args.data, args.sizes[0] if args.sizes else None)
    return images, mnist_info(args.data, images), None


def _train_recipe(args: argparse.Namespace):
    """The training recipe of a DBN (``--recipe`` preset) or convolutional DBN (the
    convolutional recipe for its visible units), with ``--epochs``, ``--batch-size``,
    ``--seed`` and ``--lr`` over it."""
    given = dict(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                 **({} if args.lr is None else {"lr": args.lr}))
    if args.model_kind == "cdbn":
        from ..models.conv.crbm import conv_recipe

        return conv_recipe("gaussian" if args.dataset == "natural" else "binary", **given)
    from ..models.training import TrainingRecipe

    return TrainingRecipe.preset(args.recipe, **given)


def _new_model(args: argparse.Namespace, recipe, whitening):
    """The untrained DBN or convolutional DBN of the options (Gaussian visible units on
    natural patches)."""
    from ..models import DBN, ConvDBN

    gaussian = args.dataset == "natural"
    visible = "gaussian" if gaussian else "binary"
    sigma = (recipe.for_layer(1).sigma or 1.0) if gaussian else 1.0
    if args.model_kind == "cdbn":
        return ConvDBN(args.conv_layers, visible=visible, sigma=sigma, seed=args.seed)
    dbn = DBN(args.sizes, visible=visible, sigma=sigma, seed=args.seed)
    dbn.whitening = whitening
    return dbn


def _resumed(args: argparse.Namespace, out: Path, device: "torch.device"):
    """The model of the checkpoint at ``out``, refused unless it is of ``--model``'s kind and
    layers."""
    from ..models.checkpoint import kind_of, load

    model = load(out, device=device)
    kind = kind_of(model)
    if kind != args.model_kind:
        raise FeatvisError(f"--resume: {out} holds a {kind} checkpoint, not a "
                           f"{args.model_kind} one")
    if kind == "dbn" and model.sizes != args.sizes:
        raise FeatvisError(f"--resume: checkpoint has layers {model.sizes}, asked {args.sizes}")
    if kind == "cdbn" and model.layer_specs != args.conv_layers:
        raise FeatvisError(f"--resume: checkpoint has layers {_conv_text(model.layer_specs)}, "
                           f"asked {_conv_text(args.conv_layers)}")
    return model


def cmd_train(args: argparse.Namespace) -> int:
    from ..data.tensors import picture_shape
    from ..io.fileio import holding

    out: Path = args.out
    _train_defaults(args)
    _check_new_file(out, "--out", args.force, args.resume)
    if args.model_kind == "cnn":
        return _train_cnn(args, out)
    recipe = _train_recipe(args)
    device = resolve_device(args.device)
    model = _resumed(args, out, device) if args.resume else None
    inputs, data_info, whitening = _training_data(args)
    if model is None:
        model = _new_model(args, recipe, whitening).to(device)
    else:
        _check_same_data(model.data_info, data_info)
        print(f"resuming after layer {model.trained_layers} of {model.n_layers}",
              file=sys.stderr)
    model.data_info = data_info
    if args.model_kind == "cdbn":          # pictures; the whitening is the patches' own
        inputs = inputs.view(len(inputs), *picture_shape(inputs.shape[1:]))
        if whitening is not None:
            model.data_info = {**data_info, "whitening": whitening.config()}

    def log_epoch(layer: int, entry: dict) -> None:
        print(f"layer {layer} epoch {entry['epoch']:3d}: reconstruction error "
              f"{entry['error_sum']:.1f} ({entry['error_per_case']:.3f} per case)",
              file=sys.stderr)

    def checkpoint(trained, layer: int) -> None:
        trained.save(out)
        print(f"layer {layer} done; checkpoint saved to {out}", file=sys.stderr)

    _announce(args, recipe)
    with holding(out):           # a second run to the same --out refuses while this one runs
        model.fit(inputs, resume=args.resume, progress=not args.quiet, on_epoch=log_epoch,
                  on_layer=checkpoint, **recipe.to_dict())
    print(out)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _ais_runs(text: str) -> int:
    if text.strip() == "0":
        return 0
    try:
        return _count("--ais-runs")(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (AIS needs at least 2 runs; 0 skips it)") \
            from None


def _methods(text: str) -> list[str]:
    from ..pipeline.visualization import METHODS

    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method {unknown[0] if unknown else text!r}: choose from {','.join(METHODS)}")
    return names


def _load_model(args: argparse.Namespace, device: "torch.device"):
    """The model of ``--model``: a user's ``module:factory`` (with ``--weights``), or a
    built-in kind read from the positional checkpoint (any featvis checkpoint); ``--model
    cnn`` without one is the reference CNN with the weights shipped in the package."""
    from ..models.checkpoint import KINDS, load
    from ..models import reference_cnn
    from ..models.usermodel import load_factory, load_weights

    spec = args.model_spec
    if ":" in spec:
        if args.model is not None:
            raise FeatvisError(f"give either a checkpoint or --model {spec}, not both")
        model = load_factory(spec)
        if args.weights is not None:
            load_weights(model, args.weights)
        return model.to(device), args.weights
    if spec not in ("dbn", *KINDS):
        raise FeatvisError(f"--model {spec!r}: unknown built-in kind (dbn, "
                           f"{', '.join(KINDS)}), and no package.module:factory")
    if args.weights is not None:
        raise FeatvisError("--weights is for --model package.module:factory; a checkpoint "
                           "holds its own weights")
    if args.model is None and spec == "cnn":
        return reference_cnn(pretrained=True, device=device), None
    if args.model is None:
        raise FeatvisError("give a checkpoint written by 'featvis train', or --model cnn, or "
                           "--model package.module:factory")
    return load(args.model, device=device), args.model


def _inputs(args: argparse.Namespace, seam) -> tuple["torch.Tensor", object, object]:
    """The images a command shows, shaped for the model, their labels (or None) and their
    normalization."""
    from ..data.normalization import Normalization, parse_normalize
    from ..data.mnist import load_mnist
    from ..data.images import open_images
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
        source = open_images(args.images, channels=channels, resize=args.resize,
                             max_pixels=args.max_pixels, max_bytes=args.max_bytes)
        _check_shape(source.input_shape, shape, "the images")
        _check_forward(seam, shape or source.input_shape, args)       # before decoding
        images, labels = source.load(), source.labels
    else:
        images, labels = load_mnist(args.split, args.data)
        shape = shape or picture_shape(images.shape[1:])     # MNIST as (1, 28, 28)
        _check_shape(tuple(images.shape[1:]), shape, "the MNIST images")
        _check_forward(seam, shape, args)
    if shape is not None:
        images = images.reshape(len(images), *shape)
    normalization = None
    if args.normalize is not None:
        channels = images.shape[1] if images.dim() == 4 else 1
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
        probe(seam.model, shape).layer_keys()
    except UserCodeError as exc:
        raise _shape_hint(exc, "--input-shape C,H,W" +
                          (" or --resize H,W" if args.images is not None else "")) from None


def _shape_hint(exc: UserCodeError, flags: str) -> UserCodeError:
    """``exc`` with the flags that change the input's shape, where the model's error may be
    about the shape (not an exit)."""
    if not isinstance(exc.__cause__, (RuntimeError, ValueError, TypeError, IndexError)):
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
    """The :class:`~featvis.VisualizeSettings` of the options the command has
    (the others keep their defaults); ``given`` overrides, e.g. what merged shards were
    mined with."""
    import dataclasses

    from ..pipeline.visualization import VisualizeSettings

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(VisualizeSettings)
              if getattr(args, f.name, None) is not None}
    if "layers" in values:
        values["layers"] = [seam.key_from_text(text) for text in values["layers"]]
    if "snapshots" in values:
        values["snapshots"] = tuple(values["snapshots"])
    return VisualizeSettings(**(values | given))


def _model_and_inputs(args: argparse.Namespace, device: "torch.device", check_out: bool):
    """``(model, model_path, images, labels, normalization, seam)`` of the command line;
    with ``check_out`` the output folder is checked before the data is read."""
    from ..seam.dispatch import probe
    from ..io.runfolder import plan_replacement

    model, model_path = _load_model(args, device)
    seam = probe(model, args.input_shape)
    if check_out:
        from ..io.fileio import check_creatable

        _check_not_input(args.out, "--out", _reading(args))
        check_creatable(args.out, "--out")
        plan_replacement(args.out, force=args.force,                   # before reading data
                         reading=[model_path] if model_path else ())
    images, labels, normalization = _inputs(args, seam)
    return model, model_path, images, labels, normalization, probe(model, images.shape[1:])


def cmd_visualize(args: argparse.Namespace) -> int:
    from ..pipeline import distributed
    from ..pipeline.visualization import visualize

    device = resolve_device(args.device)
    ctx = distributed.from_environment(device, args.timeout) if args.distributed \
        else distributed.Context(device=device)
    with ctx:
        model, model_path, images, labels, normalization, seam = _model_and_inputs(
            args, ctx.device, check_out=ctx.is_main)
        visualize(model, images, args.out, _settings(args, seam), labels=labels,
                  normalization=normalization, model_path=model_path, force=args.force,
                  progress=not args.quiet, ctx=ctx)
    if ctx.is_main:
        print(args.out)
    return 0


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/N, got {text!r}") from None
    if not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"expected i/N with 0 <= i < N, got {text!r}")
    return shard


def cmd_mine(args: argparse.Namespace) -> int:
    from ..io.fileio import holding
    from ..pipeline.shards import mine_shard, save_shard
    from ..pipeline.visualization import shown_units

    _check_new_file(args.out, "--out", args.force, reading=_reading(args))
    model, _, images, _, normalization, seam = _model_and_inputs(
        args, resolve_device(args.device), check_out=False)
    settings = _settings(args, seam, methods=("examples",))
    keys = settings.check(seam, n_inputs=len(images))
    inputs = images if normalization is None else normalization.normalize(images)
    with holding(args.out):      # a second run to the same --out refuses while this one runs
        states = mine_shard(model, inputs, keys, settings.k,
                            {key: shown_units(seam.layer(key), settings) for key in keys},
                            shard=args.shard)
        save_shard(args.out, states)
    print(args.out)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ..pipeline.shards import merge_shards, shard_examples
    from ..pipeline.visualization import shown_units, visualize

    states, info = merge_shards(args.states)                  # refusals before the model
    model, model_path, images, labels, normalization, seam = _model_and_inputs(
        args, resolve_device(args.device), check_out=True)
    mined = dict(zip(info["settings"]["layers"], info["settings"]["units"]))
    layers = list(mined)        # as mined; the default ones are recorded as the default
    settings = _settings(args, seam, k=info["settings"]["k"],
                         layers=None if layers == seam.default_layers() else layers)
    for key in settings.check(seam, n_inputs=len(images)):
        info_units = mined[key] if mined[key] is not None else \
            list(range(seam.layer(key).units))
        if shown_units(seam.layer(key), settings) != info_units:
            raise FeatvisError(f"the shards hold {len(mined[key])} units of layer {key}, "
                               "visualize would show others: give --units as to 'featvis "
                               "mine'")
    inputs = images if normalization is None else normalization.normalize(images)
    visualize(model, images, args.out, settings, labels=labels, normalization=normalization,
              model_path=model_path, force=args.force, progress=not args.quiet,
              examples=shard_examples(states, info, model, inputs))
    print(args.out)
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from ..seam.dispatch import probe

    model, _ = _load_model(args, resolve_device("cpu"))
    seam = probe(model, args.input_shape)
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
    from ..pipeline.demo import (CDBN_DEMO, NATURAL_SIZES, run_cdbn_demo, run_cnn_demo, run_demo,
                                 run_natural_demo)

    if args.dataset == "natural" and args.model_kind != "dbn":
        raise FeatvisError("--dataset natural is for --model dbn (a DBN with Gaussian "
                           "visible units)")
    if args.images is not None and args.dataset != "natural":
        raise FeatvisError("--images is for --dataset natural")
    if args.model_kind == "cdbn" and args.sizes is not None:
        raise FeatvisError("--sizes is for --model dbn; the convolutional DBN demo's layers "
                           f"are {_conv_text(CDBN_DEMO['layers'])} (FILTERSxSIZExPOOL)")
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
    elif args.model_kind == "cnn":
        index = run_cnn_demo(args.out, data=args.data, seed=args.seed, units=args.units or 16,
                             device=resolve_device(args.device), progress=not args.quiet,
                             force=args.force)
    else:
        index = run_demo(args.out, data=args.data, epochs=args.epochs or 10, seed=args.seed,
                         sizes=args.sizes or DBN_SIZES, units=args.units or 100,
                         device=resolve_device(args.device), progress=not args.quiet,
                         force=args.force)
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



def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="featvis", description="See what every unit of a deep network has learned.")
    parser.add_argument("--version", action="version", version=f"featvis {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a DBN or convolutional DBN greedily (or the "
                                     "reference CNN) on MNIST",
                       description="Train a deep belief net one RBM at a time (rbm.m recipe), "
                                   "or with --model cdbn a convolutional DBN with "
                                   "probabilistic max-pooling one layer at a time (Lee et al. "
                                   "2009; the convolutional recipe), saving a checkpoint "
                                   "after every layer; or with --model cnn the reference CNN "
                                   "(Adam, seeded; test accuracy printed; no --resume).")
    p.add_argument("--model", dest="model_kind", choices=["dbn", "cdbn", "cnn"],
                   default="dbn", help="what to train (default dbn)")
    _add_common_options(p)
    _add_sizes(p)
    p.add_argument("--conv-layers", type=_conv_layers, default=None,
                   metavar="FILTERSxSIZExPOOL,...",
                   help=f"--model cdbn: per layer, from the input up, the number of filters, "
                        f"their side and the pooling block's side (default "
                        f"{CDBN_LAYERS['mnist']}; {CDBN_LAYERS['natural']} for natural)")
    p.add_argument("--dataset", choices=["mnist", "natural"], default="mnist",
                   help="mnist (default; --data names its folder) or natural: patches of "
                        "photographs (--images DIR, default the grey photographs bundled "
                        "with scikit-image), a model with Gaussian visible units")
    p.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="--dataset natural: a folder of PNG/JPEG photographs")
    _add_max_pixels(p)
    p.add_argument("--patch-size", type=_count("--patch-size"), default=None,
                   help=f"--dataset natural: patch side in pixels (default 14; "
                        f"{CDBN_NATURAL['patch_size']} for cdbn)")
    p.add_argument("--patches", type=_count("--patches"), default=None,
                   help=f"--dataset natural: number of patches (default 100000; "
                        f"{CDBN_NATURAL['patches']} for cdbn)")
    p.add_argument("--whiten", choices=["1/f", "zca", "none"], default=None,
                   help="--dataset natural: 1/f filter on whole photographs (default), ZCA "
                        "on the patches (not for cdbn), or none")
    p.add_argument("--recipe", choices=["rbm.m", "hinton", "lee"], default=None,
                   help="DBN training recipe (default rbm.m for mnist, lee for natural; see "
                        "the README's table)")
    p.add_argument("--epochs", type=_count("--epochs"), default=None,
                   help="epochs (per layer for a DBN or cdbn; default 10 for dbn, 5 for "
                        "cdbn, 4 for cnn)")
    p.add_argument("--batch-size", type=_count("--batch-size"), default=None,
                   help="default 100 for dbn, 128 for cnn; cdbn: the recipe's per layer (100, "
                        "25 for layer 2, 10 for a natural first layer); a value given applies "
                        "to every layer")
    p.add_argument("--lr", type=_positive_number, default=None,
                   help="learning rate (default: the recipe's, 0.1 for rbm.m; 0.5 for cdbn "
                        "on mnist, 0.02 for a natural first layer; 0.003 for cnn)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint path (.safetensors)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint at --out (skips finished layers)")
    _add_force(p, "overwrite an existing file at --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("visualize", help="run the methods over a model's layers",
                       description="Write one PNG grid per method per layer, per-unit "
                                   "pictures, summary.json and the gallery into --out "
                                   "(atomically), for a featvis checkpoint or any nn.Module. "
                                   "Under torchrun, --distributed shares the work among the "
                                   "processes; rank 0 writes what one process would.")
    _add_model_options(p)
    _add_data_options(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _add_unit_options(p)
    _add_method_options(p)
    p.add_argument("--distributed", action="store_true",
                   help="one of the processes of 'torchrun --nproc_per_node=N -m featvis "
                        "visualize ...' (gloo on CPU, nccl on CUDA)")
    p.add_argument("--timeout", type=_timeout, default=600.0, metavar="SECONDS",
                   help="--distributed: end every rank, naming the culprit, when another "
                        "stops answering for this long (default 600)")
    _add_force(p, _FORCE_RUN)
    p.set_defaults(func=cmd_visualize)

    p = sub.add_parser("mine", help="mine one shard of the dataset examples (offline shards)",
                       description="Mine the top examples of shard i of N (fixed global "
                                   "batches of 1000 inputs, batch b in shard b %% N) into one "
                                   "file; 'featvis merge' combines all N into a run.")
    _add_model_options(p)
    _add_data_options(p)
    _add_unit_options(p)
    p.add_argument("--shard", type=_shard, required=True, metavar="i/N",
                   help="this shard: i of N (0 <= i < N)")
    p.add_argument("--out", type=Path, required=True, help="shard file (.safetensors)")
    _add_force(p, "overwrite an existing file at --out")
    p.set_defaults(func=cmd_mine)

    p = sub.add_parser("merge", help="merge the shards of 'featvis mine' and visualize",
                       description="Merge every shard of one mining run (all N, once each, "
                                   "of the same model, data and settings), then continue as "
                                   "'featvis visualize' with the merged examples.")
    p.add_argument("states", type=Path, nargs="+", metavar="STATE",
                   help="the shard files written by 'featvis mine'")
    _add_model_options(p, positional=False)
    _add_data_options(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--units", type=_count("--units"), default=None,
                   help="as given to 'featvis mine'")
    _add_method_options(p)
    _add_force(p, _FORCE_RUN)
    p.set_defaults(func=cmd_merge, layers=None, k=9)

    p = sub.add_parser("layers", help="list a model's layers (keys, types, units, shapes)",
                       description="One forward pass of a zero input; every module whose "
                                   "output is one tensor, in forward order.")
    _add_model_options(p)
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("report", help="(re)build the HTML gallery of a visualize output folder",
                       description="Rebuild index.html and the layer and unit pages from "
                                   "summary.json and the PNGs of a 'featvis visualize' run.")
    p.add_argument("run_dir", type=Path, help="folder written by 'featvis visualize'")
    _add_force(p, "rebuild even where a page was edited or replaced (kept as NAME.kept)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("evaluate", help="figures of model quality per layer",
                       description="Reconstruction error and linear-probe accuracy per layer; "
                                   "pseudo-likelihood and AIS log-likelihood of the first RBM.")
    p.add_argument("model", type=Path, help="checkpoint written by 'featvis train'")
    _add_common_options(p)
    p.add_argument("--ais-runs", type=_ais_runs, default=100,
                   help="AIS runs for log Z of the first RBM (0 skips AIS; default 100)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--run", type=Path, default=None,
                   help="a 'featvis visualize' folder: store the figures there and show them "
                        "in its gallery")
    _add_force(p, "overwrite an existing --json file; write into --run even where a page was "
                  "edited or replaced (kept as NAME.kept)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="train the reference DBN (or a convolutional DBN, or take "
                                    "the reference CNN), visualize it, write the gallery",
                       description="End to end on the embedded MNIST subset (or --data): "
                                   "train a 784-1000-500-250 DBN (or, with --model cdbn, a "
                                   "two-layer convolutional DBN; with --model cnn, take the "
                                   "reference CNN shipped with featvis), run every method on "
                                   "its layers and print the path of the gallery.")
    _add_common_options(p)
    p.add_argument("--out", type=Path, default=Path("featvis-demo"),
                   help="output folder (default ./featvis-demo)")
    p.add_argument("--epochs", type=_count("--epochs"), default=None,
                   help="epochs per layer (default 10 for the DBN, 5 for the cdbn)")
    _add_sizes(p)
    p.add_argument("--units", type=_count("--units"), default=None,
                   help="units (channels) shown per layer (default 100 for the DBN, all "
                        "filters of the cdbn, 16 for the CNN)")
    p.add_argument("--model", dest="model_kind", choices=["dbn", "cdbn", "cnn"], default="dbn",
                   help="dbn: train the reference DBN (default); cdbn: a convolutional DBN "
                        "with probabilistic max-pooling (Lee et al. 2009); cnn: the reference "
                        "CNN with the weights shipped in featvis, no training")
    p.add_argument("--dataset", choices=["mnist", "natural"], default="mnist",
                   help="natural: a sparse DBN with Gaussian visible units on whitened "
                        "patches of photographs (Lee, Ekanadham & Ng 2008), 196-400-200")
    p.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="--dataset natural: your photographs (default: the grey ones "
                        "bundled with scikit-image)")
    _add_max_pixels(p)
    _add_force(p, _FORCE_RUN)
    p.set_defaults(func=cmd_demo)
    return parser


def _add_sizes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=_sizes_list, default=None,
                   help="layer sizes, input first (default 784,1000,500,250)")
    p.add_argument("--layers", type=_sizes_list, default=None, dest="old_sizes",
                   help=argparse.SUPPRESS)          # the old spelling of --sizes


def _add_model_options(p: argparse.ArgumentParser, positional: bool = True) -> None:
    if positional:
        p.add_argument("model", type=Path, nargs="?", default=None,
                       help="checkpoint written by 'featvis train'")
    else:
        p.add_argument("--checkpoint", dest="model", type=Path, default=None,
                       help="the checkpoint the shards were mined from")
    p.add_argument("--model", dest="model_spec", default="dbn", metavar="KIND|MODULE:FACTORY",
                   help="a built-in kind read from the checkpoint (dbn; cdbn; cnn, which "
                        "without a checkpoint is the reference CNN shipped with featvis) or a "
                        "user's package.module:factory, called with no arguments")
    p.add_argument("--weights", type=Path, default=None,
                   help="safetensors state_dict for --model MODULE:FACTORY (no pickles)")
    p.add_argument("--input-shape", type=_shape, default=None, metavar="C,H,W",
                   help="one input's shape, for a module (default: from the data); at most "
                        "--max-pixels values")
    _add_max_pixels(p)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    """The inputs of visualize, mine and merge: MNIST, the user's images, normalization."""
    _add_common_options(p)
    p.add_argument("--split", choices=["train", "test"], default="train",
                   help="MNIST split mined for dataset examples (default train)")
    p.add_argument("--images", type=Path, default=None, metavar="DIR|FILE.npy",
                   help="inputs instead of MNIST: a folder of PNG/JPEG images (class "
                        "subfolders allowed) or a .npy array (uint8 is divided by 255); for "
                        "a model of natural patches, the photographs its patches were cut "
                        "from (default: those its checkpoint names)")
    p.add_argument("--resize", type=_shape, default=None, metavar="H,W",
                   help="resize every image of --images to H,W (at most --max-pixels)")
    p.add_argument("--max-bytes", type=_count("--max-bytes"), default=MAX_BYTES,
                   metavar="BYTES", help="refuse inputs that take more memory than this once "
                                         f"decoded (float32; default {MAX_BYTES}, 4 GiB)")
    p.add_argument("--normalize", default=None, metavar="MEAN,STD",
                   help="feed the model (x - mean) / std (MEAN,STD, or C means then C stds); "
                        "pictures are shown de-normalized")


def _add_max_pixels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=_count("--max-pixels"), default=MAX_PIXELS,
                   metavar="N", help="refuse an image of more pixels (HxW), read from its "
                                     f"header before decoding (default {MAX_PIXELS:,})")


def _add_unit_options(p: argparse.ArgumentParser) -> None:
    """Which layers and units are mined and shown, and how many examples each."""
    p.add_argument("--layers", type=_names, default=None,
                   help="layer keys: hidden depths of a DBN (1 = first hidden layer), depths "
                        "of a cdbn (its pooling maps; D.detection: its detection maps), module "
                        "names of any other model (default: every layer of a DBN, every "
                        "pooling layer of a cdbn, every Conv2d and Linear of a module)")
    p.add_argument("--units", type=_count("--units"), default=None,
                   help="visualize the first N units of each layer (default: all)")
    p.add_argument("--k", type=_count("--k"), default=9, help="dataset examples per unit")


def _add_method_options(p: argparse.ArgumentParser) -> None:
    """The methods and their knobs (visualize, merge)."""
    p.add_argument("--rho", type=_positive_number, default=None,
                   help="maximization's norm (default: a DBN's input norm, else the mean "
                        "norm of the inputs)")
    p.add_argument("--transforms", choices=["standard"], default=None,
                   help="maximize through random pad, jitter, scale and rotate (lucent's "
                        "standard transforms)")
    p.add_argument("--spatial", choices=["positive", "mean", "center"], default="positive",
                   help="maximization's objective for a channel: the mean of its map's "
                        "positive part (default), its mean, or its centre position")
    p.add_argument("--snapshots", type=_snapshots, default=(), metavar="STEP,...",
                   help="also show maximization's pictures after these steps")
    p.add_argument("--bounds", type=_bounds, default="data", metavar="LO,HI|data|none",
                   help="keep maximization's pixels in LO..HI (default data: the inputs' "
                        "range; none: the sphere alone)")
    p.add_argument("--methods", type=_methods, default=None,
                   help="comma-separated subset of: examples, maximize, sampling, filters, "
                        "filter_views, deconvnet, combination (default: all that apply to "
                        "each layer)")
    p.add_argument("--top", type=_count("--top"), default=10,
                   help="ranked filters / linear-combination terms per unit (default 10)")
    p.add_argument("--steps", type=_count("--steps"), default=300, help="maximization steps")
    p.add_argument("--restarts", type=_count("--restarts"), default=9,
                   help="maximization restarts")
    p.add_argument("--samples", type=_count("--samples"), default=100, help="samples per unit")
    p.add_argument("--variant", choices=["one-hot", "gibbs"], default="one-hot",
                   help="unit-sampling variant (default one-hot)")


def _sizes(args: argparse.Namespace) -> None:
    """``--sizes``, or its old spelling ``--layers`` with a warning."""
    if args.old_sizes is not None:
        if args.sizes is not None:
            raise FeatvisError("give --sizes only (--layers is its old spelling)")
        print(f"featvis {args.command}: warning: --layers is now --sizes (layer sizes); "
              "--layers will mean layer keys, as in 'featvis visualize'", file=sys.stderr)
        args.sizes = args.old_sizes


def _terminated(signum: int, frame: object) -> None:
    raise Terminated(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    # Spinning OpenMP threads make torch an order of magnitude slower whenever another
    # process shares the cores; passive waiting costs little when they are idle. Set before
    # torch is loaded, and never over the user's own setting (the library itself never does).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # A distributed run reports a failed peer in one line; c10d's own dumps would not.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    # SIGTERM unwinds like Ctrl-C, so that temporaries are removed on the way out.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    try:
        return _run(func, args)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``func(args)``, with every user error as one line on stderr and exit status 2."""
    try:
        if hasattr(args, "old_sizes"):
            _sizes(args)
        _check_input_limits(args)
        return func(args)
    except KeyboardInterrupt:
        print("featvis: interrupted", file=sys.stderr)
        return 130
    except UserCodeError as exc:
        spec = getattr(args, "model_spec", "")
        named = f"--model {spec}: " if ":" in spec and not str(exc).startswith("--model") \
            else ""
        print(f"featvis {args.command}: error: {named}{first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        raise
    except SystemExit as exc:       # the user's code outside the seam's guard
        print(f"featvis {args.command}: error: the model's code called sys.exit({exc.code!r})",
              file=sys.stderr)
        return EXIT_USAGE
    except FeatvisError as exc:
        print(f"featvis {args.command}: error: {first_line(exc)}", file=sys.stderr)
        # 1 where another process of a distributed run failed, not this one's usage.
        return getattr(exc, "exit_status", EXIT_USAGE)
    except (ValueError, OSError) as exc:
        print(f"featvis {args.command}: error: {first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE

