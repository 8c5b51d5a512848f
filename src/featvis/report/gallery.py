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
import math
import os
from pathlib import Path

from ..io.runfolder import (Evaluation, Image, Layer, Panel, RunFolderError, Summary,
                            load_evaluation, load_summary, recover, write_into_run)
from .layer_page import SIZE, evaluation_rows, flag_badges, layer_page, unit_name, url
from .templates import ZOOM, cell, e, figure, number, page, table

__all__ = ["ReportError", "gallery_files", "build_gallery", "INDEX"]

INDEX = "index.html"
CURVES = "training.png"
ReportError = RunFolderError          # the name this error had before featvis.run/2


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
            f"{evaluation_rows(evaluation['layers'])}{table(lines)}</section>")


def _curves_png(summary: Summary) -> bytes | None:
    """Reconstruction error per epoch per trained layer, drawn with matplotlib (None without
    history), on a log axis when the layers' errors differ in scale."""
    history = summary["model"].get("history") or []
    if not any(history):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    finals = []
    for d, entries in enumerate(history, start=1):
        if entries:
            errors = [x["error_per_case"] for x in entries]
            finals += [min(errors)]
            ax.plot([x["epoch"] for x in entries], errors, marker="o", label=f"layer {d}")
    if len(finals) > 1 and min(finals) > 0 and max(finals) / min(finals) > 10:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("squared error per case")
    ax.set_title(f"Reconstruction error while training, {summary['model'].get('kind', '')}"
                 .strip(", "), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title="trained layer")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _text(value: object) -> str:
    """A fact's value for display: numbers (whole ones as integers), anything else as
    escaped text."""
    if value is None or isinstance(value, (bool, int, float)):
        return number(value)
    return e(value)


_DATA_SHOWN = ("name", "source", "n_train")          # the rest (digests, configs) folded away


def _model_table(summary: Summary) -> str:
    model = summary["model"]
    recipe = model.get("recipe") or {}
    data = model.get("data") or {}
    mined = summary.get("inputs") or {}
    rows = [("Model", e(model.get("kind", "unknown"))),
            ("Input shape", e(" x ".join(map(str, model.get("input_shape") or []))))]
    trained_on = ", ".join(f"{e(k.replace('n_train', 'count'))}: {_text(data[k])}"
                           for k in _DATA_SHOWN if k in data)
    if trained_on:
        rows.append(("Trained on", trained_on))
    if "count" in mined:
        rows.append(("Inputs mined", f"{number(mined['count'])}"
                     + ("" if mined.get("labelled") else " (no labels)")))
    if model.get("input_norm") is not None:
        rows.append(("Input norm &rho;", number(model.get("input_norm"))))
    if model.get("path"):
        rows.append(("Checkpoint", f"<code>{e(model['path'])}</code>"))
    folded = [(e(k), _text(v) if not isinstance(v, (dict, list)) else f"<code>{e(v)}</code>")
              for k, v in data.items() if k not in _DATA_SHOWN]
    details = ""
    if recipe:
        details += ("<details><summary>Training recipe</summary>"
                    + table((e(k), _text(v) if not isinstance(v, (dict, list))
                             else f"<code>{e(v)}</code>") for k, v in recipe.items())
                    + "</details>")
    if folded:
        details += ("<details><summary>Data details (digests, whitening)</summary>"
                    + table(folded) + "</details>")
    return table(rows) + details


def _methods_in_order(summary: Summary) -> list[tuple[str, str]]:
    """Every method a layer shows, as (name, title), in the order they first appear."""
    seen: dict[str, str] = {}
    for layer in summary["layers"]:
        for s in layer["sections"]:
            seen.setdefault(s["method"], s["title"])
    return list(seen.items())


