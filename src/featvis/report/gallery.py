"""Build the static HTML gallery of a ``featvis visualize`` run folder.

The gallery is a view over the run's files: it reads ``summary.json`` and the PNGs it names
and writes ``index.html``, ``layer{d}/index.html``, ``layer{d}/units/{i}/index.html`` and a
training-curve plot. Everything is checked before anything is written, so a broken run
folder leaves an existing gallery untouched. Every ``src`` and ``href`` is a ``./`` or
``../`` relative, percent-encoded URL built from checked path segments, never a raw string
from ``summary.json``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping
from urllib.parse import quote

from ..errors import FeatvisError
from ..runfolder import check_segments, write_into_run
from ..safejson import loads as parse_json
from .templates import (METHOD_LEGENDS, METHOD_TITLES, e, figure, number, page, table)

__all__ = ["ReportError", "load_summary", "load_evaluation", "gallery_files",
           "build_gallery", "INDEX",
           "SUMMARY", "RUN_FORMAT", "EVALUATION", "EVALUATION_FORMAT"]

INDEX = "index.html"
CURVES = "training.png"
SUMMARY = "summary.json"
RUN_FORMAT = "featvis.run/1"
EVALUATION = "evaluation.json"          # written by `featvis evaluate --run`, optional
EVALUATION_FORMAT = "featvis.evaluation/1"
_MAX_JSON_BYTES = 256 * 2**20           # far above any real summary; bounds the memory


class ReportError(FeatvisError):
    """A run folder that cannot be turned into a gallery (missing or malformed file)."""


def _require(condition: bool, path: Path, problem: str) -> None:
    if not condition:
        raise ReportError(f"{path}: {problem}")


def _is_index(value: object) -> bool:
    """A non-negative int (not a bool): what layer and unit numbers in URLs must be."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _read_json(path: Path) -> object:
    _require(path.is_file() and not path.is_symlink(), path, "not a regular file")
    _require(path.stat().st_size <= _MAX_JSON_BYTES, path,
             f"larger than {_MAX_JSON_BYTES >> 20} MiB (not a featvis file)")
    try:
        return parse_json(path.read_bytes(), str(path))
    except ValueError as exc:
        raise ReportError(str(exc)) from None


def load_summary(run_dir: str | os.PathLike) -> dict:
    """Read and check ``summary.json`` and every PNG it names; :class:`ReportError` if broken."""
    run_dir = Path(run_dir)
    path = run_dir / SUMMARY
    _require(run_dir.is_dir(), run_dir, "not a folder")
    _require(path.is_file(), path, "missing (not a featvis visualize output folder?)")
    summary = _read_json(path)
    _require(isinstance(summary, dict) and summary.get("format") == RUN_FORMAT, path,
             f"not a featvis run summary (format {RUN_FORMAT} expected)")
    _require(isinstance(summary.get("model"), dict) and isinstance(summary.get("layers"), list)
             and summary["layers"], path, "missing 'model' or 'layers'")
    _require(summary.get("trained_layers") is None or _is_index(summary["trained_layers"]),
             path, "malformed 'trained_layers'")
    for layer in summary["layers"]:
        ok = isinstance(layer, dict) and all(
            key in layer for key in ("layer", "name", "units", "methods", "files", "figures",
                                     "unit_details"))
        _require(ok and _is_index(layer["layer"]) and _is_str_map(layer["files"])
                 and isinstance(layer["figures"], dict) and isinstance(layer["unit_details"], list)
                 and isinstance(layer["methods"], list)
                 and all(m in METHOD_TITLES for m in layer["methods"]), path,
                 "malformed layer entry")
        names = list(layer["files"].values())
        for unit in layer["unit_details"]:
            _require(isinstance(unit, dict) and _is_index(unit.get("unit"))
                     and _is_str_map(unit.get("files")), path,
                     f"malformed unit entry in layer {layer['layer']}")
            names.extend(unit["files"].values())
        for name in names:
            try:
                check_segments(name)
            except ValueError as exc:
                raise ReportError(f"{path}: image path {exc}") from None
            image = run_dir / name
            _require(image.is_file() and not image.is_symlink(), image,
                     "missing image named in summary.json")
    return summary


