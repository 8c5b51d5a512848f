"""Run the five methods over the layers of a DBN and write PNG grids plus ``summary.json``.

Output layout (all paths relative, written to a temporary folder then moved into place)::

    OUT/summary.json                      model, settings, per-layer and per-unit figures
    OUT/layer{d}/{method}.png             overview grid of a method over the layer's units
    OUT/layer{d}/units/{i}/{image}.png    the pictures of one unit, for the gallery
    OUT/manifest.json                     every file featvis wrote (see featvis.runfolder)
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from . import __version__
from .checkpoint import encode_dbn
from .errors import check_int
from .evaluate import method_agreement
from .fingerprint import model_fingerprint
from .methods import (TopExamples, linear_combination, maximize, ranked_filters,
                      sample_unit, top_examples)
from .models.dbn import DBN
from .render import encode_png, signed_border_grid, tile
from .report import EVALUATION, RUN_FORMAT, SUMMARY, ReportError, gallery_files, load_evaluation
from .runfolder import Replacement, RunBuilder, build_run, plan_replacement

__all__ = ["METHODS", "VisualizeSettings", "visualize"]

METHODS = ("examples", "maximize", "sampling", "filters", "combination")
_STRIP = 10            # samples shown per unit
_OVERVIEW_ROWS = 100   # units in the ranked-filters overview


@dataclass
class VisualizeSettings:
    """What to compute: layers (None = all), methods, and each method's main knobs."""

    layers: Sequence[int] | None = None
    methods: Sequence[str] = METHODS
    units: int | None = None          # the first N units of each layer; None = all
    k: int = 9                        # dataset examples per unit
    top: int = 10                     # ranked filters / linear-combination terms
    steps: int = 300
    restarts: int = 9
    samples: int = 100
    variant: str = "one-hot"
    seed: int = 0
    upscale: int = 2

    def check(self, dbn: DBN, n_inputs: int | None = None) -> None:
        """Raise ``ValueError`` for unknown methods, layers outside ``dbn`` or a count that
        cannot work (``k`` above ``n_inputs``, ``top`` above a layer's units below), before
        any computing."""
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method {unknown[0] if unknown else '(none)'!r}: choose "
                             f"from {', '.join(METHODS)}")
        for d in self.layers or ():
            dbn.check_layer(d)
        for name in ("k", "top", "steps", "restarts", "samples", "upscale"):
            check_int(name, getattr(self, name))
        if self.units is not None:
            check_int("units", self.units)
        if "examples" in self.methods and n_inputs is not None and self.k > n_inputs:
            raise ValueError(f"k={self.k} is larger than the number of inputs ({n_inputs})")
        if {"filters", "combination"} & set(self.methods):
            for d in self.layers or range(1, dbn.n_layers + 1):
                if d > 1 and self.top > dbn.sizes[d - 1]:
                    raise ValueError(f"top={self.top} is larger than layer {d - 1}'s "
                                     f"{dbn.sizes[d - 1]} units (--top for layer {d})")


def _json_float(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 6)


def _units(dbn: DBN, d: int, s: VisualizeSettings) -> list[int]:
    """The units of layer ``d`` to show: the first ``s.units`` (all for None)."""
    return list(range(dbn.sizes[d] if s.units is None else min(s.units, dbn.sizes[d])))


