"""The visualize pipeline: every registered method over the chosen layers of a model, written
as a run folder (PNG grids, ``summary.json`` in format ``featvis.run/2``, gallery).

A method is a :class:`featvis.methods.Method` of the registry; this module knows none by
name. For each layer it asks the method whether the layer supports it (a lookup in the
probe's :meth:`~featvis.seam.Probe.supports`), computes it (its units shared among the ranks
of a distributed run when the method says so), lets it draw on the layer's
:class:`LayerPage`, and re-runs it on randomized copies for the sanity figures. Output
layout (written aside, then moved into place)::

    OUT/summary.json                          model, settings, per-layer and per-unit figures
    OUT/{folder}/{method}.png                 overview of a method over the layer's units
    OUT/{folder}/units/{i}/{picture}.png      the pictures of one unit, for the gallery
    OUT/manifest.json                         every file featvis wrote (featvis.io.runfolder)

where ``folder`` is :func:`featvis.io.runfolder.layer_folder` of the layer's key.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Mapping, Sequence

import torch

from .._version import __version__
from ..errors import first_line
from ..figures import SUSPECT, distinctness, example_distinctness
from ..data import stream
from ..data.stream import Data, Loading
from ..io.fingerprint import model_fingerprint
from ..io.fingerprint import fingerprint as fingerprint_of
from ..io.runfolder import (EVALUATION, RUN_FORMAT, SUMMARY, Flag, Image, Layer, Panel,
                            Replacement, RunBuilder, RunFolderError, Section, Summary, Tile,
                            UnitRecord, build_run, layer_folder, load_evaluation,
                            plan_replacement)
from ..io.safejson import json_float
from ..methods import SANITY, Method, TopExamples, registered
from ..methods.running_statistics import StatisticsPlan, UnitStatistics
from ..models.checkpoint import encode_model
from ..models.evaluation import method_agreement
from ..methods.examples import PRECISIONS
from ..params import AnyOf, Interval, Options, Param, UnitPicks
from ..report import gallery_files
from ..report.render import encode_png, signed_border_grid, tile
from ..seam import Key, LayerInfo, Probe, UnsupportedError, directed, probe
from ..seam.base import RANDOMIZATIONS
from ..units import resolve_units
from . import distributed
from .resume import MiningCheckpoint
from .sanity import rerun_figure

__all__ = ["VisualizeSettings", "visualize", "shown_units", "statistics_plan", "LayerPage",
           "METHODS", "SETTINGS", "STATISTICS_PLAN"]

METHODS = ("examples", "statistics", "maximize", "sampling", "filters", "filter_views",
           "deconvnet", "combination")           # featvis's own, in the registry's order
RANDOMIZATION_CHECKS = "Randomization checks"     # what a layer's page lists when skipped
SETTINGS = {     # the run's own parameters; each method declares its own (Method.params)
    "units": Param(AnyOf(Interval(int, 1, 1_000_000), UnitPicks(), metavar="N|LAYER:UNIT,...",
                         none=True), None,
                   "visualize the first N units of each layer, or the units named by layer "
                   "(features.3:5,features.3:9: those layers and units; default: all)"),
    "seed": Param(Interval(int, 0, 2**63 - 1), 0, "random seed"),
    "upscale": Param(Interval(int, 1, 64), 2, "pixels per input pixel in the pictures"),
    "precision": Param(Options(PRECISIONS), "float32",
                       "the mining pass's forward (dataset examples, statistics): float32, or "
                       "bfloat16 under autocast (opt-in: faster where the device has bfloat16 "
                       "units; scores rounded to 8 bits, ties then go to the lower index)"),
}


@dataclass
class VisualizeSettings:
    """What to compute: layers (None = the model's default), methods (None = every registered
    method), and each method's parameters: featvis's own as fields, a registered plugin's in
    ``options`` (name -> value), each checked against its declaration (:mod:`featvis.params`).
    ``rho`` and ``bounds`` constrain maximization: by default the sphere of the inputs' mean
    norm (a DBN's recorded input norm) within the box of the inputs' range (``bounds="data"``;
    ``None``: no box), so that its pictures stay images."""

    layers: Sequence[Key] | None = None
    methods: Sequence[str] | None = None
    units: int | Mapping[Key, Sequence[int]] | None = None   # first N, or by layer; None: all
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
    spatial: str | int = "positive"   # maximization's reduction of a unit's positions
    snapshots: tuple[int, ...] = ()   # maximization steps shown along the way
    param: str = "pixel"              # what maximization climbs: pixels or "fourier"
    deconvnet_rule: str = "deconvnet"  # deconvnet's rule at each ReLU (or "guided")
    bins: int = 64                    # the statistics' histogram bins per unit
    bands: int = 10                   # ... value bands, and examples shown from each
    per_band: int = 5
    threshold: float = 0.0            # ... a unit fires on a score above this
    precision: str = "float32"        # the mining pass's forward (or "bfloat16": autocast)
    options: Mapping[str, Any] = field(default_factory=dict)   # plugins' parameters

    @staticmethod
    def declared(methods: Sequence[Method] | None = None) -> dict[str, tuple[Param, list[str]]]:
        """Every declared parameter of a run by name: the run's own (:data:`SETTINGS`) and
        those of ``methods`` (default: every registered method), each with the names of the
        methods that take it (the first method's declaration of a shared name)."""
        declared: dict[str, tuple[Param, list[str]]] = {
            name: (param, []) for name, param in SETTINGS.items()}
        for m in registered().values() if methods is None else methods:
            for name, param in m.params.items():
                declared.setdefault(name, (param, []))[1].append(m.name)
        return declared

    def chosen(self) -> list[Method]:
        """The methods to run, in registry order (a ValueError for an unknown one)."""
        methods = registered()
        names = list(methods) if self.methods is None else list(self.methods)
        unknown = [m for m in names if m not in methods]
        if unknown or not names:
            raise ValueError(f"unknown method {unknown[0] if unknown else '(none)'!r}: choose "
                             f"from {', '.join(methods)}")
        return [m for name, m in methods.items() if name in names]

    def params(self, method: Method) -> dict[str, Any]:
        """``method``'s parameters in this run, each checked against its declaration."""
        values = {}
        for name, declared in method.params.items():
            value = getattr(self, name) if hasattr(type(self), name) and name != "options" \
                else self.options.get(name, declared.default)
            values[name] = declared.validate(name, value)
        return values

    def check(self, seam: Probe, n_inputs: int | None = None) -> list[Key]:
        """The layers to show, after refusing unknown methods or layers and values that
        cannot work (a parameter outside its declaration, ``k`` above ``n_inputs``, ``top``
        above a layer's units below), before any computing."""
        chosen = self.chosen()
        for name, declared in SETTINGS.items():
            declared.validate(name, getattr(self, name))
        known = {name for m in chosen for name in m.params}
        stray = sorted(set(self.options) - known)
        if stray:
            raise ValueError(f"options: no method chosen takes a parameter {stray[0]!r}")
        params = {m.name: self.params(m) for m in chosen}
        if "examples" in params and n_inputs is not None and self.k > n_inputs:
            raise ValueError(f"k={self.k} is larger than the number of inputs ({n_inputs})")
        picks = self.units if isinstance(self.units, Mapping) else None
        keys = list(dict.fromkeys(self.layers)) if self.layers else \
            list(picks) if picks else seam.default_layers()
        if picks:
            for key in keys:
                if key not in picks:
                    raise ValueError(f"units names units of {', '.join(map(str, picks))}; layer "
                                     f"{key} is shown without any: name its units too, or "
                                     "leave it out of layers")
            for key, units in picks.items():
                if key not in keys:
                    raise ValueError(f"units: layer {key} is not among the layers shown")
                info = seam.layer(key)
                if max(units) >= info.units:
                    raise ValueError(f"units: layer {key} has {info.units} "
                                     f"{info.unit_name}s (0..{info.units - 1}), not "
                                     f"{max(units)}")
        if not keys:
            raise ValueError(f"{seam.kind} has no layer to show (no Conv2d or Linear); name "
                             "some with layers=")
        uses_top = [m for m in chosen if "top" in m.params]
        for key in keys:
            seam.layer(key)
            # Methods that take top units below, unless the model pictures the layer itself
            # (a ConvDBN's bases), refuse an impossible top before any computing.
            if not any("bases" not in m.requires or seam.bases(key) is None for m in uses_top):
                continue
            try:
                below = seam.below(key)
                n_below = seam.incoming_weights(key).shape[1] if below is not None else 0
            except UnsupportedError:
                continue                      # the method says why on the layer's page
            if below is not None and self.top > n_below:
                raise ValueError(f"top={self.top} is larger than layer {below}'s {n_below} "
                                 f"units (--top for layer {key})")
        return keys

    def record(self) -> dict:
        """The settings as ``summary.json`` records them."""
        recorded = asdict(self)
        if not recorded["options"]:
            del recorded["options"]
        return recorded


@dataclass
class LayerPage:
    """One layer's page of the run folder, as a method's writer draws on it (the
    :class:`featvis.methods.Page` of the methods), and what the run records of it."""

    probe: Probe
    key: Key
    info: LayerInfo
    units: list[int]
    images: Data                                   # the inputs as the gallery shows them
    model_images: Data                             # the inputs as the model sees them
    model_sample: torch.Tensor                     # model_images' head: the re-runs' inputs
    data_mean: torch.Tensor                        # the shown inputs' mean (of the head)
    show: Callable[[torch.Tensor], torch.Tensor]   # model-space inputs -> shown
    labels: torch.Tensor | None
    builder: RunBuilder | None
    upscale: int
    seed: int
    method: Method | None = None                   # the method drawing now
    params: dict[str, Any] = field(default_factory=dict)
    folder: str = ""
    sections: list[Section] = field(default_factory=list)
    details: list[UnitRecord] = field(default_factory=list)
    figures: dict[str, dict[str, float | None]] = field(default_factory=dict)
    pictures: dict[str, torch.Tensor] = field(default_factory=dict)   # for the figures
    flags: list[Flag] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)   # figure label -> its meaning

    def __post_init__(self) -> None:
        self.folder = layer_folder(self.key)
        self.details = [UnitRecord(unit=i, files={}, panels=[]) for i in self.units]

    def tile(self, pictures: torch.Tensor, **kwargs: Any):
        """:func:`featvis.report.render.tile` at the run's upscale."""
        return tile(pictures, upscale=self.upscale, **kwargs)

    def signed_grid(self, pictures: torch.Tensor, weights: torch.Tensor, cols: int):
        """Pictures framed by the sign of their weights, ``cols`` a row."""
        return signed_border_grid(pictures, weights, cols=cols, upscale=self.upscale)

    def detail(self, j: int) -> UnitRecord:
        """The record of the ``j``-th shown unit in ``summary.json``."""
        return self.details[j]

    def figure(self, label: str, value: float, about: str | None = None,
               method: str | None = None) -> None:
        """A figure of the layer, filed under the method (``layers[i].figures[method]``);
        ``about``: what it means and what a good value is, in one line."""
        self.figures.setdefault(method or self.method.name, {})[label] = json_float(value)
        if about:
            self.notes[label] = about

    def flag(self, label: str, value: float, explanation: str) -> None:
        """A figure that says the method's pictures may not show the model."""
        self.flags.append(Flag(method=self.method.name, figure=label, value=json_float(value),
                               explanation=explanation))

    def keep(self, pictures: torch.Tensor) -> None:
        """The method's pictures, for the distinctness and agreement figures."""
        self.pictures[self.method.name] = pictures

    def png(self, name: str, array, unit: int | None = None) -> str:
        """Write a picture of the layer (or of its ``unit``-th shown unit); its path."""
        where = self.folder if unit is None else f"{self.folder}/units/{self.units[unit]}"
        return self.builder.write(f"{where}/{name}.png", encode_png(array))

    def section(self, array, caption: str, name: str | None = None) -> None:
        """An overview picture of the method over the layer's units (its ``name`` when the
        method draws several)."""
        m = self.method
        file = self.png(name or m.name, array)
        self.sections.append(Section(method=m.name, title=m.title, legend=m.legend, file=file,
                                     caption=caption, params=_plain(self.params)))

    def panel(self, j: int, pictures: Sequence[tuple], facts: Sequence = (),
              tile: str | None = None, tile_cells: int = 1) -> None:
        """The ``j``-th unit's panel: ``pictures`` of ``(name, array, caption, style)``,
        ``facts`` of ``(label, value)``. What stands for the unit in the layer's overviews
        is the first ``tile_cells`` cells of picture ``tile`` (default: the first "single"
        picture, else the first), where its layout is known (a :func:`tile` grid)."""
        m, images = self.method, []
        for name, array, caption, style in pictures:
            file = self.png(name, array, j)
            self.details[j]["files"][name] = file
            images.append(Image(file=file, caption=caption, alt=f"{m.title}: {name}",
                                style=style))
            if getattr(array, "layout", None) is not None:
                images[-1]["grid"] = list(array.layout)
        self.details[j]["panels"].append(Panel(method=m.name, title=m.title, images=images,
                                               facts=[list(f) for f in facts]))
        names = [p[0] for p in pictures]
        singles = [name for name, *_, style in pictures if style == "single"]
        chosen = tile if tile is not None else (singles or names or [None])[0]
        image = images[names.index(chosen)] if chosen in names else None
        if image is not None and "grid" in image:
            self.details[j].setdefault("tiles", {})[m.name] = Tile(
                file=image["file"], grid=image["grid"], cells=min(tile_cells, image["grid"][1]))


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    """A method's parameters as ``summary.json`` shows them: numbers, text, lists of them;
    anything else by its text."""
    def plain(value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return json_float(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value)
    return {name: plain(value) for name, value in params.items()}


def write_pictures(page: LayerPage, result: Any) -> None:
    """The default writer: ``result.images`` as an overview grid and, per unit, its picture
    (``(U, *shape)``) or strip (``(U, P, *shape)``)."""
    pictures = result.images
    strips = pictures.dim() == len(page.probe.input_shape) + 2
    page.section(page.tile(pictures[:, 0] if strips else pictures), "one tile per unit")
    for j in range(len(page.units)):
        row = pictures[j] if strips else pictures[j:j + 1]
        page.panel(j, [(page.method.name, page.tile(row, cols=len(row)), page.method.title,
                        "strip" if strips else "single")])
    page.keep(pictures[:, 0] if strips else pictures)


def shown_units(info: LayerInfo, s: VisualizeSettings) -> list[int]:
    """The units of a layer to show: those ``s.units`` names for it, or the first
    ``s.units`` (all for None)."""
    if isinstance(s.units, Mapping):
        return list(dict.fromkeys(s.units[info.name]))
    return list(range(info.units if s.units is None else min(s.units, info.units)))


def _rows(examples: TopExamples, rows: list[int]) -> TopExamples:
    """The top examples of some of the units (``rows`` of every per-unit tensor)."""
    return replace(examples, **{f.name: getattr(examples, f.name)[rows]
                                for f in fields(examples)
                                if isinstance(getattr(examples, f.name), torch.Tensor)})


def _compute(method: Method, page: LayerPage, mined: TopExamples | UnitStatistics | None,
             params: dict, progress: bool, ctx: distributed.Context):
    """The method's result for the page's units; a split method's in the fixed global chunks
    of :mod:`featvis.pipeline.distributed` (this rank's share), gathered on rank 0 (``None``
    on the other ranks). One process computes the same chunks, so it writes the same bytes.
    ``mined``: the layer's top examples, or its statistics (which hold them)."""
    gathered = mined if isinstance(mined, UnitStatistics) else None
    examples = mined.top if gathered is not None else mined
    if "statistics" in inspect.signature(method.compute).parameters and gathered is None:
        raise UnsupportedError("the data was mined without statistics ('featvis mine "
                               "--no-statistics')")
    context = dict(inputs=page.model_images, seed=page.seed, progress=progress,
                   statistics=gathered)

    def compute(rows: Sequence[int]):
        mined = None if examples is None else \
            examples if len(rows) == len(page.units) else _rows(examples, list(rows))
        return method.run_compute(page.probe, page.key, [page.units[j] for j in rows],
                                  **params, **context, examples=mined)
    if not method.split:
        return compute(range(len(page.units)))
    return distributed.per_unit(ctx, len(page.units), compute)


def _sanity_figures(page: LayerPage, ran: list[Method], s: VisualizeSettings) -> str | None:
    """Per method: how distinct its pictures are, and how much of them survives re-drawing
    the layer's (and the lower layers') weights; flags what looks like it ignores the model.
    Returns why the randomization checks were skipped (a layer with nothing to re-draw), or
    ``None``."""
    seam, key = page.probe, page.key
    units = resolve_units(page.units[:SANITY["units"]], page.info.units, seam.device)
    try:
        randomized = {mode: seam.like(seam.randomized(key, mode, s.seed))
                      for mode in RANDOMIZATIONS}
    except UnsupportedError as exc:
        randomized, skipped = {}, str(exc)
    else:
        skipped = None

    def record(label: str, value: float, why: str, about: str) -> None:
        page.figure(label, value, about)
        if value > SUSPECT:
            page.flag(label, value, why)

    for method in ran:
        page.method = method
        pictures = page.pictures.get(method.name)
        if len(page.units) >= 2 and pictures is not None:        # units against units
            if method.made_of_data:
                record("distinctness (mean - data mean)", example_distinctness(
                    pictures, page.data_mean), _LOOK_ALIKE, _DISTINCT)
            else:
                record("distinctness", distinctness(pictures), _LOOK_ALIKE, _DISTINCT)
        measure = "index overlap" if method.overlap else "similarity"
        available = dict(s.params(method), inputs=page.model_sample)
        for mode in randomized:
            record(f"randomized {measure} ({mode})",
                   rerun_figure(method, seam, randomized[mode], key, units, available),
                   _SURVIVES_INDICES if method.overlap else _SURVIVES,
                   _RANDOMIZED[mode] + (_OVERLAP if method.overlap else _SIMILAR))
    return skipped


_DISTINCT = (f"the mean cosine between the pictures of different units: near 0 is good; "
             f"above {SUSPECT:g} they look alike")
_RANDOMIZED = {"layer": "the pictures again with this layer's weights re-drawn at random, ",
               "cascade": "the pictures again with this and every lower layer's weights "
                          "re-drawn at random, "}
_OVERLAP = f"as the share of the same inputs chosen: near 0 is good, above {SUSPECT:g} a flag"
_SIMILAR = (f"as the cosine with the trained model's pictures: near 0 is good, above "
            f"{SUSPECT:g} a flag")


_LOOK_ALIKE = ("the units' pictures look alike: they show what the method or the data puts "
               "into every picture more than what each unit learned")
_SURVIVES = ("the pictures barely change when the weights are re-drawn at random: they do "
             "not show what the model learned")
_SURVIVES_INDICES = ("the same inputs are chosen when the weights are re-drawn at random: "
                     "the choice does not show what the model learned")


def _layer(seam: Probe, key: Key, s: VisualizeSettings, run: RunBuilder | None,
           data: "_Inputs", mined: TopExamples | UnitStatistics | None, progress: bool,
           ctx: distributed.Context) -> Layer | None:
    """The layer's entry of ``summary.json`` (its pictures written by ``run``); on a rank
    other than 0 only its share of the split methods, and ``None``."""
    info = seam.layer(key)
    units = shown_units(info, s)
    page = LayerPage(seam, key, info, units, data.images, data.model_images, data.model_sample,
                     data.mean, data.show, data.labels, run, s.upscale, s.seed)
    ran, unavailable = [], {}
    for method in s.chosen():
        if not (ctx.is_main or method.split):
            continue
        why = method.unavailable(seam, key)
        if why is None:
            page.method, page.params = method, s.params(method)
            try:
                result = _compute(method, page, mined, page.params, progress, ctx)
                if result is not None:            # another rank's: rank 0 draws the pictures
                    (method.write or write_pictures)(page, result)
            except UnsupportedError as exc:       # found out only while running
                why = str(exc)
                if ctx.is_main:
                    print(f"featvis: warning: layer {key}: {method.title} not shown: "
                          f"{first_line(exc)}", file=sys.stderr)
        if why is not None:
            unavailable[method.title] = why
            continue
        ran.append(method)
    if not ctx.is_main:
        return None
    skipped = _sanity_figures(page, ran, s) if s.figures else None
    if skipped is not None:
        unavailable[RANDOMIZATION_CHECKS] = skipped
    agreement = method_agreement({name: p.flatten(1) for name, p in page.pictures.items()
                                  if p[0].numel() == math.prod(seam.input_shape)})
    for pair, cosine in agreement.items():
        page.figure(f"mean centred cosine {pair}", cosine.mean().item(),
                    "how alike two methods' pictures of the same unit are (1: the same, "
                    "0: unrelated); methods that show the same feature agree", "agreement")
        for j, detail in enumerate(page.details):
            detail.setdefault("agreement", {})[pair] = json_float(cosine[j].item())
    if agreement:
        for detail in page.details:
            detail["panels"].append(Panel(
                method="agreement", title="Agreement between methods", images=[],
                facts=[[pair.replace("~", " ~ "), value]
                       for pair, value in detail["agreement"].items()]))
    layer = Layer(layer=key, name=f"layer {key}", folder=page.folder, type=info.type,
                  n_units=info.units, unit_shape=list(info.unit_shape), units=units,
                  methods=[m.name for m in ran], unavailable=unavailable,
                  sections=page.sections,
                  files={sec["method"]: sec["file"] for sec in page.sections},
                  figures=page.figures, notes=page.notes, flags=page.flags,
                  unit_details=page.details)
    if info.unit_axis != 1:                # a token or channels-last layer's unit axis
        layer["unit_axis"] = info.unit_axis
    if info.unit_name != "unit":           # directions in the layer's space
        layer["unit_name"] = info.unit_name
    return layer


STATISTICS_PLAN = ("bins", "bands", "per_band", "threshold")   # and the run's seed


def statistics_plan(s: VisualizeSettings) -> StatisticsPlan | None:
    """The statistics the mining pass gathers: the ``statistics`` method's, if it runs."""
    chosen = {m.name: m for m in s.chosen()}
    if "statistics" not in chosen:
        return None
    params = s.params(chosen["statistics"])
    return StatisticsPlan(**{name: params[name] for name in STATISTICS_PLAN}, seed=s.seed)


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


@dataclass
class _Inputs:
    """A run's data: as shown and as the model sees it (tensors or datasets), the head of
    the latter that stands for it besides mining (a tensor's whole), the shown inputs' mean
    (of the head), how model inputs are shown, the labels."""

    images: Data
    model_images: Data
    model_sample: torch.Tensor
    mean: torch.Tensor
    show: Callable[[torch.Tensor], torch.Tensor]
    labels: torch.Tensor | None


def _inputs(images: Data, normalization, labels: torch.Tensor | None,
            device: torch.device) -> _Inputs:
    """The :class:`_Inputs` of ``images``: a tensor moved to ``device``, a dataset left to be
    read (its :func:`~featvis.data.stream.head` read now, its ``labels`` used if it has
    them)."""
    if isinstance(images, torch.Tensor):
        images = sample = images.to(device)
    else:
        sample = stream.head(images).to(device)
        if labels is None and isinstance(getattr(images, "labels", None), torch.Tensor):
            labels = images.labels
    if normalization is None:
        model_images, model_sample, show = images, sample, (lambda x: x)
    else:
        model_images = stream.mapped(images, normalization.normalize)
        model_sample = model_images if isinstance(images, torch.Tensor) else \
            normalization.normalize(sample)
        show = normalization.denormalize
    return _Inputs(images, model_images, model_sample, sample.flatten(1).mean(0), show, labels)


def visualize(model: torch.nn.Module | Probe, images: Data, out: str | os.PathLike,
              settings: VisualizeSettings | None = None, *,
              labels: torch.Tensor | None = None, normalization=None,
              model_path: str | os.PathLike | None = None,
              save_model_as: str | None = None, force: bool = False, gallery: bool = True,
              progress: bool = True, ctx: distributed.Context | None = None,
              examples: dict[Key, TopExamples] | None = None,
              directions: Mapping[Key, torch.Tensor] | None = None,
              loading: Loading | None = None,
              checkpoint: MiningCheckpoint | None = None) -> Summary | None:
    """Compute every chosen method for every chosen layer of ``model`` and write the run
    folder ``out``, with its HTML gallery (``out/index.html``) unless ``gallery=False``.

    ``images (N, *input_shape)`` are the inputs as they should be shown (a tensor, or a
    map-style dataset such as :class:`~featvis.data.ImageFolder`, streamed through a
    ``DataLoader`` as ``loading`` says; what needs a look at the data besides mining, the
    norm ``rho``, ``bounds="data"`` and the sanity re-runs, looks at its first
    :data:`~featvis.data.stream.SAMPLE` inputs), ``labels (N,)``
    their classes if known (the examples' class purity; a dataset's ``labels``); with
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
    ``examples``, every layer's top examples (or its
    :class:`~featvis.methods.running_statistics.UnitStatistics`, which hold them) already
    mined (``featvis merge``), skip mining.
    ``directions`` (layer -> ``(V, U)``) shows those layers' directions in their unit space as
    their units (:func:`featvis.seam.directed`: dataset examples and maximization; the
    layers shown by default are then these). A ``checkpoint``
    (:class:`~featvis.pipeline.resume.MiningCheckpoint` of this rank's share) saves the
    mining state as it goes and continues a killed run's; it is removed once ``out`` is
    written.

    Example:
        >>> visualize(cnn, images, "run", VisualizeSettings(units=8))  # doctest: +SKIP
    """
    s = settings or VisualizeSettings()
    ctx = ctx or distributed.Context()
    seam = probe(model, stream.input_shape(images))    # layers are found once, here
    if directions is not None:
        seam = directed(seam, directions)
    model = seam.model
    keys = s.check(seam, n_inputs=stream.count(images))
    s = replace(s, methods=tuple(m.name for m in s.chosen()))
    plan = plan_replacement(out, force=force, reading=[model_path] if model_path else (),
                            rewriting=[save_model_as] if save_model_as else ()) \
        if ctx.is_main else None
    fingerprint = model_fingerprint(model)
    if plan is not None:
        _keep_evaluation(plan, fingerprint)
    described = seam.describe()
    if ctx.is_main:
        _untrained_note(described)
    data = _inputs(images, normalization, labels, seam.device)
    sample = data.model_sample
    if s.rho is None:                  # a DBN's recorded input norm, else the inputs' own
        s = replace(s, rho=seam.default_rho() or
                    round(sample.flatten(1).norm(dim=1).mean().item(), 6))
    if s.bounds == "data":            # the inputs' range, widened to hold 0 (see maximize)
        s = replace(s, bounds=(min(0.0, sample.min().item()), max(0.0, sample.max().item())))
    if ctx.distributed:
        distributed.agree(ctx, model=fingerprint,
                          data=stream.data_fingerprint(data.model_images, data.model_sample),
                          settings=asdict(s), threads=torch.get_num_threads(),
                          directions=None if directions is None else fingerprint_of(
                              {str(key): v for key, v in seam.directions.items()}))
    progress = progress and ctx.is_main
    shown = {key: shown_units(seam.layer(key), s) for key in keys}
    if examples is None and {"examples", "statistics"} & set(s.methods):   # one pass
        examples = distributed.top_examples(seam, data.model_images, keys, k=s.k,
                                            units=shown, ctx=ctx, loading=loading,
                                            progress=progress, checkpoint=checkpoint,
                                            statistics=statistics_plan(s),
                                            labels=data.labels, precision=s.precision)
    examples = examples or {}
    with build_run(plan) if plan is not None else contextlib.nullcontext() as run:
        layers = [_layer(seam, key, s, run, data, examples.get(key), progress, ctx)
                  for key in keys]
        distributed.barrier(ctx)     # every rank done: only now may rank 0 publish
        summary = None                 # rank 0's; None on the other ranks
        if ctx.is_main:
            summary = Summary(
                format=RUN_FORMAT,
                featvis_version=__version__,
                model_sha256=fingerprint,
                trained_layers=described.pop("trained_layers"),
                model=described | {
                    "path": save_model_as or (None if model_path is None
                                              else str(model_path)),
                    "normalize": None if normalization is None else {
                        "mean": normalization.mean.tolist(),
                        "std": normalization.std.tolist()}},
                settings=s.record(),
                sanity_settings=SANITY if s.figures else None,
                inputs={"count": len(data.model_images), "labelled": data.labels is not None},
                layers=layers,
            )
            run.write(SUMMARY, json.dumps(summary, indent=1, allow_nan=False).encode())
            if save_model_as is not None:
                run.write(save_model_as, encode_model(model))
            if EVALUATION in plan.carry:
                run.link(plan.contents.root / EVALUATION, EVALUATION,
                         plan.contents.own[EVALUATION])
            if gallery:
                for rel, data in gallery_files(run.root).items():
                    run.write(rel, data)
    distributed.barrier(ctx, "publishing")   # published: now every rank's state may go
    if checkpoint is not None:
        checkpoint.remove()
    return summary