def load_evaluation(run_dir: str | os.PathLike) -> dict | None:
    """The run's ``evaluation.json`` if there is one; :class:`ReportError` if it is broken."""
    path = Path(run_dir) / EVALUATION
    if not path.exists():
        return None
    evaluation = _read_json(path)
    _require(isinstance(evaluation, dict) and evaluation.get("format") == EVALUATION_FORMAT
             and isinstance(evaluation.get("layers"), list)
             and isinstance(evaluation.get("rbm1"), dict), path,
             f"not a featvis evaluation (format {EVALUATION_FORMAT} expected)")
    return evaluation


def _evaluation_rows(rows: list[dict]) -> str:
    body = "".join(
        f"<tr><td>{e(r.get('name'))}</td><td>{number(r.get('reconstruction_error'))}</td>"
        f"<td>{number(None if r.get('probe_accuracy') is None else 100 * r['probe_accuracy'], 2)}"
        "%</td></tr>" for r in rows)
    return ("<table><tr><th>Layer</th><th>Test reconstruction error (per case)</th>"
            f"<th>Linear-probe test accuracy</th></tr>{body}</table>")


def _evaluation_card(evaluation: dict) -> str:
    rbm1 = evaluation["rbm1"]
    lines = [("Pseudo-log-likelihood, RBM 1 (test, per case)",
              number(rbm1.get("pseudo_likelihood"), 2))]
    if "log_z" in rbm1:
        lines += [("AIS log Z, RBM 1", f"{number(rbm1['log_z'], 2)} (&plusmn;3 s.e.: "
                                      f"{number(rbm1.get('log_z_low'), 2)} .. "
                                      f"{number(rbm1.get('log_z_high'), 2)}; "
                                      f"{e(rbm1.get('ais_runs'))} runs)"),
                  ("Test log-likelihood, RBM 1 (nats per case)",
                   number(rbm1.get("test_log_likelihood"), 2))]
    return ('<section class="card"><h2>Model figures</h2>'
            f"{_evaluation_rows(evaluation['layers'])}{table(lines)}</section>")


