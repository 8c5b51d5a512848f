"""The end-to-end demos: train the reference DBN on MNIST (or a convolutional DBN, or take
the reference CNN with the weights shipped in the package), visualize its layers, build the
gallery.

The defaults are sized to finish in a few minutes on a 2-core laptop with the embedded
10,000-image subset: the full 784-1000-500-250 architecture and rbm.m recipe with the first
100 units of each layer, a small two-layer convolutional DBN with every filter, or the CNN's
two conv layers and penultimate linear layer.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..data.mnist import load_mnist, mnist_info
from ..data.tensors import picture_shape
from ..figures import locality, random_locality
from ..models import DBN, ConvDBN, reference_cnn, reference_vit
from ..data.natural import MAX_IMAGE_PIXELS, natural_info, training_inputs
from ..models.training import TrainingRecipe
from ..report import INDEX
from ..seam import probe
from ..io.runfolder import plan_replacement
from .visualization import VisualizeSettings, visualize

__all__ = ["run_demo", "run_shipped_demo", "run_natural_demo", "run_cdbn_demo", "DEMO_SIZES",
           "SHIPPED", "NATURAL_SIZES", "NATURAL_DEMO", "CDBN_DEMO"]

DEMO_SIZES = (784, 1000, 500, 250)
# The models shipped trained and the layers their demo shows.
# A transformer's pixel-space optimum is high-frequency noise: its demo climbs Fourier
# coefficients through random transforms (lucent's recipe), which shows strokes and blobs.
SHIPPED = {
    "cnn": (reference_cnn, "the reference CNN",
            ("features.0", "features.3", "classifier.1"), {}),  # conv, conv, penultimate
    "vit": (reference_vit, "the reference ViT",                # patches, MLP neurons, blocks
            ("patch_embed", "blocks.0.mlp.fc1", "blocks.1.mlp.fc1", "blocks.2.mlp.fc1",
             "blocks.2", "class_token"), {"param": "fourier", "transforms": "standard"}),
}
MODEL = "model.safetensors"        # the trained model, saved inside the output folder
NATURAL_SIZES = (196, 400, 200)    # 14 x 14 patches, then Lee et al. 2008's layers, scaled
# The natural-image demo's data and training (see the README's table of recipes).
NATURAL_DEMO = {"patches": 100_000, "whiten": "1/f", "recipe": "lee", "epochs": 5,
                "batch_size": 100}
# The convolutional DBN demo (Lee et al. 2009, scaled down): stroke detectors, then parts made
# of them; trained with the convolutional recipe on the embedded digits, every filter shown.
CDBN_DEMO = {"layers": [dict(filters=24, filter_size=10, pool=2),
                        dict(filters=40, filter_size=6, pool=2)],
             "images": 10_000, "epochs": 5, "steps": 200, "restarts": 4, "samples": 50}


def run_demo(out: str | os.PathLike = "featvis-demo", data: str | os.PathLike | None = None,
             epochs: int = 10, seed: int = 0, sizes: Sequence[int] = DEMO_SIZES,
             units: int = 100,
             device: torch.device | str = "cpu", progress: bool = True,
             settings: VisualizeSettings | None = None, force: bool = False) -> Path:
    """Train, visualize and write the gallery into ``out`` (with the trained model as
    ``out/model.safetensors``); returns the path of ``index.html``. An ``out`` that
    :func:`featvis.pipeline.visualization.visualize` would refuse is refused before training."""
    out = Path(out)
    plan_replacement(out, force=force, rewriting=[MODEL])
    images, labels = load_mnist("train", data)
    dbn = DBN(list(sizes), seed=seed).to(device)
    # Ranked filters and combinations use up to 10 units of the layer below.
    settings = settings or VisualizeSettings(units=units, seed=seed,
                                             top=min([10, *dbn.sizes[1:-1]]))
    dbn.data_info = mnist_info(data, images)
    _, took = _train_and_show(
        dbn, images, out, settings,
        f"DBN {'-'.join(map(str, sizes))}, {epochs} epochs per RBM on {len(images)} MNIST "
        f"images ({'embedded subset' if data is None else data}); {settings.units or 'all'} "
        f"units per layer, maximization {settings.steps} steps x {settings.restarts} "
        f"restarts, {settings.samples} samples per unit",
        lambda: dbn.fit(images, epochs=epochs, seed=seed, progress=progress), labels=labels,
        force=force, progress=progress)
    print(f"featvis demo: {took}", file=sys.stderr)
    return out / INDEX


def _train_and_show(model: torch.nn.Module, inputs: torch.Tensor, out: Path,
                    settings: VisualizeSettings, announce: str, fit: Callable[[], object], *,
                    labels: torch.Tensor | None = None, force: bool, progress: bool
                    ) -> tuple[dict, str]:
    """Refuse ``settings`` that cannot work before any training, print ``announce``, run
    ``fit()``, then visualize ``model`` on ``inputs`` into ``out`` with the model saved as
    :data:`MODEL`: ``(summary, "trained in T s, visualized in V s")``."""
    settings.check(probe(model, inputs.shape[1:]), n_inputs=len(inputs))
    print(f"featvis demo: {announce}", file=sys.stderr)
    start = time.perf_counter()
    fit()
    trained = time.perf_counter()
    summary = visualize(model, inputs, out, settings, labels=labels, save_model_as=MODEL,
                        force=force, progress=progress)
    return summary, (f"trained in {trained - start:.0f} s, visualized in "
                     f"{time.perf_counter() - trained:.0f} s")


def run_shipped_demo(kind: str = "cnn", out: str | os.PathLike = "featvis-demo",
                     data: str | os.PathLike | None = None, seed: int = 0, units: int = 16,
                     device: torch.device | str = "cpu", progress: bool = True,
                     settings: VisualizeSettings | None = None, force: bool = False) -> Path:
    """Visualize a model shipped trained (``kind``: ``"cnn"`` or ``"vit"``, see
    :data:`SHIPPED`; no training) on MNIST: the layers of :data:`SHIPPED`, the first
    ``units`` channels or units of each; returns the path of ``index.html``."""
    if kind not in SHIPPED:
        raise ValueError(f"kind must be one of {', '.join(SHIPPED)}, got {kind!r}")
    build, title, layers, maximization = SHIPPED[kind]
    out = Path(out)
    plan_replacement(out, force=force)
    images, labels = load_mnist("train", data)
    model = build(pretrained=True, device=device)
    images = images.view(len(images), *model.input_shape)
    settings = settings or VisualizeSettings(layers=list(layers), units=units, seed=seed,
                                             steps=200, restarts=4, **maximization)
    settings.check(probe(model, images.shape[1:]), n_inputs=len(images))
    print(f"featvis demo: {title} (shipped weights) on {len(images)} MNIST images; "
          f"layers {', '.join(settings.layers)}, {settings.units} units each", file=sys.stderr)
    start = time.perf_counter()
    visualize(model, images, out, settings, labels=labels, force=force, progress=progress)
    print(f"featvis demo: visualized in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return out / INDEX


def run_natural_demo(out: str | os.PathLike = "featvis-demo",
                     images: str | os.PathLike | None = None, seed: int = 0,
                     sizes: Sequence[int] = NATURAL_SIZES, units: int = 100,
                     device: torch.device | str = "cpu", progress: bool = True,
                     settings: VisualizeSettings | None = None, force: bool = False,
                     max_pixels: int = MAX_IMAGE_PIXELS) -> Path:
    """Lee, Ekanadham & Ng (2008) end to end: patches of natural photographs (``images``, at
    most ``max_pixels`` each, or those bundled with scikit-image), 1/f-whitened; a DBN with
    Gaussian visible units trained by the ``lee`` recipe; every method on its layers, the first-layer filters in
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
    inputs, patches, dbn.whitening = training_inputs(
        images, size=side, count=NATURAL_DEMO["patches"], seed=seed,
        whiten=NATURAL_DEMO["whiten"], max_pixels=max_pixels)
    dbn.data_info = natural_info(patches, inputs)
    summary, took = _train_and_show(
        dbn, inputs, out, settings,
        f"DBN {'-'.join(map(str, sizes))} (Gaussian visible units), recipe "
        f"{NATURAL_DEMO['recipe']}, {recipe.epochs} epochs per RBM on {len(inputs)} "
        f"{side}x{side} patches of {len(patches.recipe['sources'])} photographs, "
        f"{NATURAL_DEMO['whiten']}-whitened; {settings.units or 'all'} units per layer",
        lambda: dbn.fit(inputs, progress=progress, **recipe.to_dict()), force=force,
        progress=progress)
    figures = summary["layers"][0]["figures"].get("filter_views", {})
    told = "; ".join(f"{label} {value}" for label, value in figures.items()
                     if label.startswith(("locality", "share")))
    print(f"featvis demo: {took}; first-layer filters: {told}", file=sys.stderr)
    return out / INDEX


