"""A layer's units as one sortable, filterable table, and the tile grids that follow its order.

The columns are the facts the methods' panels record of each unit (``summary.json``'s
``unit_details[j].panels[m].facts``), so a plugin's figures sort and filter like featvis's
own. The table is plain HTML; a small script of featvis's own (:data:`SCRIPT`) reads the
values from escaped JSON (:func:`~featvis.report.templates.json_data`) and reorders and
hides the rows of the table and the tiles of every grid marked ``data-follow`` together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..io.runfolder import Layer
from .templates import e, json_data, number

__all__ = ["Column", "columns", "table_html", "tile_title", "SCRIPT", "DATA_ID"]

DATA_ID = "unit-data"


@dataclass(frozen=True)
class Column:
    """One per-unit figure: the panel (method) it comes from, its label, and its kind
    (``"number"``, ``"bool"`` or ``"text"``: how it sorts and filters)."""

    title: str
    label: str
    kind: str
    values: tuple[Any, ...]               # one per shown unit, None where not recorded


def _kind(values: list[Any]) -> str:
    known = [v for v in values if v is not None]
    if known and all(isinstance(v, bool) for v in known):
        return "bool"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in known):
        return "number"
    return "text"


def columns(layer: Layer) -> list[Column]:
    """The layer's per-unit figures, in the order the panels first show them."""
    found: dict[tuple[str, str], dict[int, Any]] = {}
    for j, unit in enumerate(layer["unit_details"]):
        for panel in unit["panels"]:
            for label, value in panel["facts"]:
                found.setdefault((panel["title"], str(label)), {})[j] = value
    n = len(layer["unit_details"])
    made = []
    for (title, label), by_unit in found.items():
        values = [by_unit.get(j) for j in range(n)]
        made.append(Column(title, label, _kind(values), tuple(values)))
    return made


def _shown(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float)):
        return number(value)
    return e(value)


def tile_title(cols: list[Column], j: int, name: str, unit: int) -> str:
    """The hover text of the ``j``-th shown unit's tile: its number and figures (plain)."""
    facts = [f"{c.label}: {_shown(c.values[j])}" for c in cols if c.values[j] is not None]
    return "\n".join([f"{name} {unit}", *facts])


def _filter(c: Column, i: int) -> str:
    label = e(f"filter {c.label}")
    if c.kind == "number":
        return (f'<input type="number" step="any" data-col="{i}" data-bound="min" '
                f'aria-label="{label}: at least" placeholder="min">'
                f'<input type="number" step="any" data-col="{i}" data-bound="max" '
                f'aria-label="{label}: at most" placeholder="max">')
    if c.kind == "bool":
        return (f'<select data-col="{i}" data-bound="is" aria-label="{label}">'
                '<option value="">any</option><option value="yes">yes</option>'
                '<option value="no">no</option></select>')
    return f'<input type="search" data-col="{i}" data-bound="has" aria-label="{label}">'


def table_html(layer: Layer, cols: list[Column], tiles: list[tuple[str, list[str]]],
               name: str) -> str:
    """The table (a row per shown unit: its number linking to its page, ``tiles``: a
    ``(method title, one cell per unit)`` column each, then the figures), with the JSON its
    script reads."""
    units = [u["unit"] for u in layer["unit_details"]]
    head = [f'<th><button data-sort="-1" type="button">{e(name)}</button></th>'] + \
        [f"<th>{e(title)}</th>" for title, _ in tiles] + \
        [f'<th title="{e(c.title)}"><button data-sort="{i}" type="button">{e(c.label)}'
         "</button></th>" for i, c in enumerate(cols)]
    filters = ["<td></td>"] * (1 + len(tiles)) + \
        [f"<td>{_filter(c, i)}</td>" for i, c in enumerate(cols)]
    rows = []
    for j, unit in enumerate(units):
        cells = [f'<td><a href="./units/{unit}/index.html">{unit}</a></td>'] + \
            [f"<td>{column[j]}</td>" for _, column in tiles] + \
            [f"<td>{_shown(c.values[j])}</td>" for c in cols]
        rows.append(f'<tr data-unit="{unit}">{"".join(cells)}</tr>')
    data = {"units": units, "kinds": [c.kind for c in cols],
            "values": [list(c.values) for c in cols]}
    return (json_data(DATA_ID, data)
            + '<p class="lead" id="unit-count"></p>'
            + '<div style="overflow-x:auto"><table class="units-table">'
            f'<thead><tr>{"".join(head)}</tr><tr class="filters">{"".join(filters)}</tr>'
            f'</thead><tbody data-follow>{"".join(rows)}</tbody></table></div>')


# Sorting (click a column's name; again to reverse) and filtering (bounds, yes/no, text) of
# the table's rows and of every tile grid marked data-follow, in one order.
SCRIPT = """
(function(){
var data=JSON.parse(document.getElementById('%s').textContent);
var n=data.units.length,order=[],key=null,dir=1,i;
for(i=0;i<n;i++)order.push(i);
function value(c,j){return c<0?data.units[j]:data.values[c][j];}
function keep(j){var ok=true;document.querySelectorAll('[data-bound]').forEach(function(f){
 if(!ok||f.value==='')return;var v=value(+f.dataset.col,j),b=f.dataset.bound;
 if(v===null||v===undefined){ok=false;return;}
 if(b==='min')ok=v>=parseFloat(f.value);else if(b==='max')ok=v<=parseFloat(f.value);
 else if(b==='is')ok=(v?'yes':'no')===f.value;
 else ok=String(v).toLowerCase().indexOf(f.value.toLowerCase())>=0;});return ok;}
function apply(){
 if(key!==null){order.sort(function(a,b){var x=value(key,a),y=value(key,b);
  if(x===y)return a-b;if(x===null)return 1;if(y===null)return -1;
  return (x<y?-1:1)*dir;});}
 var shown=order.filter(keep),visible={};shown.forEach(function(j){visible[j]=true;});
 document.querySelectorAll('[data-follow]').forEach(function(box){
  var byUnit={};Array.prototype.forEach.call(box.children,function(el){
   byUnit[el.dataset.unit]=el;});
  order.forEach(function(j){var el=byUnit[data.units[j]];if(el){box.appendChild(el);
   el.hidden=!visible[j];}});});
 var count=document.getElementById('unit-count');
 if(count)count.textContent=shown.length+' of '+n+' shown';}
document.querySelectorAll('[data-sort]').forEach(function(b){b.addEventListener('click',
 function(){var c=+b.dataset.sort;dir=(key===c)?-dir:(c<0?1:-1);key=c;apply();});});
document.querySelectorAll('[data-bound]').forEach(function(f){
 f.addEventListener('input',apply);});
apply();
})();
""" % DATA_ID