def _layer(dbn: DBN, d: int, images: torch.Tensor, ex: TopExamples | None,
           s: VisualizeSettings, run: RunBuilder, progress: bool) -> dict:
    n_units = dbn.sizes[d]
    units = _units(dbn, d, s)
    folder = f"layer{d}"
    per_unit = [{"unit": i, "files": {}} for i in units]
    files: dict[str, str] = {}
    figures: dict[str, float | None] = {}

    def save(array, name: str, unit_index: int | None = None) -> None:
        if unit_index is None:
            files[name] = run.write(f"{folder}/{name}.png", encode_png(array))
        else:
            per_unit[unit_index]["files"][name] = run.write(
                f"{folder}/units/{units[unit_index]}/{name}.png", encode_png(array))

    up = s.upscale
    methods = [m for m in s.methods if not (m == "filters" and d == 1)]
    pictures: dict[str, torch.Tensor] = {}      # (U, D) picture per unit, for the agreement
    if ex is not None:
        save(tile(ex.mean, scale="minmax", upscale=up), "examples")
        for j, info in enumerate(per_unit):
            info["examples"] = {"values": [round(v, 6) for v in ex.values[j].tolist()],
                                "indices": ex.indices[j].tolist()}
            save(tile(images[ex.indices[j]], scale="minmax", cols=s.k, upscale=up),
                 "examples_strip", j)
            save(tile(ex.mean[j:j + 1], scale="minmax", upscale=up), "examples_mean", j)
        figures["examples_mean_top1"] = _json_float(ex.values[:, 0].mean().item())
        pictures["examples"] = ex.mean
    if "maximize" in methods:
        mx = maximize(dbn, d, units=units, steps=s.steps, restarts=s.restarts, seed=s.seed,
                      progress=progress)
        save(tile(mx.images, upscale=up), "maximize")
        for j, info in enumerate(per_unit):
            info["maximize"] = {"activation": _json_float(mx.activation[j].item()),
                                "invariance": _json_float(mx.invariance[j].item())}
            save(tile(mx.images[j:j + 1], upscale=up), "maximize", j)
        figures["maximize_mean_activation"] = _json_float(mx.activation.mean().item())
        figures["maximize_mean_invariance"] = _json_float(mx.invariance.nanmean().item())
        pictures["maximize"] = mx.images
    if "sampling" in methods:
        sm = sample_unit(dbn, d, units=units, n_samples=s.samples, variant=s.variant,
                         seed=s.seed, progress=progress)
        save(tile(sm.mean, scale="minmax", upscale=up), "sampling")
        for j in range(len(units)):
            save(tile(sm.samples[j, :_STRIP], scale="minmax", cols=_STRIP, upscale=up),
                 "samples_strip", j)
            save(tile(sm.mean[j:j + 1], scale="minmax", upscale=up), "samples_mean", j)
        pictures["sampling"] = sm.mean
    if "filters" in methods:
        below = linear_combination(dbn, d - 1, top=s.top).images   # layer d-1's pictures
        rf = ranked_filters(dbn, d, top=s.top)                # every unit, for the overview
        norms = dbn.rbms[d - 1].weight.norm(dim=1)
        rows = norms.argsort(descending=True, stable=True)[:_OVERVIEW_ROWS]
        save(signed_border_grid(below[rf.indices[rows].flatten()], rf.weights[rows].flatten(),
                                cols=s.top, upscale=up), "filters")
        for j, (info, i) in enumerate(zip(per_unit, units)):
            info["filters"] = {"indices": rf.indices[i].tolist(),
                               "weights": [round(w, 6) for w in rf.weights[i].tolist()]}
            save(signed_border_grid(below[rf.indices[i]], rf.weights[i], cols=s.top,
                                    upscale=up), "filters", j)
    if "combination" in methods:
        combo = linear_combination(dbn, d, top=s.top, units=units).images
        save(tile(combo, upscale=up), "combination")
        for j in range(len(units)):
            save(tile(combo[j:j + 1], upscale=up), "combination", j)
        pictures["combination"] = combo
    for pair, cosine in method_agreement(pictures).items():
        figures[f"agreement {pair}"] = _json_float(cosine.mean().item())
        for j, info in enumerate(per_unit):
            info.setdefault("agreement", {})[pair] = _json_float(cosine[j].item())
    return {"layer": d, "name": f"layer {d}", "n_units": n_units, "n_below": dbn.sizes[d - 1],
            "units": units, "methods": methods, "files": files, "figures": figures,
            "unit_details": per_unit}


