"""HTML building blocks of the gallery: one page skeleton, escaping, small widgets.

Everything that comes from a model or a file goes through :func:`e` (``html.escape``);
pages use relative links only, inline CSS, no scripts, no network requests.
"""

from __future__ import annotations

from html import escape
from typing import Iterable

__all__ = ["e", "page", "figure", "table", "number"]

_CSS = """
*{box-sizing:border-box}
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
img.thumb{width:120px;height:120px;object-fit:cover;object-position:top}
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
    """A figure for display; ``None`` (not computed or undefined) shows as a dash."""
    return "&ndash;" if value is None else f"{value:.{digits}f}"


def page(title: str, body: str, crumbs: Iterable[tuple[str, str]] = ()) -> str:
    """A complete HTML document; ``crumbs`` are ``(relative href, label)`` pairs."""
    trail = " &rsaquo; ".join(f'<a href="{e(href)}">{e(label)}</a>' for href, label in crumbs)
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
</body>
</html>
"""


def figure(src: str, caption: str, alt: str, css_class: str = "") -> str:
    """An image with a caption; ``caption`` is trusted HTML built by the caller."""
    cls = f' class="{css_class}"' if css_class else ""
    return (f'<figure><img src="{e(src)}" alt="{e(alt)}"{cls}>'
            f"<figcaption>{caption}</figcaption></figure>")


def table(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table of ``(escaped label, trusted HTML value)`` rows."""
    return "<table>" + "".join(f"<tr><th>{label}</th><td>{value}</td></tr>"
                               for label, value in rows) + "</table>"
