"""A layer's page of the gallery: its units as a sortable table and, per method, a grid of
the same units in the same order (numbered tiles, their figures on hover, each a link to
the unit's page), with the method's settings, figures (each explained in one line) and
flags beside it; what the layer cannot show, and why; the sanity checks' settings."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..io.runfolder import EvaluationLayer, Layer, Section, Summary, Tile
from .templates import ZOOM, badge, cell, e, figure, number, table
from .unit_table import SCRIPT, Column, columns, table_html, tile_title

__all__ = ["layer_page", "unit_name", "url", "tile_html", "evaluation_rows", "flag_badges", "SIZE", "SMALL"]

SIZE = 96            # px: a tile's longer side in the layer's grids
SMALL = 48           # px: in the table


def unit_name(layer: Layer) -> str:
    """What the layer's units are called: "unit", or "direction" for directions."""
    return layer.get("unit_name", "unit")


def url(path: str, depth: int) -> str:
    """The URL of the run-relative ``path`` (checked segments) from a page ``depth`` folders
    below the run folder: ``./`` or ``../`` relative and percent-encoded."""
    return ("../" * depth or "./") + quote(path)


def tile_html(tile: Tile, depth: int, size: int, alt: str) -> str:
    """What stands for a unit: the first cells of its tile picture."""
    return cell(url(tile["file"], depth), tile["grid"], 0, size, alt, tile["cells"])


def flag_badges(layer: Layer) -> str:
    """The layer's flags as badges: the method and the figure, its meaning on hover."""
    titles = {s["method"]: s["title"] for s in layer["sections"]}
    return "".join(badge(f'{titles.get(f["method"], f["method"])}: {f["figure"]}',
                         f["explanation"]) for f in layer.get("flags") or [])


def evaluation_rows(rows: list[EvaluationLayer]) -> str:
    body = "".join(
        f"<tr><td>{e(r.get('name'))}</td><td>{number(r.get('reconstruction_error'))}</td>"
        f"<td>{number(None if r.get('probe_accuracy') is None else 100 * r['probe_accuracy'], 2)}"
        "%</td></tr>" for r in rows)
    return ("<table><tr><th>Layer</th><th>Test reconstruction error (per case)</th>"
            f"<th>Linear-probe test accuracy</th></tr>{body}</table>")


def _value(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float)):
        return number(value)
    if isinstance(value, list):
        return e(", ".join(str(v) for v in value)) or "&ndash;"
    return e(value)


def _grid(layer: Layer, method: str, title: str, cols: list[Column]) -> str:
    """The method's tiles of the shown units, numbered, in the table's order."""
    name = unit_name(layer)
    links, strips = [], False
    for j, unit in enumerate(layer["unit_details"]):
        tile = unit.get("tiles", {}).get(method)
        if tile is None:
            continue
        strips |= tile["cells"] > 1
        i = unit["unit"]
        hover = tile_title(cols, j, name, i)
        picture = tile_html(tile, 1, SIZE, f"{title}, {name} {i}")
        links.append(f'<a data-unit="{i}" href="./units/{i}/index.html" title="{e(hover)}">'
                     f"<span>{e(name)} {i}</span>{picture}</a>")
    if not links:
        return ""
    return f'<div class="tiles{" rows" if strips else ""}" data-follow>{"".join(links)}</div>'


def _figures(layer: Layer, method: str) -> str:
    figures = layer["figures"].get(method) or {}
    notes = layer.get("notes") or {}
    if not figures:
        return ""
    rows = "".join(f'<tr><th>{e(label)}</th><td class="num">{number(value)}</td>'
                   f'<td class="lead">{e(notes.get(label, ""))}</td></tr>'
                   for label, value in figures.items())
    return f"<table>{rows}</table>"


def _flags(layer: Layer, method: str) -> str:
    return "".join(f'<p class="warning">{e(f["figure"])}: {number(f.get("value"))} &mdash; '
                   f'{e(f["explanation"])}.</p>'
                   for f in layer.get("flags") or [] if f["method"] == method)


