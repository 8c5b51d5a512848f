"""Build the static HTML gallery of a ``featvis visualize`` run folder.

The gallery is a view over the run's files: it reads ``summary.json`` and draws what it
describes (the overview sections of each layer and the panels of each unit, with their
plain-text titles, legends and captions, escaped here), so no method is known by name in
this module. It writes ``index.html``, a page per layer and per unit, and a
training-curve plot. Everything is checked before anything is written, so a broken run
folder leaves an existing gallery untouched. Every ``src`` and ``href`` is a ``./`` or
``../`` relative, percent-encoded URL built from checked path segments.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from urllib.parse import quote

from ..io.runfolder import (Evaluation, EvaluationLayer, Layer, Panel, RunFolderError, Summary,
                           load_evaluation, load_summary, recover, write_into_run)
from .templates import e, figure, number, page, table

__all__ = ["ReportError", "gallery_files", "build_gallery", "INDEX"]

INDEX = "index.html"
CURVES = "training.png"
ReportError = RunFolderError          # the name this error had before featvis.run/2


def _evaluation_rows(rows: list[EvaluationLayer]) -> str:
    body = "".join(
        f"<tr><td>{e(r.get('name'))}</td><td>{number(r.get('reconstruction_error'))}</td>"
        f"<td>{number(None if r.get('probe_accuracy') is None else 100 * r['probe_accuracy'], 2)}"
        "%</td></tr>" for r in rows)
    return ("<table><tr><th>Layer</th><th>Test reconstruction error (per case)</th>"
            f"<th>Linear-probe test accuracy</th></tr>{body}</table>")


def _evaluation_card(evaluation: Evaluation) -> str:
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


def _curves_png(summary: Summary) -> bytes | None:
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


def _text(value: object) -> str:
    """A fact's value for display: numbers with 3 decimals, anything else as escaped text."""
    if value is None or isinstance(value, float):
        return number(value)
    return e(value)


def _model_table(model: dict) -> str:
    recipe = model.get("recipe") or {}
    data = model.get("data") or {}
    rows = [("Model", e(model.get("kind", "unknown"))),
            ("Input shape", e(" x ".join(map(str, model.get("input_shape") or [])))),
            ("Data", e(", ".join(f"{k}: {v}" for k, v in data.items()) or "unknown"))]
    if model.get("input_norm") is not None:
        rows.append(("Input norm &rho;", number(model.get("input_norm"))))
    if recipe:
        rows.append(("Training recipe", e(", ".join(f"{k}={v}" for k, v in recipe.items()))))
    if model.get("path"):
        rows.append(("Checkpoint", f"<code>{e(model['path'])}</code>"))
    return table(rows)


def _figures_table(layer: Layer) -> str:
    """The layer's figures, grouped by method, and the flags raised on them."""
    titles = {s["method"]: s["title"] for s in layer["sections"]}
    rows = [(f"{e(titles.get(method, method.capitalize()))}: {e(label)}", _text(value))
            for method, figures in layer["figures"].items() for label, value in figures.items()]
    flags = "".join(
        f'<p class="warning">{e(titles.get(f["method"], f["method"]))}: {e(f["figure"])} '
        f'{_text(f["value"])} &mdash; {e(f["explanation"])}.</p>'
        for f in layer.get("flags") or [])
    return flags + (table(rows) if rows else "")


def _index_page(summary: Summary, has_curves: bool, evaluation: Evaluation | None
                ) -> str:
    rows = []
    for layer in summary["layers"]:
        href = _url(f"{layer['folder']}/{INDEX}", 0)
        thumbs = "".join(
            f'<a href="{e(href)}"><img class="thumb" src="{e(_url(s["file"], 0))}" '
            f'alt="{e(s["title"])}, {e(layer["name"])}" title="{e(s["title"])}"></a>'
            for s in layer["sections"])
        rows.append(f'<tr><td><a href="{e(href)}">{e(layer["name"])}</a></td>'
                    f'<td>{e(layer.get("type", ""))}</td>'
                    f'<td>{e(layer.get("n_units", len(layer["units"])))}</td>'
                    f'<td><div class="units">{thumbs}</div></td></tr>')
    curves = figure(_url(CURVES, 0), "Training reconstruction error per epoch, one line per "
                    "RBM.", "training curves") if has_curves else ""
    model = summary["model"]
    trained = summary.get("trained_layers")
    total = model.get("n_layers") or len(model.get("sizes") or []) - 1
    warning = "" if trained is None or trained >= total else (
        f'<p class="warning">Only {e(trained)} of the model\'s {e(total)} layers are '
        "trained (the checkpoint was saved before training finished): the pictures of layers "
        f"{e(trained + 1)}&ndash;{e(total)} show untrained weights.</p>")
    body = (f'<section class="card"><h2>Model</h2>{warning}{_model_table(summary["model"])}'
            f"{curves}</section>"
            + (_evaluation_card(evaluation) if evaluation else "") +
            '<section class="card"><h2>Layers</h2><table><tr><th>Layer</th><th>Type</th>'
            f'<th>Units</th><th>Overview of each method</th></tr>{"".join(rows)}</table>'
            "</section>")
    return page("featvis gallery", body, [(f"./{INDEX}", "gallery")])


