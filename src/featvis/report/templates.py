"""HTML building blocks of the gallery: one page skeleton, escaping, small widgets.

Everything that comes from a model or a file goes through :func:`e` (``html.escape``), and
data a page's script reads through :func:`json_data`; pages use relative links only, inline
CSS and at most one inline script of featvis's own, no network requests.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any, Iterable, Sequence

__all__ = ["e", "page", "figure", "table", "number", "cell", "badge", "json_data", "ZOOM"]

_CSS = """
*{box-sizing:border-box}
[hidden]{display:none!important}
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d232a;
 background:#f6f7f9}
main{max-width:1240px;margin:0 auto;padding:16px}
header{background:#1d232a;color:#fff;padding:10px 16px}
header a{color:#9fd2ff}
h1{font-size:1.5em;margin:.3em 0}
h2{font-size:1.2em;margin:1.2em 0 .4em}
a{color:#0b62b5}
nav.crumbs,nav.pager{display:flex;flex-wrap:wrap;gap:.4em 1em;margin:.4em 0}
section.card{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px;
 margin:12px 0;overflow-wrap:anywhere}
figure{margin:0 0 12px}
figcaption{font-size:.9em;color:#4a5563}
img{max-width:100%;height:auto;image-rendering:pixelated;background:#000;display:block}
img.thumb{width:120px;height:120px;object-fit:contain;background:#fff}
.cell{display:inline-block;overflow:hidden;vertical-align:top;background:#000;
 position:relative}
.cell img{max-width:none;margin:0}
.tiles{display:flex;flex-wrap:wrap;gap:6px}
.tiles a{display:inline-flex;flex-direction:column;align-items:center;text-decoration:none;
 font-size:.8em;color:#4a5563}
.tiles.rows{flex-direction:column;overflow-x:auto;max-width:100%}
.tiles.rows a{flex:none}
.tiles.rows a{flex-direction:row;gap:8px}
.tiles.rows a>span:first-child{width:4.5em;text-align:right}
.badge{display:inline-block;background:#fff4d6;border:1px solid #d89b00;border-radius:10px;
 padding:0 8px;margin:2px 4px 2px 0;font-size:.85em;color:#5c4300}
.lead{color:#4a5563}
table.units-table th button{all:unset;cursor:pointer;color:#0b62b5}
table.units-table input{width:5em}
table.units-table td,table.units-table th,table.layers th,.num{white-space:nowrap}
td{font-variant-numeric:tabular-nums}
.zoomable{cursor:zoom-in}
#zoom{position:fixed;inset:0;background:rgba(0,0,0,.85);display:none;align-items:center;
 justify-content:center;z-index:9;cursor:zoom-out}
#zoom.open{display:flex}
#zoom img{width:auto;height:auto;max-width:95vw;max-height:95vh;min-width:min(60vw,60vh)}
.examples{display:grid;grid-template-columns:repeat(3,max-content);gap:4px}
.examples figure{margin:0}
.side{display:flex;flex-wrap:wrap;gap:16px}
.side>figure{max-width:100%;overflow-x:auto}
img.single{width:min(100%,196px)}
img.overview{min-width:min(100%,360px)}
.grid td:last-child{white-space:nowrap}
img.strip{width:100%}
section.card h2{margin-top:0}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.grid>*{flex:1 1 260px;min-width:0}
table{border-collapse:collapse;max-width:100%;display:block;overflow-x:auto}
td,th{border-bottom:1px solid #e5e8ec;padding:3px 8px;text-align:left;vertical-align:top}
.units{display:flex;flex-wrap:wrap;gap:4px}
.units a{padding:2px 6px;background:#eef3f8;border-radius:3px;text-decoration:none}
.pos{color:#8a6d00}.neg{color:#a1009e}
p.warning{background:#fff4d6;border-left:4px solid #d89b00;padding:6px 10px}
code{overflow-wrap:anywhere}
"""


def e(value: object) -> str:
    """HTML-escape anything shown on a page (quotes included)."""
    return escape(str(value), quote=True)


def number(value: float | None, digits: int = 3) -> str:
    """A figure for display: a whole number (a count) as an integer, others with ``digits``
    decimals; ``None`` (not computed or undefined) shows as a dash."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):d}"
    return f"{value:.{digits}f}"


def badge(text: str, title: str = "") -> str:
    """A flag's badge; ``text`` and ``title`` are plain text."""
    hint = f' title="{e(title)}"' if title else ""
    return f'<span class="badge"{hint}>{e(text)}</span>'


def cell(src: str, grid: Sequence[int], index: int, size: int, alt: str, count: int = 1,
         zoom: bool = False) -> str:
    """Cells ``index .. index + count - 1`` of the picture grid at ``src`` (its layout
    ``grid``: rows, cols, height, width, spacing), the cell's longer side ``size`` px: the
    whole picture, scaled and shifted inside a clipping box, so that it loads once and
    lazily however many cells of it a page shows."""
    rows, cols, h, w, spacing = grid
    row, col = divmod(index, cols)
    count = max(1, min(count, cols - col))
    f = size / max(h, w)
    width = (count * w + (count - 1) * spacing) * f
    full_w, full_h = (cols * w + (cols - 1) * spacing) * f, (rows * h + (rows - 1) * spacing) * f
    style = (f"width:{full_w:.2f}px;height:{full_h:.2f}px;"
             f"margin:{-row * (h + spacing) * f:.2f}px 0 0 {-col * (w + spacing) * f:.2f}px")
    zoomed = ' class="zoomable"' if zoom else ""
    return (f'<span class="cell" style="width:{width:.2f}px;height:{h * f:.2f}px">'
            f'<img loading="lazy" src="{e(src)}" alt="{e(alt)}" style="{style}"{zoomed}>'
            "</span>")


def json_data(element_id: str, value: Any) -> str:
    """``value`` as JSON in a ``<script type="application/json">`` element that a page's
    script reads: ``<``, ``>`` and ``&`` escaped, so no text in it can close the element."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{e(element_id)}">{text}</script>'


# Click to zoom: any picture marked "zoomable" opens at the size of the window.
ZOOM = """
(function(){
var box=null;
function close(){if(box){box.remove();box=null;}}
document.addEventListener('keydown',function(ev){if(ev.key==='Escape')close();});
document.addEventListener('click',function(ev){var t=ev.target;
 if(box&&box.contains(t)){close();return;}
 if(!t.classList||!t.classList.contains('zoomable'))return;ev.preventDefault();
 box=document.createElement('div');box.id='zoom';box.className='open';
 var big=document.createElement('img');big.src=t.getAttribute('src');big.alt=t.alt;
 box.appendChild(big);document.body.appendChild(box);});
})();
"""


def page(title: str, body: str, crumbs: Iterable[tuple[str, str]] = (),
         script: str = "") -> str:
    """A complete HTML document; ``crumbs`` are ``(relative href, label)`` pairs; ``script``:
    featvis's own code, run after the body (never built from data: data goes through
    :func:`json_data`)."""
    trail = " &rsaquo; ".join(f'<a href="{e(href)}">{e(label)}</a>' for href, label in crumbs)
    code = f"<script>{script}</script>" if script else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><nav class="crumbs">{trail}</nav></header>
<main>
<h1>{e(title)}</h1>
{body}
</main>
{code}
</body>
</html>
"""


def figure(src: str, caption: str, alt: str, css_class: str = "") -> str:
    """An image with a caption; ``caption`` is trusted HTML built by the caller."""
    cls = f' class="{css_class}"' if css_class else ""
    return (f'<figure><img loading="lazy" src="{e(src)}" alt="{e(alt)}"{cls}>'
            f"<figcaption>{caption}</figcaption></figure>")


def table(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table of ``(escaped label, trusted HTML value)`` rows."""
    return "<table>" + "".join(f"<tr><th>{label}</th><td>{value}</td></tr>"
                               for label, value in rows) + "</table>"
