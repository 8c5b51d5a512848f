"""The end-to-end demos: train the reference DBN on MNIST (or take the reference CNN with the
weights shipped in the package), visualize its layers, build the gallery.

The defaults are sized to finish in a few minutes on a 2-core laptop with the embedded
10,000-image subset: the full 784-1000-500-250 architecture and rbm.m recipe with the first
100 units of each layer, or the CNN's two conv layers and penultimate linear layer.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from .data import load_mnist, mnist_info
from .models import DBN, reference_cnn
from .natural import natural_info, training_inputs
from .train import TrainingRecipe
from .report import INDEX
from .probe import probe
from .runfolder import plan_replacement
from .visualize import VisualizeSettings, visualize

__all__ = ["run_demo", "run_cnn_demo", "run_natural_demo", "DEMO_SIZES", "CNN_LAYERS",
           "NATURAL_SIZES", "NATURAL_DEMO"]

DEMO_SIZES = (784, 1000, 500, 250)
CNN_LAYERS = ("features.0", "features.3", "classifier.1")   # conv, conv, penultimate
MODEL = "model.safetensors"        # the trained DBN, saved inside the output folder
NATURAL_SIZES = (196, 400, 200)    # 14 x 14 patches, then Lee et al. 2008's layers, scaled
# The natural-image demo's data and training (see the README's table of recipes).
NATURAL_DEMO = {"patches": 100_000, "whiten": "1/f", "recipe": "lee", "epochs": 5,
                "batch_size": 100}


def run_demo(out: str | os.PathLike = "featvis-demo", data: str | os.PathLike | None = None,
             epochs: int = 10, seed: int = 0, sizes: Sequence[int] = DEMO_SIZES,
             units: int = 100,
             device: torch.device | str = "cpu", progress: bool = True,
             settings: VisualizeSettings | None = None, force: bool = False) -> Path:
    """Train, visualize and write the gallery into ``out`` (with the trained model as
    ``out/model.safetensors``); returns the path of ``index.html``. An ``out`` that
    :func:`featvis.visualize.visualize` would refuse is refused before training."""
    out = Path(out)
    plan_replacement(out, force=force, rewriting=[MODEL])
    images, labels = load_mnist("train", data)
    dbn = DBN(list(sizes), seed=seed).to(device)
    # Ranked filters and combinations use up to 10 units of the layer below.
    settings = settings or VisualizeSettings(units=units, seed=seed,
                                             top=min([10, *dbn.sizes[1:-1]]))
    settings.check(probe(dbn, images.shape[1:]), n_inputs=len(images))   # before training
    print(f"featvis demo: DBN {'-'.join(map(str, sizes))}, {epochs} epochs per RBM on "
          f"{len(images)} MNIST images ({'embedded subset' if data is None else data}); "
          f"{settings.units or 'all'} units per layer, maximization {settings.steps} steps x "
          f"{settings.restarts} restarts, {settings.samples} samples per unit", file=sys.stderr)
    start = time.perf_counter()
    dbn.data_info = mnist_info(data, images)
    dbn.fit(images, epochs=epochs, seed=seed, progress=progress)
    trained = time.perf_counter()
    visualize(dbn, images, out, settings, labels=labels, save_model_as=MODEL, force=force,
              progress=progress)
    done = time.perf_counter()
    print(f"featvis demo: trained in {trained - start:.0f} s, visualized in {done - trained:.0f} s",
          file=sys.stderr)
    return out / INDEX


def run_cnn_demo(out: str | os.PathLike = "featvis-demo", data: str | os.PathLike | None = None,
                 seed: int = 0, units: int = 16, device: torch.device | str = "cpu",
                 progress: bool = True, settings: VisualizeSettings | None = None,
                 force: bool = False) -> Path:
    """Visualize the reference CNN (shipped weights, no training) on MNIST: its two conv
    layers and its penultimate linear layer, the first ``units`` channels or units of each;
    returns the path of ``index.html``."""
    out = Path(out)
    plan_replacement(out, force=force)
    images, labels = load_mnist("train", data)
    cnn = reference_cnn(pretrained=True, device=device)
    images = images.view(len(images), *cnn.input_shape)
    settings = settings or VisualizeSettings(layers=list(CNN_LAYERS), units=units, seed=seed,
                                             steps=200, restarts=4)
    settings.check(probe(cnn, images.shape[1:]), n_inputs=len(images))
    print(f"featvis demo: the reference CNN (shipped weights) on {len(images)} MNIST images; "
          f"layers {', '.join(settings.layers)}, {settings.units} units each", file=sys.stderr)
    start = time.perf_counter()
    visualize(cnn, images, out, settings, labels=labels, force=force, progress=progress)
    print(f"featvis demo: visualized in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return out / INDEX


def run_natural_demo(out: str | os.PathLike = "featvis-demo",
                     images: str | os.PathLike | None = None, seed: int = 0,
                     sizes: Sequence[int] = NATURAL_SIZES, units: int = 100,
                     device: torch.device | str = "cpu", progress: bool = True,
                     settings: VisualizeSettings | None = None, force: bool = False) -> Path:
    """Lee, Ekanadham & Ng (2008) end to end: patches of natural photographs (``images``, or
    those bundled with scikit-image), 1/f-whitened; a DBN with Gaussian visible units
    trained by the ``lee`` recipe; every method on its layers, the first-layer filters in
    three views with their locality and Gabor figures; the model saved as
    ``out/model.safetensors``. Returns the path of ``index.html``."""
    out = Path(out)
    plan_replacement(out, force=force, rewriting=[MODEL])
    side = int(round(sizes[0] ** 0.5))
    if side * side != sizes[0]:
        raise ValueError(f"sizes must start with a square number of inputs (patch pixels), "
                         f"got {sizes[0]}")
    recipe = TrainingRecipe.preset(NATURAL_DEMO["recipe"], epochs=NATURAL_DEMO["epochs"],
                                   batch_size=NATURAL_DEMO["batch_size"], seed=seed)
    dbn = DBN(list(sizes), visible="gaussian", sigma=recipe.for_layer(1).sigma,
              seed=seed).to(device)
    settings = settings or VisualizeSettings(units=units, seed=seed,
                                             top=min([10, *dbn.sizes[1:-1]]))
    start = time.perf_counter()
    inputs, patches, dbn.whitening = training_inputs(
        images, size=side, count=NATURAL_DEMO["patches"], seed=seed,
        whiten=NATURAL_DEMO["whiten"])
    settings.check(probe(dbn, inputs.shape[1:]), n_inputs=len(inputs))   # before training
    print(f"featvis demo: DBN {'-'.join(map(str, sizes))} (Gaussian visible units), recipe "
          f"{NATURAL_DEMO['recipe']}, {recipe.epochs} epochs per RBM on {len(inputs)} "
          f"{side}x{side} patches of {len(patches.recipe['sources'])} photographs, "
          f"{NATURAL_DEMO['whiten']}-whitened; {settings.units or 'all'} units per layer",
          file=sys.stderr)
    dbn.data_info = natural_info(patches, inputs)
    dbn.fit(inputs, progress=progress, **recipe.to_dict())
    trained = time.perf_counter()
    summary = visualize(dbn, inputs, out, settings, save_model_as=MODEL, force=force,
                        progress=progress)
    done = time.perf_counter()
    figures = summary["layers"][0]["figures"].get("filter_views", {})
    told = "; ".join(f"{label} {value}" for label, value in figures.items()
                     if label.startswith(("locality", "share")))
    print(f"featvis demo: trained in {trained - start:.0f} s, visualized in {done - trained:.0f} "
          f"s; first-layer filters: {told}", file=sys.stderr)
    return out / INDEX