def _layer_page(layer: Layer, evaluation: Evaluation | None) -> str:
    model_rows = [r for r in (evaluation or {}).get("layers", [])
                  if r.get("layer") == layer["layer"]]
    sections = "".join(
        f'<section class="card"><h2>{e(s["title"])}</h2><p>{e(s["legend"])}</p>'
        + figure(_url(s["file"], 1), e(s["caption"]), f'{s["title"]} of {layer["name"]}',
                 "overview")
        + "</section>" for s in layer["sections"])
    skipped = "".join(f"<li>{e(name)}: {e(why)}</li>"
                      for name, why in (layer.get("unavailable") or {}).items())
    units = [u["unit"] for u in layer["unit_details"]]
    links = "".join(f'<a href="./units/{i}/{INDEX}">{i}</a>' for i in units)   # checked ints
    heading = e(_unit_name(layer).capitalize())
    body = (f'<section class="card">{_figures_table(layer)}'
            f'{_evaluation_rows(model_rows) if model_rows else ""}'
            f'{f"<p>Not shown for this layer:</p><ul>{skipped}</ul>" if skipped else ""}'
            f'</section>{sections}'
            f'<section class="card"><h2>{heading}s</h2><div class="units">{links}</div>'
            '</section>')
    return page(f"{layer['name']}", body,
                [(f"../{INDEX}", "gallery"), (f"./{INDEX}", layer["name"])])


def _panel(panel: Panel) -> str:
    images = "".join(figure(_url(image["file"], 3), e(image["caption"]), image["alt"],
                            image["style"]) for image in panel["images"])
    facts = table((e(label), _text(value)) for label, value in panel["facts"]) \
        if panel["facts"] else ""
    return f'<section class="card"><h2>{e(panel["title"])}</h2>{images}{facts}</section>'


def _unit_name(layer: Layer) -> str:
    """What the layer's units are called: "unit", or "direction" for directions."""
    return layer.get("unit_name", "unit")


def _unit_page(layer: Layer, position: int) -> str:
    details = layer["unit_details"]
    i = details[position]["unit"]
    name = _unit_name(layer)
    pager = [f'<a href="../../{INDEX}">back to {e(layer["name"])}</a>']
    if position > 0:
        pager.insert(0, f'<a rel="prev" href="../{e(details[position - 1]["unit"])}/{INDEX}">'
                        f'&larr; {e(name)} {e(details[position - 1]["unit"])}</a>')
    if position + 1 < len(details):
        pager.append(f'<a rel="next" href="../{e(details[position + 1]["unit"])}/{INDEX}">'
                     f'{e(name)} {e(details[position + 1]["unit"])} &rarr;</a>')
    body = (f'<nav class="pager">{"".join(pager)}</nav><div class="grid">'
            + "".join(_panel(p) for p in details[position]["panels"]) + "</div>")
    return page(f"{layer['name']}, {name} {i}", body,
                [(f"../../../{INDEX}", "gallery"), (f"../../{INDEX}", layer["name"]),
                 (f"./{INDEX}", f"{name} {i}")])


def gallery_files(run_dir: str | os.PathLike, evaluation: Evaluation | None = None
                  ) -> dict[str, bytes]:
    """The gallery of ``run_dir`` (relative path -> bytes), built from its ``summary.json``
    and ``evaluation`` (default: its ``evaluation.json``, if any); writes nothing."""
    run_dir = Path(run_dir)
    summary = load_summary(run_dir)
    if evaluation is None:
        evaluation = load_evaluation(run_dir)
    if evaluation is not None and evaluation.get("model_sha256") != summary["model_sha256"]:
        evaluation = None                 # another model's figures are never shown
    try:
        curves = _curves_png(summary)
        pages = {INDEX: _index_page(summary, curves is not None, evaluation)}
        for layer in summary["layers"]:
            folder = layer["folder"]
            pages[f"{folder}/{INDEX}"] = _layer_page(layer, evaluation)
            for position, unit in enumerate(layer["unit_details"]):
                pages[f"{folder}/units/{unit['unit']}/{INDEX}"] = _unit_page(layer, position)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # A field of the wrong type or missing deep inside summary.json / evaluation.json.
        raise RunFolderError(f"{run_dir / 'summary.json'}: malformed content "
                             f"({type(exc).__name__}: {exc})") from None
    files = {rel: html.encode("utf-8") for rel, html in pages.items()}
    if curves is not None:
        files[CURVES] = curves
    return files


def build_gallery(run_dir: str | os.PathLike, *, force: bool = False) -> Path:
    """(Re)build the gallery of the run folder ``run_dir``; returns its ``index.html``.

    Only featvis's own pages are replaced: a page the user edited, or a symlink in the way,
    makes it refuse (:class:`~featvis.io.runfolder.OwnershipError`) unless ``force``, which
    keeps such a file as ``NAME.kept``.
    """
    recover(run_dir)
    write_into_run(run_dir, gallery_files(run_dir), force=force)
    return Path(run_dir) / INDEX
