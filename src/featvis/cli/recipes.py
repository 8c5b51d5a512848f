"""``featvis train``: the defaults of each model kind and data set (the training recipes),
the options each kind takes, and the training run with a checkpoint after every layer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FeatvisError
from ..pipeline.demo import DEMO_SIZES
from .argtypes import conv_layers, conv_text
from .commands import _check_new_file, _mnist, resolve_device

if TYPE_CHECKING:
    import torch


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
        args.conv_layers = conv_layers(CDBN_LAYERS[args.dataset])
    if args.model_kind == "dbn" and args.sizes is None:
        args.sizes = [args.patch_size ** 2, *NATURAL_HIDDEN] if natural else list(DEMO_SIZES)
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
        (f"cdbn {conv_text(args.conv_layers)}", "the convolutional recipe")
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
        raise FeatvisError(f"--resume: checkpoint has layers {conv_text(model.layer_specs)}, "
                           f"asked {conv_text(args.conv_layers)}")
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