def _index_page(summary: Summary, has_curves: bool, evaluation: Evaluation | None
                ) -> str:
    methods = _methods_in_order(summary)
    rows = []
    for layer in summary["layers"]:
        href = url(f"{layer['folder']}/{INDEX}", 0)
        first = {}
        for s in layer["sections"]:
            first.setdefault(s["method"], s)
        cells = []
        for name, title in methods:
            s = first.get(name)
            why = (layer.get("unavailable") or {}).get(title)
            cells.append(
                f'<td><a href="{e(href)}#method-{e(name)}"><img class="thumb" loading="lazy" '
                f'src="{e(url(s["file"], 0))}" alt="{e(title)}, {e(layer["name"])}" '
                f'title="{e(title)}"></a></td>' if s else
                f'<td class="lead" title="{e(why or "")}">&ndash;</td>')
        flags = flag_badges(layer)
        shown = len(layer["unit_details"])
        rows.append(f'<tr><td><a href="{e(href)}">{e(layer["name"])}</a><br>'
                    f'<span class="lead">{e(layer.get("type", ""))}</span></td>'
                    f'<td>{shown} / {number(layer.get("n_units", len(layer["units"])))}</td>'
                    f'<td>{flags or "none"}</td>{"".join(cells)}</tr>')
    curves = figure(url(CURVES, 0), "Reconstruction error per epoch while each layer was "
                    "trained (a log axis where their scales differ).",
                    "training curves") if has_curves else ""
    model = summary["model"]
    trained = summary.get("trained_layers")
    total = model.get("n_layers") or len(model.get("sizes") or []) - 1
    warning = "" if trained is None or trained >= total else (
        f'<p class="warning">Only {e(trained)} of the model\'s {e(total)} layers are '
        "trained (the checkpoint was saved before training finished): the pictures of layers "
        f"{e(trained + 1)}&ndash;{e(total)} show untrained weights.</p>")
    heads = "".join(f"<th>{e(title)}</th>" for _, title in methods)
    flagged = sum(len(layer.get("flags") or []) for layer in summary["layers"])
    body = (f'<section class="card"><h2>Model</h2>{warning}{_model_table(summary)}'
            f"{curves}</section>"
            + (_evaluation_card(evaluation) if evaluation else "") +
            f'<section class="card"><h2>Layers</h2><p class="lead">{flagged} flagged '
            "figure(s); hover a flag for what it means, click a picture for the layer's "
            'page.</p><div style="overflow-x:auto"><table class="layers"><tr><th>Layer</th>'
            f'<th>Units shown / in the layer</th><th>Flags</th>{heads}</tr>{"".join(rows)}'
            "</table></div></section>")
    return page("featvis gallery", body, [(f"./{INDEX}", "gallery")])


def _image(image: Image) -> str:
    """A unit's picture at a readable size: each cell of a grid at least :data:`SIZE` px,
    laid out about square (a top-9 strip as 3 x 3), click to zoom."""
    src = url(image["file"], 3)
    grid = image.get("grid")
    if grid is None or grid[0] * grid[1] == 1 or image["style"] not in ("strip", "single"):
        return figure(src, e(image["caption"]), image["alt"], f'{image["style"]} zoomable')
    rows, cols = grid[0], grid[1]
    n = rows * cols
    per_row = cols if rows > 1 or cols <= 4 else math.ceil(math.sqrt(n))
    cells = "".join(cell(src, grid, i, SIZE, f'{image["alt"]} {i + 1}', zoom=True)
                    for i in range(n))
    return (f'<figure><div class="examples" style="grid-template-columns:repeat({per_row},'
            f'max-content)">{cells}</div><figcaption>{e(image["caption"])}</figcaption>'
            "</figure>")


def _panel(panel: Panel) -> str:
    images = "".join(_image(image) for image in panel["images"])
    facts = table((e(label), _text(value)) for label, value in panel["facts"]) \
        if panel["facts"] else ""
    return (f'<section class="card"><h2>{e(panel["title"])}</h2><div class="side">{images}'
            f"</div>{facts}</section>")


def _unit_page(layer: Layer, position: int) -> str:
    details = layer["unit_details"]
    i = details[position]["unit"]
    name = unit_name(layer)
    pager = [f'<a href="../../{INDEX}">back to {e(layer["name"])}</a>']
    if position > 0:
        pager.insert(0, f'<a rel="prev" href="../{e(details[position - 1]["unit"])}/{INDEX}">'
                        f'&larr; {e(name)} {e(details[position - 1]["unit"])}</a>')
    if position + 1 < len(details):
        pager.append(f'<a rel="next" href="../{e(details[position + 1]["unit"])}/{INDEX}">'
                     f'{e(name)} {e(details[position + 1]["unit"])} &rarr;</a>')
    body = (f'<nav class="pager">{"".join(pager)}</nav>'
            + "".join(_panel(p) for p in details[position]["panels"]))
    return page(f"{layer['name']}, {name} {i}", body,
                [(f"../../../{INDEX}", "gallery"), (f"../../{INDEX}", layer["name"]),
                 (f"./{INDEX}", f"{name} {i}")], ZOOM)


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
            model_rows = [r for r in (evaluation or {}).get("layers", [])
                          if r.get("layer") == layer["layer"]]
            body, script = layer_page(summary, layer, model_rows)
            pages[f"{folder}/{INDEX}"] = page(
                layer["name"], body,
                [(f"../{INDEX}", "gallery"), (f"./{INDEX}", layer["name"])], script)
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