def _settings(section: Section) -> str:
    params = section.get("params") or {}
    if not params:
        return ""
    shown = ", ".join(f"{e(k)} = {_value(v)}" for k, v in params.items())
    return f'<p class="lead">Settings: {shown}</p>'


def _method_card(layer: Layer, sections: list[Section], cols: list[Column]) -> str:
    first = sections[0]
    method = first["method"]
    overview = "".join(
        f'<details><summary>The overview as one picture ({e(s["caption"])})</summary>'
        + figure(url(s["file"], 1), e(s["caption"]), f'{s["title"]} of {layer["name"]}',
                 "overview") + "</details>" for s in sections)
    grid = _grid(layer, method, first["title"], cols)
    if not grid:                     # no tiles: the overview picture is the method's view
        overview = "".join(figure(url(s["file"], 1), e(s["caption"]),
                                  f'{s["title"]} of {layer["name"]}', "overview")
                           for s in sections)
    return (f'<section class="card" id="method-{e(method)}"><h2>{e(first["title"])}</h2>'
            f'<p>{e(first["legend"])}</p>{_settings(first)}{_flags(layer, method)}'
            f"{grid}{overview}{_figures(layer, method)}</section>")


def _sanity(summary: Summary) -> str:
    sanity = summary.get("sanity_settings")
    if not sanity:
        return ""
    return ('<section class="card"><h2>Sanity checks</h2><p>Distinctness compares the pictures '
            "of different units; the randomization checks run each method again on a copy "
            "of the model whose weights are re-drawn (Adebayo et al. 2018), with these "
            "settings:</p>"
            + table((e(k), number(v)) for k, v in sanity.items()) + "</section>")


def layer_page(summary: Summary, layer: Layer, evaluation_layers: list[EvaluationLayer]
               ) -> tuple[str, str]:
    """The page's body and its script."""
    name = unit_name(layer)
    cols = columns(layer)
    by_method: dict[str, list[Section]] = {}
    for s in layer["sections"]:
        by_method.setdefault(s["method"], []).append(s)
    tiles = []
    for method, sections in by_method.items():
        column = []
        for unit in layer["unit_details"]:
            tile = unit.get("tiles", {}).get(method)
            column.append("" if tile is None else tile_html(
                tile, 1, SMALL, f"{sections[0]['title']}, {name} {unit['unit']}"))
        if any(column):
            tiles.append((sections[0]["title"], column))
    shown, total = len(layer["unit_details"]), layer.get("n_units", len(layer["units"]))
    flags = flag_badges(layer)
    lead = (f'<p class="lead">{e(layer.get("type", ""))} &middot; {shown} of {total} '
            f'{e(name)}s shown</p>' + (f"<p>Flags: {flags}</p>" if flags else ""))
    skipped = "".join(f"<li>{e(title)}: {e(why)}</li>"
                      for title, why in (layer.get("unavailable") or {}).items())
    agreement = _figures(layer, "agreement")
    body = (lead
            + (f'<section class="card">{evaluation_rows(evaluation_layers)}</section>'
               if evaluation_layers else "")
            + f'<section class="card" id="units"><h2>{e(name.capitalize())}s</h2>'
            "<p>Click a column's name to sort (again to reverse); type bounds to filter. The "
            "grids below follow the same order. Hover a tile for its figures; click it for "
            f"the {e(name)}'s page.</p>{table_html(layer, cols, tiles, name)}</section>"
            + "".join(_method_card(layer, sections, cols) for sections in by_method.values())
            + (f'<section class="card"><h2>Agreement between methods</h2>{agreement}'
               "</section>" if agreement else "")
            + (f'<section class="card"><h2>Not shown for this layer</h2><ul>{skipped}</ul>'
               "</section>" if skipped else "")
            + _sanity(summary))
    return body, SCRIPT + ZOOM