def _curves_png(summary: dict) -> bytes | None:
    """Reconstruction error per epoch per layer, drawn with matplotlib (None without history)."""
    history = summary["model"].get("history") or []
    if not any(history):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for d, entries in enumerate(history, start=1):
        if entries:
            ax.plot([x["epoch"] for x in entries], [x["error_per_case"] for x in entries],
                    marker="o", label=f"RBM {d}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("squared error per case")
    ax.set_title("Training reconstruction error (rbm.m's figure)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _url(path: str, depth: int) -> str:
    """The URL of the run-relative ``path`` (checked segments) from a page ``depth`` folders
    below the run folder: ``./`` or ``../`` relative and percent-encoded."""
    return ("../" * depth or "./") + quote(path)


def _model_table(model: dict) -> str:
    recipe = model.get("recipe") or {}
    data = model.get("data") or {}
    rows = [("Architecture", e("-".join(map(str, model.get("sizes", []))))),
            ("Data", e(", ".join(f"{k}: {v}" for k, v in data.items()) or "unknown")),
            ("Input norm &rho;", number(model.get("input_norm")))]
    if recipe:
        rows.append(("Training recipe", e(", ".join(f"{k}={v}" for k, v in recipe.items()))))
    if model.get("path"):
        rows.append(("Checkpoint", f"<code>{e(model['path'])}</code>"))
    return table(rows)


def _figures_table(layer: dict) -> str:
    labels = {"examples_mean_top1": "mean top-1 example activation",
              "maximize_mean_activation": "mean activation reached by maximization",
              "maximize_mean_invariance": "mean invariance (cosine between restarts)"}
    rows = [(e(labels.get(k, k.replace("agreement ", "mean agreement (centred cosine) "))),
             number(v)) for k, v in layer["figures"].items()]
    return table(rows) if rows else ""


def _index_page(summary: dict, has_curves: bool, evaluation: dict | None) -> str:
    rows = []
    for layer in summary["layers"]:
        d = layer["layer"]
        thumbs = "".join(
            f'<a href="layer{d}/{INDEX}">'
            f'<img class="thumb" src="{e(_url(layer["files"][m], 0))}" '
            f'alt="{e(METHOD_TITLES[m])}, {e(layer["name"])}" title="{e(METHOD_TITLES[m])}"></a>'
            for m in layer["methods"] if m in layer["files"])
        rows.append(f'<tr><td><a href="layer{d}/{INDEX}">{e(layer["name"])}</a></td>'
                    f'<td>{e(layer.get("n_units", len(layer["units"])))}</td>'
                    f'<td><div class="units">{thumbs}</div></td></tr>')
    curves = figure(_url(CURVES, 0), "Training reconstruction error per epoch, one line per "
                    "RBM.", "training curves") if has_curves else ""
    sizes = summary["model"].get("sizes") or []
    trained = summary.get("trained_layers", len(sizes) - 1)
    warning = "" if trained >= len(sizes) - 1 else (
        f'<p class="warning">Only {e(trained)} of the model\'s {e(len(sizes) - 1)} layers are '
        "trained (the checkpoint was saved before training finished): the pictures of layers "
        f"{e(trained + 1)}&ndash;{e(len(sizes) - 1)} show untrained weights.</p>")
    body = (f'<section class="card"><h2>Model</h2>{warning}{_model_table(summary["model"])}'
            f"{curves}</section>"
            + (_evaluation_card(evaluation) if evaluation else "") +
            '<section class="card"><h2>Layers</h2><table><tr><th>Layer</th><th>Units</th>'
            f'<th>Overview of each method</th></tr>{"".join(rows)}</table></section>')
    return page("featvis gallery", body, [(INDEX, "gallery")])


def _layer_page(layer: dict, evaluation: dict | None) -> str:
    d = layer["layer"]
    model_rows = [r for r in (evaluation or {}).get("layers", []) if r.get("layer") == d]
    sections = []
    for m in layer["methods"]:
        if m in layer["files"]:
            sections.append(
                f'<section class="card"><h2>{e(METHOD_TITLES[m])}</h2>'
                f"<p>{METHOD_LEGENDS[m]}</p>"
                + figure(_url(layer["files"][m], 1), f"{e(METHOD_TITLES[m])}, one tile per unit"
                         + (" (rows: units by incoming-weight norm)" if m == "filters" else ""),
                         f"{METHOD_TITLES[m]} of {layer['name']}") + "</section>")
    links = "".join(f'<a href="units/{e(u["unit"])}/{INDEX}">{e(u["unit"])}</a>'
                    for u in layer["unit_details"])
    body = (f'<section class="card">{_figures_table(layer)}'
            f'{_evaluation_rows(model_rows) if model_rows else ""}</section>{"".join(sections)}'
            f'<section class="card"><h2>Units</h2><div class="units">{links}</div></section>')
    return page(f"{layer['name']}", body,
                [(f"../{INDEX}", "gallery"), (INDEX, layer["name"])])


def _unit_page(layer: dict, position: int) -> str:
    unit = layer["unit_details"][position]
    files = unit["files"]
    i = unit["unit"]

    def up(name: str) -> str:
        return _url(files[name], 3)           # unit pages are 3 folders below the run
    panels = []
    if "examples_strip" in files:
        values = ", ".join(number(v) for v in unit.get("examples", {}).get("values", []))
        panels.append(("examples", figure(up("examples_strip"), f"activations: {values}",
                                          "top examples", "strip")
                       + figure(up("examples_mean"), "their mean", "mean of top examples",
                                "single")))
    if "maximize" in files:
        mx = unit.get("maximize", {})
        panels.append(("maximize", figure(
            up("maximize"), f"activation {number(mx.get('activation'))}, "
                            f"invariance {number(mx.get('invariance'))}", "maximization",
            "single")))
    if "samples_strip" in files:
        panels.append(("sampling", figure(up("samples_strip"), "samples", "samples", "strip")
                       + figure(up("samples_mean"), "their mean", "mean of samples",
                                "single")))
    if "filters" in files:
        flt = unit.get("filters", {})
        weights = ", ".join(
            f'<span class="{"pos" if w >= 0 else "neg"}">{e(j)}: {w:+.3f}</span>'
            for j, w in zip(flt.get("indices", []), flt.get("weights", [])))
        panels.append(("filters", figure(up("filters"), f"unit: weight &mdash; {weights}",
                                         "ranked filters", "strip")))
    if "combination" in files:
        panels.append(("combination", figure(up("combination"), "linear combination",
                                             "linear combination", "single")))
    if unit.get("agreement"):
        panels.append(("agreement", table((e(pair.replace("~", " ~ ")), number(v))
                                          for pair, v in unit["agreement"].items())))
    details = layer["unit_details"]
    pager = [f'<a href="../../{INDEX}">back to {e(layer["name"])}</a>']
    if position > 0:
        pager.insert(0, f'<a rel="prev" href="../{e(details[position - 1]["unit"])}/{INDEX}">'
                        f'&larr; unit {e(details[position - 1]["unit"])}</a>')
    if position + 1 < len(details):
        pager.append(f'<a rel="next" href="../{e(details[position + 1]["unit"])}/{INDEX}">'
                     f'unit {e(details[position + 1]["unit"])} &rarr;</a>')
    body = (f'<nav class="pager">{"".join(pager)}</nav><div class="grid">'
            + "".join(f'<section class="card"><h2>{e(METHOD_TITLES[m])}</h2>{html}</section>'
                      for m, html in panels) + "</div>")
    return page(f"{layer['name']}, unit {i}", body,
                [(f"../../../{INDEX}", "gallery"), (f"../../{INDEX}", layer["name"]),
                 (INDEX, f"unit {i}")])


def gallery_files(run_dir: str | os.PathLike, evaluation: Mapping | None = None
                  ) -> dict[str, bytes]:
    """The gallery of ``run_dir`` (relative path -> bytes), built from its ``summary.json``
    and ``evaluation`` (default: its ``evaluation.json``, if any); writes nothing."""
    run_dir = Path(run_dir)
    summary = load_summary(run_dir)
    if evaluation is None:
        evaluation = load_evaluation(run_dir)
    try:
        curves = _curves_png(summary)
        pages = {INDEX: _index_page(summary, curves is not None, evaluation)}
        for layer in summary["layers"]:
            folder = f"layer{layer['layer']}"
            pages[f"{folder}/{INDEX}"] = _layer_page(layer, evaluation)
            for position, unit in enumerate(layer["unit_details"]):
                pages[f"{folder}/units/{unit['unit']}/{INDEX}"] = _unit_page(layer, position)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # A field of the wrong type or missing deep inside summary.json / evaluation.json.
        raise ReportError(f"{run_dir / SUMMARY}: malformed content "
                          f"({type(exc).__name__}: {exc})") from None
    files = {rel: html.encode("utf-8") for rel, html in pages.items()}
    if curves is not None:
        files[CURVES] = curves
    return files


def build_gallery(run_dir: str | os.PathLike, *, force: bool = False) -> Path:
    """(Re)build the gallery of the run folder ``run_dir``; returns its ``index.html``.

    Only featvis's own pages are replaced: a page the user edited, or a symlink in the way,
    makes it refuse (:class:`~featvis.runfolder.OwnershipError`) unless ``force``, which
    keeps such a file as ``NAME.kept``.
    """
    write_into_run(run_dir, gallery_files(run_dir), force=force)
    return Path(run_dir) / INDEX