def _keep_evaluation(plan: Replacement, fingerprint: str) -> None:
    """Carry the old run's ``evaluation.json`` over when it is of the same model."""
    if EVALUATION not in plan.contents.own:
        return
    try:
        old = load_evaluation(plan.contents.root) or {}
    except ReportError:
        old = {}
    if old.get("model_sha256") == fingerprint:
        plan.carry.append(EVALUATION)
    else:
        print(f"featvis: note: dropped {plan.contents.root / EVALUATION}: its figures are "
              "of another model (run 'featvis evaluate --run' again)", file=sys.stderr)


def _untrained_note(dbn: DBN) -> None:
    if dbn.trained_layers < dbn.n_layers:
        print(f"featvis: warning: layers {dbn.trained_layers + 1}..{dbn.n_layers} of the model "
              "are untrained (saved before training finished); their pictures show initial "
              "weights", file=sys.stderr)


def visualize(dbn: DBN, images: torch.Tensor, out: str | os.PathLike,
              settings: VisualizeSettings | None = None, *,
              model_path: str | os.PathLike | None = None, save_model_as: str | None = None,
              force: bool = False, gallery: bool = True, progress: bool = True) -> dict:
    """Compute the methods for every chosen layer and write the run folder ``out``, with
    its HTML gallery (``out/index.html``) unless ``gallery=False``.

    ``out`` is replaced only when everything succeeded and only by featvis's rule (see
    :mod:`featvis.runfolder`): a folder holding files featvis did not write is refused
    unless ``force``, which carries them over. ``model_path`` is the checkpoint the model
    was read from (recorded; if it lies inside ``out`` it must be featvis's own there and is
    carried over unchanged); ``save_model_as`` also saves the model inside the run. The old
    run's ``evaluation.json`` is kept if it is of the same model. Returns the summary that
    was written to ``out/summary.json``.

    Example:
        >>> visualize(dbn, images, "run", VisualizeSettings(units=10))  # doctest: +SKIP
    """
    s = settings or VisualizeSettings()
    s.check(dbn, n_inputs=len(images))
    plan = plan_replacement(out, force=force, reading=[model_path] if model_path else ())
    fingerprint = model_fingerprint(dbn)
    _keep_evaluation(plan, fingerprint)
    _untrained_note(dbn)
    layers = list(dict.fromkeys(s.layers)) if s.layers else list(range(1, dbn.n_layers + 1))
    images = images.to(dbn.rbms[0].weight.device)
    with build_run(plan) as run:
        examples = {}
        if "examples" in s.methods:    # every layer's units in one pass over the data
            examples = top_examples(dbn, images, layers, k=s.k, progress=progress,
                                    units={d: _units(dbn, d, s) for d in layers})
        summary = {
            "format": RUN_FORMAT,
            "featvis_version": __version__,
            "model_sha256": fingerprint,
            "trained_layers": dbn.trained_layers,
            "model": {"path": save_model_as or (None if model_path is None else str(model_path)),
                      "sizes": dbn.sizes, "input_norm": dbn.input_norm,
                      "recipe": None if dbn.recipe is None else dbn.recipe.to_dict(),
                      "history": [rbm.history for rbm in dbn.rbms], "data": dbn.data_info},
            "settings": asdict(s),
            "layers": [_layer(dbn, d, images, examples.get(d), s, run, progress)
                       for d in layers],
        }
        run.write(SUMMARY, json.dumps(summary, indent=1, allow_nan=False).encode())
        if save_model_as is not None:
            run.write(save_model_as, encode_dbn(dbn))
        if EVALUATION in plan.carry:
            run.link(plan.contents.root / EVALUATION, EVALUATION, plan.contents.own[EVALUATION])
        if gallery:
            for rel, data in gallery_files(run.root).items():
                run.write(rel, data)
    return summary
