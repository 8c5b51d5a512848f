"""The ``featvis`` command's parser. The options of the methods and of a run's settings are
generated from their declarations (:meth:`featvis.VisualizeSettings.declared`: featvis's
methods and the plugins registered before the parser is built), so their names, bounds,
choices, defaults and help are written once."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterable

from .._version import __version__
from ..data.idx import MAX_IDX_BYTES as MAX_BYTES
from ..data.images import MAX_PIXELS
from ..methods import registered
from ..params import Interval, Param
from ..pipeline.resume import STATE_EVERY
from ..pipeline.visualization import STATISTICS_PLAN, VisualizeSettings
from . import argtypes
from .argtypes import EXIT_USAGE
from .commands import (cmd_demo, cmd_evaluate, cmd_layers, cmd_merge, cmd_methods, cmd_mine,
                       cmd_report, cmd_visualize)
from .recipes import CDBN_LAYERS, CDBN_NATURAL, cmd_train

__all__ = ["build_parser", "bounds"]
_FORCE_RUN = ("replace an output folder that holds files featvis did not write: featvis's own "
              "files are replaced, the others carried into the new folder unchanged")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def bounds() -> dict[str, tuple[int, int]]:
    """Every bounded count of the command line: option -> (lowest, highest), the declared
    ones (settings, then methods) and those of the command line alone
    (:data:`featvis.cli.argtypes.LIMITS`)."""
    declared = {_flag(name): (int(param.constraint.low), int(param.constraint.high))
                for name, (param, _) in VisualizeSettings.declared().items()
                if isinstance(param.constraint, Interval) and param.constraint.kind is int
                and param.constraint.high is not None}
    return declared | argtypes.LIMITS


def _declared(name: str) -> tuple[Param, list[str]]:
    """The declaration of ``name`` among the methods registered now (plugins included) and
    the methods that take it."""
    return VisualizeSettings.declared()[name]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_declared(p: Any, name: str, param: Param, methods: Iterable[str] = (), *,
                  default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
    """``--name`` for a declared parameter, parsed and bounded by its constraint. Left out,
    it is absent from the namespace (``default=SUPPRESS``), so the library's default applies
    (and a value such as ``--bounds none`` is never mistaken for "not given")."""
    constraint = param.constraint
    text = help or param.help
    if help is None and param.default not in (None, ()):
        text += f" (default {param.default})"
    methods = list(methods)
    if len(methods) > 1:
        text += f"; for {', '.join(methods)}"
    metavar = "{" + ",".join(constraint.choices) + "}" if constraint.choices \
        else constraint.metavar
    p.add_argument(_flag(name), type=constraint.parse, default=default, metavar=metavar,
                   help=text)


def _add_plugins_option(p: argparse.ArgumentParser) -> None:
    # Read from the command line before the parser is built (featvis.cli.plugins); here for
    # --help and so that argparse accepts it.
    p.add_argument("--plugins", metavar="MODULE,...", default=argparse.SUPPRESS,
                   help="import these modules first: each registers methods with "
                        "featvis.methods.register (installed packages' entry points of the "
                        "group featvis.methods are loaded too)")


def _add_common_options(p: argparse.ArgumentParser) -> None:
    """--data, --seed, --device and --quiet, shared by the commands that compute."""
    p.add_argument("--data", metavar="DIR", type=Path, default=None,
                   help="folder with the four MNIST IDX files (default: the embedded subset)")
    seed = _declared("seed")[0]
    _add_declared(p, "seed", seed, default=seed.default, help=f"{seed.help} (default "
                                                                f"{seed.default})")
    p.add_argument("--device", type=argtypes.device_name, default="auto",
                   metavar="auto|cpu|cuda[:i]",
                   help="where to compute (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_force_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--force", action="store_true", help=what)


def _add_resume_options(p: argparse.ArgumentParser) -> None:
    """The options of a resumable mining pass (featvis.pipeline.resume)."""
    p.add_argument("--state-every", type=argtypes.count("--state-every"),
                   default=STATE_EVERY, metavar="N",
                   help="save the mining state beside --out (.OUT.featvis-mining.safetensors) "
                        f"every N batches of 1000 inputs (default {STATE_EVERY}; 0: never); "
                        "kept after a kill, removed when the run completes")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run from its mining state (same model, data and "
                        "settings), to the bytes an uninterrupted run writes")


def _add_unit_options(p: argparse.ArgumentParser) -> None:
    """Which layers and units are mined and shown."""
    p.add_argument("--layers", type=argtypes.layer_names, default=None,
                   help="layer keys: hidden depths of a DBN (1 = first hidden layer), depths "
                        "of a cdbn (its pooling maps; D.detection: its detection maps), module "
                        "names of any other model, NAME@AXIS naming the axis of its output "
                        "that holds the units where featvis cannot tell (blocks.0@-1: the "
                        "last; default: every layer of a DBN, every pooling layer of a cdbn, "
                        "every Conv2d and Linear of a module)")
    _add_declared(p, "units", *_declared("units"))


def _add_method_options(p: argparse.ArgumentParser, skip: set[str] = frozenset()) -> None:
    """--methods, the run's settings and every registered method's parameters, one group
    per method (visualize, merge)."""
    methods = registered()
    declared = VisualizeSettings.declared(list(methods.values()))
    p.add_argument("--methods", type=argtypes.method_names, default=None, metavar="NAME,...",
                   help=f"comma-separated subset of: {', '.join(methods)} (default: all that "
                        "apply to each layer; 'featvis methods' describes them)")
    _add_plugins_option(p)
    _add_declared(p, "upscale", *_declared("upscale"))
    if "precision" not in skip:
        _add_declared(p, "precision", *_declared("precision"))
    p.add_argument("--no-figures", dest="figures", action="store_false",
                   default=argparse.SUPPRESS,
                   help="skip the sanity figures (distinctness, randomization checks): "
                        "faster, but nothing then checks that the pictures show the model")
    added = {"units", "seed", "upscale", "precision", *skip}
    for method in methods.values():
        names = [name for name in method.params if name not in added]
        if not names:
            continue
        group = p.add_argument_group(f"{method.name} ({method.title})")
        for name in names:
            _add_declared(group, name, *declared[name])
            added.add(name)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="featvis", description="See what every unit of a deep network has learned.")
    parser.add_argument("--version", action="version", version=f"featvis {__version__}")
    _add_plugins_option(parser)
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
    p.add_argument("--conv-layers", type=argtypes.conv_layers, default=None,
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
    p.add_argument("--patch-size", type=argtypes.count("--patch-size"), default=None,
                   help=f"--dataset natural: patch side in pixels (default 14; "
                        f"{CDBN_NATURAL['patch_size']} for cdbn)")
    p.add_argument("--patches", type=argtypes.count("--patches"), default=None,
                   help=f"--dataset natural: number of patches (default 100000; "
                        f"{CDBN_NATURAL['patches']} for cdbn)")
    p.add_argument("--whiten", choices=["1/f", "zca", "none"], default=None,
                   help="--dataset natural: 1/f filter on whole photographs (default), ZCA "
                        "on the patches (not for cdbn), or none")
    p.add_argument("--recipe", choices=["rbm.m", "hinton", "lee"], default=None,
                   help="DBN training recipe (default rbm.m for mnist, lee for natural; see "
                        "the README's table)")
    p.add_argument("--epochs", type=argtypes.count("--epochs"), default=None,
                   help="epochs (per layer for a DBN or cdbn; default 10 for dbn, 5 for "
                        "cdbn, 4 for cnn)")
    p.add_argument("--batch-size", type=argtypes.count("--batch-size"), default=None,
                   help="default 100 for dbn, 128 for cnn; cdbn: the recipe's per layer (100, "
                        "25 for layer 2, 10 for a natural first layer); a value given applies "
                        "to every layer")
    p.add_argument("--lr", type=argtypes.positive_number, default=None,
                   help="learning rate (default: the recipe's, 0.1 for rbm.m; 0.5 for cdbn "
                        "on mnist, 0.02 for a natural first layer; 0.003 for cnn)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint path (.safetensors)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint at --out (skips finished layers)")
    _add_force_option(p, "overwrite an existing file at --out")
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
    p.add_argument("--directions", type=Path, default=None, metavar="FILE.safetensors",
                   help="show directions in a layer's unit space as its units (a linear "
                        "probe's weights, sparse-autoencoder features): one (V, U) tensor per "
                        "layer, named by its key; those layers are shown unless --layers")
    _add_method_options(p)
    p.add_argument("--distributed", action="store_true",
                   help="one of the processes of 'torchrun --nproc_per_node=N -m featvis "
                        "visualize ...' (gloo on CPU, nccl on CUDA)")
    p.add_argument("--timeout", type=argtypes.seconds, default=600.0, metavar="SECONDS",
                   help="--distributed: end every rank, naming the culprit, when another "
                        "stops answering for this long (default 600)")
    _add_resume_options(p)
    _add_force_option(p, _FORCE_RUN + "; and start afresh over an interrupted run's mining "
                         "state")
    p.set_defaults(func=cmd_visualize)

    p = sub.add_parser("mine", help="mine one shard of the dataset examples (offline shards)",
                       description="Mine the top examples of shard i of N (fixed global "
                                   "batches of 1000 inputs, batch b in shard b %% N) into one "
                                   "file; 'featvis merge' combines all N into a run.")
    _add_model_options(p)
    _add_data_options(p)
    _add_unit_options(p)
    _add_declared(p, "k", *_declared("k"))
    p.add_argument("--no-statistics", dest="statistics", action="store_false",
                   help="mine the top examples only, not every unit's statistics")
    for name in (*STATISTICS_PLAN, "precision"):
        _add_declared(p, name, *_declared(name))
    p.add_argument("--shard", type=argtypes.shard, required=True, metavar="i/N",
                   help="this shard: i of N (0 <= i < N)")
    p.add_argument("--out", type=Path, required=True, help="shard file (.safetensors)")
    _add_resume_options(p)
    _add_force_option(p, "overwrite an existing file at --out, and start afresh over an "
                         "interrupted run's mining state")
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
    _add_declared(p, "units", *_declared("units"), help="as given to 'featvis mine'")
    _add_method_options(p, skip={"k", "precision", *STATISTICS_PLAN})   # as mined
    _add_force_option(p, _FORCE_RUN)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("layers", help="list a model's layers (keys, types, units, shapes)",
                       description="One forward pass of a zero input; every module whose "
                                   "output is one tensor, in forward order.")
    _add_model_options(p)
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("report", help="(re)build the HTML gallery of a visualize output folder",
                       description="Rebuild index.html and the layer and unit pages from "
                                   "summary.json and the PNGs of a 'featvis visualize' run.")
    p.add_argument("run_dir", type=Path, help="folder written by 'featvis visualize'")
    _add_force_option(p, "rebuild even where a page was edited or replaced (kept as NAME.kept)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("evaluate", help="figures of model quality per layer",
                       description="Reconstruction error and linear-probe accuracy per layer; "
                                   "pseudo-likelihood and AIS log-likelihood of the first RBM.")
    p.add_argument("model", type=Path, help="checkpoint written by 'featvis train'")
    _add_common_options(p)
    p.add_argument("--ais-runs", type=argtypes.ais_runs, default=100,
                   help="AIS runs for log Z of the first RBM (0 skips AIS; default 100)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--run", type=Path, default=None,
                   help="a 'featvis visualize' folder: store the figures there and show them "
                        "in its gallery")
    _add_force_option(p, "overwrite an existing --json file; write into --run even where a "
                         "page was edited or replaced (kept as NAME.kept)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="train the reference DBN (or a convolutional DBN, or take "
                                    "the reference CNN or ViT), visualize it, write the "
                                    "gallery",
                       description="End to end on the embedded MNIST subset (or --data): "
                                   "train a 784-1000-500-250 DBN (or, with --model cdbn, a "
                                   "two-layer convolutional DBN; with --model cnn or vit, take "
                                   "the reference CNN or ViT shipped with featvis), run every "
                                   "method on "
                                   "its layers and print the path of the gallery.")
    _add_common_options(p)
    p.add_argument("--out", type=Path, default=Path("featvis-demo"),
                   help="output folder (default ./featvis-demo)")
    p.add_argument("--epochs", type=argtypes.count("--epochs"), default=None,
                   help="epochs per layer (default 10 for the DBN, 5 for the cdbn)")
    _add_sizes(p)
    _add_declared(p, "units", *_declared("units"), default=None,
                  help="units (channels) shown per layer (default 100 for the DBN, all "
                       "filters of the cdbn, 16 for the CNN)")
    p.add_argument("--model", dest="model_kind", choices=["dbn", "cdbn", "cnn", "vit"],
                   default="dbn",
                   help="dbn: train the reference DBN (default); cdbn: a convolutional DBN "
                        "with probabilistic max-pooling (Lee et al. 2009); cnn, vit: the "
                        "reference CNN or vision transformer with the weights shipped in "
                        "featvis, no training")
    p.add_argument("--dataset", choices=["mnist", "natural"], default="mnist",
                   help="natural: a sparse DBN with Gaussian visible units on whitened "
                        "patches of photographs (Lee, Ekanadham & Ng 2008), 196-400-200")
    p.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="--dataset natural: your photographs (default: the grey ones "
                        "bundled with scikit-image)")
    _add_max_pixels(p)
    _add_force_option(p, _FORCE_RUN)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("methods", help="list the registered methods (featvis's and plugins')",
                       description="Every method visualize can run: its name (for --methods), "
                                   "title, what a layer needs for it and its options.")
    _add_plugins_option(p)
    p.set_defaults(func=cmd_methods)
    return parser


def _add_sizes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=argtypes.sizes, default=None,
                   help="layer sizes, input first (default 784,1000,500,250)")
    p.add_argument("--layers", type=argtypes.sizes, default=None, dest="old_sizes",
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
                        "without a checkpoint is the reference CNN shipped with featvis; vit, "
                        "the reference ViT) or a user's package.module:factory, called with "
                        "--model-args")
    p.add_argument("--model-args", type=argtypes.json_object, default=None, metavar="JSON",
                   help="keyword arguments of --model MODULE:FACTORY as a JSON object, e.g. "
                        "'{\"num_classes\": 6, \"img_size\": 64}' (never evaluated as code)")
    p.add_argument("--weights", type=Path, default=None,
                   help="safetensors state_dict for --model MODULE:FACTORY (no pickles)")
    p.add_argument("--input-key", default=None, metavar="NAME",
                   help="the module's forward takes a dict: it receives {NAME: images}")
    p.add_argument("--input-shape", type=argtypes.shape, default=None, metavar="C,H,W",
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
    p.add_argument("--resize", type=argtypes.shape, default=None, metavar="H,W",
                   help="resize every image of --images to H,W (at most --max-pixels)")
    p.add_argument("--max-bytes", type=argtypes.count("--max-bytes"), default=MAX_BYTES,
                   metavar="BYTES", help="refuse MNIST files (held in memory) larger than "
                                         f"this as read (default {MAX_BYTES}, 4 GiB); "
                                         "--images stream, a few batches at a time")
    p.add_argument("--workers", type=argtypes.count("--workers"), default=2,
                   metavar="N", help="processes decoding --images while mining (default 2; "
                                     "0: in this process)")
    p.add_argument("--loader-batch-size", type=argtypes.count("--loader-batch-size"),
                   default=None, metavar="N",
                   help="images a decoding process reads at a time (default: the mining "
                        "batch); never changes the results")
    p.add_argument("--normalize", default=None, metavar="MEAN,STD",
                   help="feed the model (x - mean) / std (MEAN,STD, or C means then C stds); "
                        "pictures are shown de-normalized")


def _add_max_pixels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=argtypes.count("--max-pixels"), default=MAX_PIXELS,
                   metavar="N", help="refuse an image of more pixels (HxW), read from its "
                                     f"header before decoding (default {MAX_PIXELS:,})")