def run_cdbn_demo(out: str | os.PathLike = "featvis-demo",
                  data: str | os.PathLike | None = None, epochs: int | None = None,
                  seed: int = 0, units: int | None = None, device: torch.device | str = "cpu",
                  progress: bool = True, settings: VisualizeSettings | None = None,
                  force: bool = False) -> Path:
    """Lee et al. (2009) end to end, small: a convolutional DBN with probabilistic
    max-pooling (:data:`CDBN_DEMO`'s layers) trained on MNIST, every method that applies to
    its layers (``units`` filters of each, default all), the first-layer bases' locality
    against random filters, the model saved as ``out/model.safetensors``. ``epochs`` per
    layer default to :data:`CDBN_DEMO`'s. Returns the path of ``index.html``."""
    out = Path(out)
    epochs = CDBN_DEMO["epochs"] if epochs is None else epochs
    plan_replacement(out, force=force, rewriting=[MODEL])
    images, labels = load_mnist("train", data)
    images, labels = images[:CDBN_DEMO["images"]], labels[:CDBN_DEMO["images"]]
    model = ConvDBN(CDBN_DEMO["layers"], seed=seed,
                    input_shape=picture_shape(images.shape[1:])).to(device)
    settings = settings or VisualizeSettings(
        units=units, seed=seed, steps=CDBN_DEMO["steps"], restarts=CDBN_DEMO["restarts"],
        samples=CDBN_DEMO["samples"], top=min(10, CDBN_DEMO["layers"][0]["filters"]))
    model.data_info = mnist_info(data, images)        # of the flat images, as 'featvis train'
    images = images.view(len(images), *picture_shape(images.shape[1:]))
    _, took = _train_and_show(
        model, images, out, settings,
        f"{probe(model, images.shape[1:]).kind}, {epochs} epochs per layer on {len(images)} "
        f"MNIST images ({'embedded subset' if data is None else data}); "
        f"{settings.units or 'all'} filters per layer, maximization {settings.steps} steps x "
        f"{settings.restarts} restarts, {settings.samples} samples per filter",
        lambda: model.fit(images, epochs=epochs, seed=seed, progress=progress),
        labels=labels, force=force, progress=progress)
    bases = model.bases(1)[:, 0]
    print(f"featvis demo: {took}; first-layer bases: locality {locality(bases):.3f} (random "
          f"filters of this size {random_locality(tuple(bases.shape), seed=seed):.3f})",
          file=sys.stderr)
    return out / INDEX
