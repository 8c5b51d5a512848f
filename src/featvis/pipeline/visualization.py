"""The visualize pipeline: every method of the registry over the chosen layers of a model,
written as a run folder (PNG grids, ``summary.json`` in format ``featvis.run/2``, gallery).

A method is one :class:`Method` entry in :data:`REGISTRY`: its name, title and legend
(plain text), which layers it applies to (and why not), and how it runs and what it writes
for one layer. Adding a method is adding one entry; the gallery draws whatever the entries
wrote into ``summary.json``. Output layout (written aside, then moved into place)::

    OUT/summary.json                          model, settings, per-layer and per-unit figures
    OUT/{folder}/{method}.png                 overview of a method over the layer's units
    OUT/{folder}/units/{i}/{picture}.png      the pictures of one unit, for the gallery
    OUT/manifest.json                         every file featvis wrote (featvis.io.runfolder)

where ``folder`` is :func:`featvis.io.runfolder.layer_folder` of the layer's key.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Sequence

import torch

from .._version import __version__
from . import distributed
from ..models.checkpoint import encode_model
from ..errors import check_int
from ..models.evaluation import method_agreement
from ..figures import (class_purity, distinctness, example_distinctness, gabor_fit, locality,
                       random_locality, randomized_similarity)
from ..io.fingerprint import data_fingerprint, model_fingerprint
from ..methods import (TopExamples, deconvnet, linear_combination, maximize, ranked_filters,
                       sample_unit)
from ..seam.base import RANDOMIZATIONS, SPATIAL, Key, LayerInfo, Probe, UnsupportedError
from ..seam.dispatch import probe
from ..report.render import encode_png, signed_border_grid, tile
from ..report import gallery_files
from ..io.runfolder import (EVALUATION, RUN_FORMAT, SUMMARY, Replacement, RunBuilder,
                            RunFolderError, build_run, layer_folder, load_evaluation,
                            plan_replacement)

__all__ = ["Method", "REGISTRY", "METHODS", "VisualizeSettings", "visualize", "shown_units"]

_STRIP = 10            # samples shown per unit
_SUSPECT = 0.5         # distinctness or randomized similarity above this is flagged
# The sanity checks' re-runs (Adebayo et al. 2018) on the first units shown: small settings
# that keep them within about half of visualize's own time.
SANITY = {"units": 20, "images": 2000, "steps": 50, "restarts": 2, "samples": 20}
_SATURATED = 0.9       # a maximization picture with more pixels at a bound is flagged
_FLAT = 0.01           # ... and one whose std is under this share of the pixel range
_OVERVIEW_ROWS = 100   # units in the ranked-filters overview


@dataclass
class VisualizeSettings:
    """What to compute: layers (None = the model's default), methods, and each method's
    main knobs. ``rho`` and ``bounds`` constrain maximization: by default the sphere of the
    inputs' mean norm (a DBN's recorded input norm) within the box of the inputs' range
    (``bounds="data"``; ``None``: no box), so that its pictures stay images."""

    layers: Sequence[Key] | None = None
    methods: Sequence[str] = ("examples", "maximize", "sampling", "filters", "filter_views",
                              "deconvnet", "combination")
    units: int | None = None          # the first N units of each layer; None = all
    k: int = 9                        # dataset examples per unit
    top: int = 10                     # ranked filters / linear-combination terms
    steps: int = 300
    restarts: int = 9
    samples: int = 100
    variant: str = "one-hot"
    seed: int = 0
    upscale: int = 2
    rho: float | None = None
    bounds: tuple[float, float] | str | None = "data"     # "data": the inputs' range
    figures: bool = True              # distinctness and randomization checks per method
    transforms: str | None = None     # maximization's random transforms ("standard")
    spatial: str = "positive"         # maximization's reduction of a channel's map
    snapshots: tuple[int, ...] = ()   # maximization steps shown along the way

    def check(self, seam: Probe, n_inputs: int | None = None) -> list[Key]:
        """The layers to show, after refusing unknown methods or layers and counts that
        cannot work (``k`` above ``n_inputs``, ``top`` above a layer's units below), before
        any computing."""
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method {unknown[0] if unknown else '(none)'!r}: choose "
                             f"from {', '.join(METHODS)}")
        for name in ("k", "top", "steps", "restarts", "samples", "upscale"):
            check_int(name, getattr(self, name))
        if self.units is not None:
            check_int("units", self.units)
        if self.spatial not in SPATIAL:
            raise ValueError(f"spatial must be one of {', '.join(SPATIAL)}, got "
                             f"{self.spatial!r}")
        if isinstance(self.bounds, str) and self.bounds != "data":
            raise ValueError(f"bounds must be (lo, hi), 'data' or None, got {self.bounds!r}")
        if "examples" in self.methods and n_inputs is not None and self.k > n_inputs:
            raise ValueError(f"k={self.k} is larger than the number of inputs ({n_inputs})")
        keys = list(dict.fromkeys(self.layers)) if self.layers else seam.default_layers()
        if not keys:
            raise ValueError(f"{seam.kind} has no layer to show (no Conv2d or Linear); name "
                             "some with layers=")
        for key in keys:
            seam.layer(key)
            # Ranked filters take top units below; a combination too, unless the model
            # pictures its units itself (a ConvDBN's bases).
            if "filters" in self.methods or ("combination" in self.methods
                                             and seam.bases(key) is None):
                try:
                    below = seam.below(key)
                    n_below = seam.incoming_weights(key).shape[1] if below is not None else 0
                except UnsupportedError:
                    continue                  # the method says why on the layer's page
                if below is not None and self.top > n_below:
                    raise ValueError(f"top={self.top} is larger than layer {below}'s {n_below} "
                                     f"units (--top for layer {key})")
        return keys


def _json_float(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 6)


@dataclass
class LayerRun:
    """One layer being visualized: what a method's run step reads and what it fills."""

    seam: Probe
    key: Key
    info: LayerInfo
    units: list[int]
    settings: VisualizeSettings
    images: torch.Tensor                       # the inputs as the gallery shows them
    show: Callable[[torch.Tensor], torch.Tensor]   # model-space inputs -> shown
    examples: TopExamples | None
    builder: RunBuilder
    progress: bool
    labels: torch.Tensor | None = None            # class labels of the inputs, if known
    model_images: torch.Tensor | None = None      # the inputs as the model sees them
    ctx: distributed.Context = field(default_factory=distributed.Context)
    folder: str = ""
    sections: list[dict] = field(default_factory=list)
    details: list[dict] = field(default_factory=list)
    figures: dict[str, dict[str, float | None]] = field(default_factory=dict)
    pictures: dict[str, torch.Tensor] = field(default_factory=dict)   # for the figures
    flags: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = layer_folder(self.key)
        self.details = [{"unit": i, "files": {}, "panels": []} for i in self.units]

    def split(self, compute: Callable[[list[int]], object]):
        """``compute(units)`` over the layer's shown units in the fixed global chunks of
        :mod:`featvis.pipeline.distributed` (this rank's share), gathered on rank 0; ``None``
        on the other ranks. One process computes the same chunks, so it writes the same bytes."""
        return distributed.per_unit(self.ctx, len(self.units),
                                    lambda chunk: compute([self.units[j] for j in chunk]))

    def figure(self, method: str, label: str, value: float) -> None:
        """A figure of the layer, filed under ``method`` (``layers[i].figures[method]``)."""
        self.figures.setdefault(method, {})[label] = _json_float(value)

    def png(self, name: str, array, unit: int | None = None) -> str:
        """Write a picture of the layer (or of its ``unit``-th shown unit); its path."""
        where = self.folder if unit is None else f"{self.folder}/units/{self.units[unit]}"
        return self.builder.write(f"{where}/{name}.png", encode_png(array))

    def section(self, method: "Method", array, caption: str, name: str | None = None
                ) -> None:
        """An overview picture of ``method`` over the layer's units (its ``name`` when the
        method draws several)."""
        file = self.png(name or method.name, array)
        self.sections.append({"method": method.name, "title": method.title,
                              "legend": method.legend, "file": file, "caption": caption})

    def panel(self, method: "Method", unit: int, pictures: Sequence[tuple], facts=()) -> None:
        """A unit's panel: ``pictures`` of ``(name, array, caption, style)``, ``facts`` of
        ``(label, value)``."""
        images = []
        for name, array, caption, style in pictures:
            file = self.png(name, array, unit)
            self.details[unit]["files"][name] = file
            images.append({"file": file, "caption": caption, "alt": f"{method.title}: {name}",
                           "style": style})
        self.details[unit]["panels"].append({"method": method.name, "title": method.title,
                                             "images": images,
                                             "facts": [list(f) for f in facts]})


@dataclass(frozen=True)
class Method:
    """A registry entry: ``unavailable(seam, key)`` says why the method does not apply to a
    layer (``None`` if it does); ``run(layer)`` computes it and writes its pictures;
    ``rerun(settings, inputs)`` gives the small settings of its sanity re-runs;
    ``indices``: its result is a set of indices (compared by overlap, not by picture);
    ``made_of_data``: its pictures are made of inputs (distinct only once the data mean is
    taken out); ``split``: its units are shared among the ranks of a distributed run (the
    others run on rank 0 alone)."""

    name: str
    title: str
    legend: str
    unavailable: Callable[[Probe, Key], str | None]
    run: Callable[[LayerRun], None]
    rerun: Callable[[VisualizeSettings, torch.Tensor], dict]
    indices: bool = False
    made_of_data: bool = False
    split: bool = False


def _always(seam: Probe, key: Key) -> str | None:
    return None


def _why_not(check: Callable[[], object]) -> str | None:
    try:
        check()
    except UnsupportedError as exc:
        return str(exc)
    return None


def _examples(layer: LayerRun) -> None:
    ex, s, up = layer.examples, layer.settings, layer.settings.upscale
    method = _METHOD["examples"]
    mean = layer.show(ex.mean)
    purity = None if layer.labels is None else class_purity(ex.indices, layer.labels)
    layer.section(method, tile(mean, scale="minmax", upscale=up),
                  "the mean of each unit's top examples, one tile per unit")
    for j, info in enumerate(layer.details):
        info["examples"] = {"values": [round(v, 6) for v in ex.values[j].tolist()],
                            "indices": ex.indices[j].tolist()}
        if ex.positions is not None:
            info["examples"]["positions"] = ex.positions[j].tolist()
        facts = []
        if purity is not None:
            info["examples"]["purity"] = {"share": _json_float(purity.share[j].item()),
                                          "top_class": int(purity.top_class[j])}
            facts = [("most common class among them", int(purity.top_class[j])),
                     ("its share", info["examples"]["purity"]["share"])]
        values = ", ".join(f"{v:.3f}" for v in ex.values[j].tolist())
        layer.panel(method, j, [
            ("examples_strip", tile(layer.images[ex.indices[j]], scale="minmax", cols=s.k,
                                    upscale=up), f"activations: {values}", "strip"),
            ("examples_mean", tile(mean[j:j + 1], scale="minmax", upscale=up), "their mean",
             "single")], facts)
    layer.figure("examples", "mean top-1 example activation", ex.values[:, 0].mean().item())
    if purity is not None:
        layer.figure("examples", "mean class purity (share of the top class)",
                     purity.share.mean().item())
        layer.figure("examples", "mean label entropy (bits)", purity.entropy_bits.mean().item())
    layer.pictures["examples"] = mean


def _maximize(layer: LayerRun) -> None:
    s, up, method = layer.settings, layer.settings.upscale, _METHOD["maximize"]
    mx = layer.split(lambda units: maximize(
        layer.seam.model, layer.key, units=units, rho=s.rho, bounds=s.bounds, steps=s.steps,
        restarts=s.restarts, seed=s.seed, progress=layer.progress,
        input_shape=layer.seam.input_shape, transforms=s.transforms, snapshots=s.snapshots,
        spatial=s.spatial))
    if mx is None:                          # another rank's: rank 0 draws the pictures
        return
    progress = [layer.show(mx.snapshots[step]) for step in sorted(mx.snapshots)]
    pixels = mx.images.flatten(1)                    # as the model sees them
    span = s.bounds[1] - s.bounds[0] if s.bounds else (pixels.max() - pixels.min()).item()
    flat = pixels.std(1) < _FLAT * span
    shown = layer.show(mx.images)
    scale = "symmetric" if s.bounds is None else "minmax"     # a signed picture, or an image
    layer.section(method, tile(shown, scale=scale, upscale=up),
                  "the input that maximizes each unit")
    for j, info in enumerate(layer.details):
        info["maximize"] = {"activation": _json_float(mx.activation[j].item()),
                            "invariance": _json_float(mx.invariance[j].item()),
                            "saturation": _json_float(mx.saturation[j].item())}
        saturated = (info["maximize"]["saturation"] or 0) > _SATURATED
        info["maximize"]["dead"] = bool(mx.dead[j])
        info["maximize"]["flat"] = bool(flat[j])
        caption = "the best of the restarts"
        if mx.dead[j]:
            caption = ("DEAD UNIT: its gradient is zero wherever the search started, so this "
                       "is only a starting point, not what the unit responds to")
        elif flat[j]:
            caption = (f"FLAT PICTURE: its pixels vary by under {_FLAT:.0%} of their range; "
                       "the unit shows nothing here")
        elif saturated:
            caption += (f" — over {_SATURATED:.0%} of its pixels sit at a bound: it shows the "
                        "box more than the unit")
        steps = ", ".join(str(step) for step in sorted(mx.snapshots))
        along = [("maximize_progress", tile(torch.stack([p[j] for p in progress]),
                                            scale=scale, cols=len(progress), upscale=up),
                  f"the best restart after {steps} steps", "strip")] if progress else []
        layer.panel(method, j, [("maximize", tile(shown[j:j + 1], scale=scale, upscale=up),
                                 caption, "single"), *along],
                    [("activation reached", info["maximize"]["activation"]),
                     ("invariance (cosine between restarts)", info["maximize"]["invariance"]),
                     ("pixels at a bound", info["maximize"]["saturation"])])
    layer.figure("maximize", "mean activation reached", mx.activation.mean().item())
    layer.figure("maximize", "mean invariance (cosine between restarts)",
                 mx.invariance.nanmean().item())
    layer.figure("maximize", "mean share of pixels at a bound", mx.saturation.nanmean().item())
    layer.figure("maximize", "dead units (zero gradient at every start)", mx.dead.sum().item())
    layer.figure("maximize", "flat pictures (std under 1% of the range)", flat.sum().item())
    layer.pictures["maximize"] = shown


def _sampling(layer: LayerRun) -> None:
    s, up, method = layer.settings, layer.settings.upscale, _METHOD["sampling"]
    sm = layer.split(lambda units: sample_unit(
        layer.seam.model, layer.key, units=units, n_samples=s.samples, variant=s.variant,
        seed=s.seed, progress=layer.progress))
    if sm is None:
        return
    layer.section(method, tile(sm.contrast, upscale=up),
                  "what switching each unit on adds (light) and removes (dark): "
                  "E[x | unit on] - E[x | unit off]")
    # A contrast far below the data's spread (its standard deviation: a whitened data set's
    # range is its outliers'): the layers below hardly respond top-down (a sparse layer whose
    # biases keep it off); each tile is scaled on its own, so say so.
    spread = (layer.images if layer.model_images is None else layer.model_images).std()
    faint = sm.contrast.flatten(1).abs().amax(1) < _FLAT * spread.item()
    for j in range(len(layer.units)):
        caption = "contrast: their mean minus the mean with the unit off"
        if faint[j]:
            caption = (f"FAINT: switching the unit on changes the mean by under {_FLAT:.0%} of "
                       "the data's standard deviation (shown scaled up): the layers below "
                       "hardly respond")
        layer.panel(method, j, [
            ("samples_strip", tile(sm.samples[j, :_STRIP], scale="minmax", cols=_STRIP,
                                   upscale=up), "samples", "strip"),
            ("samples_contrast", tile(sm.contrast[j:j + 1], upscale=up), caption, "single"),
            ("samples_mean", tile(sm.mean[j:j + 1], scale="minmax", upscale=up),
             "their mean, p(x | unit on)", "single")])
    label = f"faint contrasts (peak under {_FLAT:.0%} of the data's standard deviation)"
    layer.figure("sampling", label, faint.sum().item())
    if faint.float().mean() > _SUSPECT:
        layer.flags.append({"method": "sampling", "figure": label,
                            "value": _json_float(faint.sum().item()),
                            "explanation": _FAINT})
    layer.pictures["sampling"] = sm.contrast


def _filters(layer: LayerRun) -> None:
    s, up, method = layer.settings, layer.settings.upscale, _METHOD["filters"]
    model, shape = layer.seam.model, layer.seam.input_shape
    rf = ranked_filters(model, layer.key, top=s.top, input_shape=shape)   # every unit
    below = linear_combination(model, rf.below, top=s.top, input_shape=shape).images
    norms = layer.seam.incoming_weights(layer.key).norm(dim=1)
    rows = norms.argsort(descending=True, stable=True)[:_OVERVIEW_ROWS]
    layer.section(method, signed_border_grid(below[rf.indices[rows].flatten()],
                                             rf.weights[rows].flatten(), cols=s.top,
                                             upscale=up),
                  f"one row per unit (by incoming-weight norm): the {s.top} units of layer "
                  f"{rf.below} with the strongest connections")
    for j, (info, i) in enumerate(zip(layer.details, layer.units)):
        info["filters"] = {"below": rf.below, "indices": rf.indices[i].tolist(),
                           "weights": [round(w, 6) for w in rf.weights[i].tolist()]}
        weights = ", ".join(f"{b}: {w:+.3f}" for b, w in
                            zip(info["filters"]["indices"], info["filters"]["weights"]))
        layer.panel(method, j, [("filters", signed_border_grid(
            below[rf.indices[i]], rf.weights[i], cols=s.top, upscale=up),
            f"unit of layer {rf.below}: weight — {weights}", "strip")])


def _rows(examples: TopExamples, rows: list[int]) -> TopExamples:
    """The top examples of some of the units (``rows`` of every per-unit tensor)."""
    return replace(examples, **{f.name: getattr(examples, f.name)[rows]
                                for f in fields(examples)
                                if isinstance(getattr(examples, f.name), torch.Tensor)})


_VIEWS = {"learned": "as learned: the weights on the whitened input",
          "pattern": "pattern: the pixel patch whose whitened version is the filter",
          "receptive_field": "receptive field: the filter applied to raw pixels"}


def _square(pictures: torch.Tensor) -> torch.Tensor:
    """Flat ``(N, D)`` square pictures as ``(N, 1, side, side)``."""
    side = math.isqrt(pictures.shape[1])
    return pictures.reshape(len(pictures), 1, side, side)


def _filter_views(layer: LayerRun) -> None:
    up, method = layer.settings.upscale, _METHOD["filter_views"]
    weights = layer.seam.filters(layer.key).flatten(1)
    views = layer.seam.whitening().views(weights)
    shown = {name: _square(pictures[layer.units]) for name, pictures in views.items()}
    for name, pictures in shown.items():
        layer.section(method, tile(pictures, upscale=up), f"{_VIEWS[name]}; one tile per unit",
                      name=f"filter_views_{name}")
    for j in range(len(layer.units)):
        layer.panel(method, j, [(f"filter_{name}", tile(pictures[j:j + 1], upscale=up),
                                 _VIEWS[name], "single") for name, pictures in shown.items()])
    filters = _square(weights)[:, 0]
    fit = gabor_fit(filters)
    baseline = random_locality(filters.shape, seed=layer.settings.seed)
    layer.figure("filter_views", "locality (median energy share near the peak)",
                 locality(filters))
    layer.figure("filter_views", "locality of random filters of this size", baseline)
    layer.figure("filter_views", f"share of Gabor fits with R^2 >= {fit.threshold:g}", fit.share)
    layer.figure("filter_views", "orientation spread of the Gabor fits (circular variance)",
                 fit.orientation_spread)
    layer.figure("filter_views", "frequency spread of the Gabor fits (IQR, cycles/pixel)",
                 fit.frequency_spread)
    for j, (info, i) in enumerate(zip(layer.details, layer.units)):
        info["filter_views"] = {"gabor_r2": _json_float(fit.r2[i].item())}
    layer.pictures["filter_views"] = shown["learned"]


def _deconvnet(layer: LayerRun) -> None:
    s, up, method = layer.settings, layer.settings.upscale, _METHOD["deconvnet"]
    position = {unit: j for j, unit in enumerate(layer.units)}
    pj = layer.split(lambda units: deconvnet(   # mined already, in the one pass over data
        layer.seam.model, layer.model_images, layer.key, units=units, k=s.k,
        examples=_rows(layer.examples, [position[u] for u in units])))
    if pj is None:
        return
    layer.section(method, tile(pj.projections[:, 0], upscale=up),
                  "each unit's strongest activation in the data, projected back to pixels")
    for j, info in enumerate(layer.details):
        info["deconvnet"] = {"indices": pj.indices[j].tolist(),
                             "boxes": pj.boxes[j].tolist()}
        layer.panel(method, j, [
            ("deconvnet_crops", tile(layer.show(pj.crops[j]), scale="minmax", cols=s.k,
                                     upscale=up), "the image patches under the receptive "
                                                  "field of each maximum", "strip"),
            ("deconvnet_projections", tile(pj.projections[j], cols=s.k, upscale=up),
             "their projections to pixel space (deconvnet)", "strip")])
    layer.pictures["deconvnet"] = pj.projections[:, 0]


def _combination(layer: LayerRun) -> None:
    s, up, method = layer.settings, layer.settings.upscale, _METHOD["combination"]
    combo = linear_combination(layer.seam.model, layer.key, top=s.top, units=layer.units,
                               input_shape=layer.seam.input_shape).images
    layer.section(method, tile(combo, upscale=up), "one tile per unit")
    for j in range(len(layer.units)):
        layer.panel(method, j, [("combination", tile(combo[j:j + 1], upscale=up),
                                 "linear combination", "single")])
    layer.pictures["combination"] = combo


REGISTRY: tuple[Method, ...] = (
    Method("examples", "Dataset examples",
           "The inputs of the data set that activate the unit most, and their mean (Erhan, "
           "Bengio, Courville & Vincent 2009).", _always, _examples,
           lambda s, inputs: dict(images=inputs[:SANITY["images"]], k=s.k),
           indices=True, made_of_data=True),
    Method("maximize", "Activation maximization",
           "The input under a norm (or box) constraint that maximizes the unit's activation, "
           "found by projected gradient ascent (Erhan et al. 2009).", _always, _maximize,
           lambda s, inputs: dict(rho=s.rho, bounds=s.bounds, steps=SANITY["steps"],
                                  restarts=SANITY["restarts"], spatial=s.spatial),
           split=True),
    Method("sampling", "Unit sampling",
           "Inputs sampled from the deep belief net with the unit clamped on, p(x | h = 1) "
           "(Erhan et al. 2009; Hinton et al. 2006; in a convolutional DBN the pooling unit "
           "at the centre of the filter's map, Lee et al. 2009), shown as the contrast with "
           "the same draws with the unit off, which removes what the generative biases draw "
           "for every unit; the raw mean is on each unit's page.",
           lambda seam, key: _why_not(seam.generative), _sampling,
           lambda s, inputs: dict(n_samples=SANITY["samples"], variant=s.variant), split=True),
    Method("filters", "Ranked filters",
           "The units of the layer below with the strongest connections to the unit, framed "
           "yellow for a positive and magenta for a negative weight (pylearn2's top_filters).",
           lambda seam, key: _why_not(lambda: linear_combination(   # the pictures below
               seam.model, ranked_filters(seam.model, key, top=1, input_shape=seam.input_shape)
               .below, top=None, units=[0], input_shape=seam.input_shape)),
           _filters, lambda s, inputs: dict(top=s.top), indices=True),
    Method("filter_views", "First-layer filters: learned, pattern, receptive field",
           "For whitened inputs (natural-image patches; Lee, Ekanadham & Ng 2008): each "
           "first-layer filter as learned in the whitened space, as the pixel pattern whose "
           "whitened version it is, and as the receptive field it applies to raw pixels; its "
           "figures say whether they look like V1 simple cells: localized (energy near the "
           "peak, against random filters) and fitted by Gabor functions.",
           lambda seam, key: "the inputs were not whitened" if seam.whitening() is None else
           _why_not(lambda: seam.filters(key)), _filter_views, lambda s, inputs: {}),
    Method("deconvnet", "Deconvnet projections",
           "The top examples of each channel beside their projections back to pixel space "
           "(Zeiler & Fergus 2014): the channel's maximum alone, sent down through the "
           "network with the forward pass's max-pool switches and rectified gradients.",
           lambda seam, key: _why_not(lambda: seam.check_deconvnet(key)), _deconvnet,
           lambda s, inputs: dict(images=inputs[:SANITY["images"]]), split=True),
    Method("combination", "Linear combination",
           "The weighted sum of the layer below's pictures over the unit's strongest "
           "connections, applied recursively from the first-layer filters (Lee, Ekanadham & "
           "Ng 2008).",
           lambda seam, key: _why_not(lambda: linear_combination(
               seam.model, key, top=None, units=[0], input_shape=seam.input_shape)),
           _combination, lambda s, inputs: dict(top=s.top)),
)
_METHOD = {method.name: method for method in REGISTRY}
METHODS = tuple(_METHOD)


def shown_units(info: LayerInfo, s: VisualizeSettings) -> list[int]:
    """The units of a layer to show: the first ``s.units`` (all for None)."""
    return list(range(info.units if s.units is None else min(s.units, info.units)))


def _sanity_figures(layer: LayerRun, ran: list[str], model_images: torch.Tensor,
                    s: VisualizeSettings) -> None:
    """Per method: how distinct its pictures are, and how much of them survives re-drawing
    the layer's (and the lower layers') weights; flags what looks like it ignores the model."""
    seam, key = layer.seam, layer.key
    units = layer.units[:SANITY["units"]]

    def record(method: Method, label: str, value: float, why: str) -> None:
        layer.figure(method.name, label, value)
        if value > _SUSPECT:
            layer.flags.append({"method": method.name, "figure": label,
                                "value": _json_float(value), "explanation": why})

    for method in (_METHOD[name] for name in ran):
        pictures = layer.pictures.get(method.name)
        if len(layer.units) >= 2 and pictures is not None:        # units against units
            if method.made_of_data:
                record(method, "distinctness (mean - data mean)", example_distinctness(
                    pictures, layer.images.flatten(1).mean(0)), _LOOK_ALIKE)
            else:
                record(method, "distinctness", distinctness(pictures), _LOOK_ALIKE)
        measure = "index overlap" if method.indices else "similarity"
        for mode in RANDOMIZATIONS:
            record(method, f"randomized {measure} ({mode})", randomized_similarity(
                seam.model, key, method.name, mode=mode, units=units, seed=s.seed,
                input_shape=seam.input_shape, **method.rerun(s, model_images)),
                _SURVIVES_INDICES if method.indices else _SURVIVES)


_FAINT = (f"switching most units on changes the visible mean by under {_FLAT:.0%} of the "
          "data's standard deviation: the layers below mostly stay off top-down, so the "
          "contrasts show the direction of a very small effect, scaled up")
_LOOK_ALIKE = ("the units' pictures look alike: they show what the method or the data puts "
               "into every picture more than what each unit learned")
_SURVIVES = ("the pictures barely change when the weights are re-drawn at random: they do "
             "not show what the model learned")
_SURVIVES_INDICES = ("the same inputs are chosen when the weights are re-drawn at random: "
                     "the choice does not show what the model learned")


def _layer(seam: Probe, key: Key, s: VisualizeSettings, run: RunBuilder | None,
           images: torch.Tensor, show, examples: TopExamples | None, progress: bool,
           model_images: torch.Tensor, labels: torch.Tensor | None,
           ctx: distributed.Context) -> dict | None:
    """The layer's entry of ``summary.json`` (its pictures written by ``run``); on a rank
    other than 0 only its share of the split methods, and ``None``."""
    info = seam.layer(key)
    units = shown_units(info, s)
    layer = LayerRun(seam, key, info, units, s, images, show, examples, run, progress, labels,
                     model_images, ctx)
    ran, unavailable = [], {}
    for method in REGISTRY:
        if method.name not in s.methods or not (ctx.is_main or method.split):
            continue
        why = method.unavailable(seam, key)
        if why is None:
            try:
                method.run(layer)
            except UnsupportedError as exc:       # found out only while running
                why = str(exc)
        if why is not None:
            unavailable[method.title] = why
            continue
        ran.append(method.name)
    if not ctx.is_main:
        return None
    if s.figures:
        _sanity_figures(layer, ran, model_images, s)
    agreement = method_agreement({name: p.flatten(1) for name, p in layer.pictures.items()
                                  if p[0].numel() == math.prod(seam.input_shape)})
    for pair, cosine in agreement.items():
        layer.figure("agreement", f"mean centred cosine {pair}", cosine.mean().item())
        for j, detail in enumerate(layer.details):
            detail.setdefault("agreement", {})[pair] = _json_float(cosine[j].item())
    if agreement:
        for detail in layer.details:
            detail["panels"].append({"method": "agreement", "title": "Agreement between methods",
                                     "images": [], "facts": [[pair.replace("~", " ~ "), value]
                                                             for pair, value in
                                                             detail["agreement"].items()]})
    return {"layer": key, "name": f"layer {key}", "folder": layer.folder, "type": info.type,
            "n_units": info.units, "unit_shape": list(info.unit_shape), "units": units,
            "methods": ran, "unavailable": unavailable, "sections": layer.sections,
            "files": {sec["method"]: sec["file"] for sec in layer.sections},
            "figures": layer.figures, "flags": layer.flags, "unit_details": layer.details}


def _keep_evaluation(plan: Replacement, fingerprint: str) -> None:
    """Carry the old run's ``evaluation.json`` over when it is of the same model."""
    if EVALUATION not in plan.contents.own:
        return
    try:
        old = load_evaluation(plan.contents.root) or {}
    except RunFolderError:
        old = {}
    if old.get("model_sha256") == fingerprint:
        plan.carry.append(EVALUATION)
    else:
        print(f"featvis: note: dropped {plan.contents.root / EVALUATION}: its figures are "
              "of another model (run 'featvis evaluate --run' again)", file=sys.stderr)


def _untrained_note(model: dict) -> None:
    trained = model["trained_layers"]
    total = model.get("n_layers", len(model.get("sizes") or []) - 1)
    if trained is not None and trained < total:
        print(f"featvis: warning: layers {trained + 1}..{total} of the model are "
              "untrained (saved before training finished); their pictures show initial "
              "weights", file=sys.stderr)


def visualize(model: torch.nn.Module, images: torch.Tensor, out: str | os.PathLike,
              settings: VisualizeSettings | None = None, *,
              labels: torch.Tensor | None = None, normalization=None,
              model_path: str | os.PathLike | None = None,
              save_model_as: str | None = None, force: bool = False, gallery: bool = True,
              progress: bool = True, ctx: distributed.Context | None = None,
              examples: dict[Key, TopExamples] | None = None) -> dict | None:
    """Compute every chosen method for every chosen layer of ``model`` and write the run
    folder ``out``, with its HTML gallery (``out/index.html``) unless ``gallery=False``.

    ``images (N, *input_shape)`` are the inputs as they should be shown, ``labels (N,)``
    their classes if known (the examples' class purity); with
    ``normalization`` (:class:`featvis.data.Normalization`) the model is fed
    ``normalization.normalize(images)`` and input-space pictures are shown de-normalized.
    ``out`` is replaced only when everything succeeded and only by featvis's rule (see
    :mod:`featvis.io.runfolder`): a folder holding files featvis did not write is refused
    unless ``force``, which carries them over. ``model_path`` is the checkpoint the model
    was read from (recorded; if it lies inside ``out`` it must be featvis's own there and is
    carried over unchanged); ``save_model_as`` also saves the model (a built-in kind, see
    :func:`featvis.models.checkpoint.encode_model`) inside the run. The old
    run's ``evaluation.json`` is kept if it is of the same model. Returns the summary that
    was written to ``out/summary.json``.

    With a distributed ``ctx`` (:func:`featvis.pipeline.distributed.from_environment`, every rank
    calling with the same arguments) the ranks first check that they hold the same model,
    data and settings, mine the data in shares and merge, and share the units of
    maximization, sampling and deconvnet in fixed chunks; rank 0 alone writes ``out`` and
    returns the summary (the others ``None``), byte for byte what one process writes.
    ``examples``, every layer's top examples already mined (``featvis merge``), skip mining.

    Example:
        >>> visualize(cnn, images, "run", VisualizeSettings(units=8))  # doctest: +SKIP
    """
    s = settings or VisualizeSettings()
    ctx = ctx or distributed.Context()
    seam = probe(model, images.shape[1:])
    keys = s.check(seam, n_inputs=len(images))
    plan = plan_replacement(out, force=force, reading=[model_path] if model_path else (),
                            rewriting=[save_model_as] if save_model_as else ()) \
        if ctx.is_main else None
    fingerprint = model_fingerprint(model)
    if plan is not None:
        _keep_evaluation(plan, fingerprint)
    described = seam.describe()
    if ctx.is_main:
        _untrained_note(described)
    images = images.to(seam.device)
    model_images = images if normalization is None else normalization.normalize(images)
    show = (lambda x: x) if normalization is None else normalization.denormalize
    if s.rho is None:                  # a DBN's recorded input norm, else the inputs' own
        s = replace(s, rho=seam.default_rho() or
                    round(model_images.flatten(1).norm(dim=1).mean().item(), 6))
    if s.bounds == "data":            # the inputs' range, widened to hold 0 (see maximize)
        s = replace(s, bounds=(min(0.0, model_images.min().item()),
                               max(0.0, model_images.max().item())))
    if ctx.distributed:
        distributed.agree(ctx, model=fingerprint, data=data_fingerprint(model_images),
                          settings=asdict(s), threads=torch.get_num_threads())
    progress = progress and ctx.is_main
    shown = {key: shown_units(seam.layer(key), s) for key in keys}
    if examples is None and "examples" in s.methods:   # every layer in one pass over data
        examples = distributed.top_examples(model, model_images, keys, k=s.k, units=shown,
                                            ctx=ctx)
    examples = examples or {}
    with build_run(plan) if plan is not None else contextlib.nullcontext() as run:
        layers = [_layer(seam, key, s, run, images, show, examples.get(key), progress,
                         model_images, labels, ctx) for key in keys]
        distributed.barrier(ctx)     # every rank done: only now may rank 0 publish
        if not ctx.is_main:
            return None
        summary = {
            "format": RUN_FORMAT,
            "featvis_version": __version__,
            "model_sha256": fingerprint,
            "trained_layers": described.pop("trained_layers"),
            "model": described | {
                "path": save_model_as or (None if model_path is None else str(model_path)),
                "normalize": None if normalization is None else {
                    "mean": normalization.mean.tolist(), "std": normalization.std.tolist()}},
            "settings": asdict(s),
            "sanity_settings": SANITY if s.figures else None,
            "layers": layers,
        }
        run.write(SUMMARY, json.dumps(summary, indent=1, allow_nan=False).encode())
        if save_model_as is not None:
            run.write(save_model_as, encode_model(model))
        if EVALUATION in plan.carry:
            run.link(plan.contents.root / EVALUATION, EVALUATION, plan.contents.own[EVALUATION])
        if gallery:
            for rel, data in gallery_files(run.root).items():
                run.write(rel, data)
    return summary
