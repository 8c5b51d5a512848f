"""The gallery's building blocks: numbers, escaped JSON for its script, cells of a grid."""

import json
import re

import torch

from featvis.report.render import tile
from featvis.report.templates import cell, json_data, number


def test_numbers_show_counts_as_integers_and_undefined_as_a_dash():
    assert number(40.0) == "40" and number(3) == "3" and number(0.5) == "0.500"
    assert number(None) == "&ndash;" and number(True) == "yes" and number(-0.12345, 2) == "-0.12"


def test_json_data_cannot_close_its_element_and_reads_back_the_same():
    value = {"name": "</script><script>alert(1)</script>", "text": "a & b > c"}
    html = json_data("d", value)
    inner = html[html.index(">") + 1:html.rindex("</script>")]
    assert "<" not in inner and ">" not in inner and "&" not in inner
    assert json.loads(inner) == value


def test_a_cell_shows_exactly_its_cell_of_the_grid():
    grid = tile(torch.rand(6, 1, 4, 3), cols=3, spacing=1, upscale=2)   # 2 x 3 cells of 8 x 6
    assert grid.layout == (2, 3, 8, 6, 1) and grid.shape == (17, 20)
    html = cell("g.png", grid.layout, 4, 16, "alt")                     # row 1, column 1
    f = 16 / 8
    box = re.search(r'class="cell" style="width:([\d.]+)px;height:([\d.]+)px"', html)
    assert (float(box[1]), float(box[2])) == (6 * f, 8 * f)
    shift = re.search(r"width:([\d.]+)px;height:([\d.]+)px;margin:(-?[\d.]+)px 0 0 "
                      r"(-?[\d.]+)px", html)
    assert (float(shift[1]), float(shift[2])) == (20 * f, 17 * f)          # the whole grid
    assert (float(shift[3]), float(shift[4])) == (-9 * f, -7 * f)          # cell (1, 1)'s corner
