"""The gallery in a real browser: Debian's Chromium driven by Playwright, from file:// URLs."""

import json
from pathlib import Path

import pytest

from featvis.report import INDEX
from featvis.io.runfolder import layer_folder

from helpers import HOSTILE

CHROMIUM = Path("/usr/bin/chromium")
playwright = pytest.importorskip("playwright.sync_api",
                                 reason="Playwright is not installed (make test installs it)")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (make test installs it with apt-get); "
                "browser tests skipped", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.problems = []
    p.on("console", lambda m: m.type == "error" and p.problems.append(m.text))
    p.on("pageerror", lambda exc: p.problems.append(str(exc)))
    p.on("dialog", lambda d: (p.problems.append(f"dialog: {d.message}"), d.dismiss()))
    p.on("request", lambda r: r.url.startswith("file://") or p.problems.append(r.url))
    yield p
    context.close()


def _load_every_image(page):
    """Lazily loaded pictures load now: each made eager, then wait until all are done."""
    page.eval_on_selector_all("img", "els => els.forEach(e => { e.loading = 'eager'; })")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")


@pytest.mark.parametrize("run", ["run_dir", "cnn_run"])
def test_every_page_loads_its_images_and_links(page, run, request):
    run_dir = request.getfixturevalue(run)
    for html in sorted(run_dir.rglob(INDEX)):
        page.goto(html.as_uri())
        _load_every_image(page)
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert widths and all(w > 0 for w in widths), html
        hrefs = page.eval_on_selector_all("a", "els => els.map(e => e.href)")
        for href in hrefs:
            path = href.partition("#")[0]
            assert path.startswith("file://") and Path(path[len("file://"):]).is_file(), href
    assert page.problems == []


def test_click_through_index_layer_unit_next(page, run_dir):
    page.goto((run_dir / INDEX).as_uri())
    page.get_by_role("link", name="layer 2", exact=True).first.click()
    assert page.url.endswith(f"/{layer_folder(2)}/index.html")
    page.locator('#units a[href="./units/0/index.html"]').first.click()
    assert page.url.endswith(f"/{layer_folder(2)}/units/0/index.html")
    assert page.locator("h1").inner_text() == "layer 2, unit 0"
    page.locator('a[rel="next"]').click()
    assert page.url.endswith(f"/{layer_folder(2)}/units/1/index.html")
    page.locator('a[rel="prev"]').click()
    assert page.url.endswith(f"/{layer_folder(2)}/units/0/index.html")
    page.get_by_role("link", name="back to layer 2").click()
    assert page.url.endswith(f"/{layer_folder(2)}/index.html")
    assert page.problems == []


def test_hostile_name_renders_as_text(page, hostile_run):
    for html in (hostile_run / INDEX, hostile_run / layer_folder(1) / INDEX):
        page.goto(html.as_uri())
        assert HOSTILE in page.locator("body").inner_text()
        # featvis's own scripts at most (no data in them), and data only as escaped JSON
        for script in page.locator("script:not([type])").all():
            assert "alert" not in script.inner_text()
        for data in page.locator('script[type="application/json"]').all():
            assert "<" not in data.inner_text()
    assert page.problems == []


@pytest.mark.parametrize("width", [400, 1280])
def test_no_horizontal_scroll(browser, run_dir, width):
    context = browser.new_context(viewport={"width": width, "height": 800})
    p = context.new_page()
    for html in (run_dir / INDEX, run_dir / layer_folder(2) / INDEX,
                 run_dir / layer_folder(2) / "units" / "1" / INDEX):
        p.goto(html.as_uri())
        assert p.evaluate("document.documentElement.scrollWidth") <= width, html
    context.close()


def _units_in_order(page, selector):
    return [int(u) for u in page.eval_on_selector_all(
        selector, "els => els.filter(e => !e.hidden).map(e => e.dataset.unit)")]


def test_tiles_link_to_their_units_and_sorting_filtering_follow_the_table(page, run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    layer = summary["layers"][1]
    page.goto((run_dir / layer["folder"] / INDEX).as_uri())
    grid = "#method-maximize .tiles > a"
    for unit, href in zip(_units_in_order(page, grid),
                          page.eval_on_selector_all(grid, "els => els.map(e => e.href)")):
        assert href.endswith(f"/{layer['folder']}/units/{unit}/index.html")
    reached = {u["unit"]: u["maximize"]["activation"] for u in layer["unit_details"]}
    page.get_by_role("button", name="activation reached").click()       # highest first
    order = sorted(reached, key=lambda u: (-reached[u], u))
    assert _units_in_order(page, "#units tbody tr") == order
    assert _units_in_order(page, grid) == order
    page.get_by_role("button", name="activation reached").click()       # reversed
    assert _units_in_order(page, grid) == sorted(reached, key=lambda u: (reached[u], u))
    middle = sorted(reached.values())[1]
    page.get_by_label("filter activation reached: at least").fill(str(middle))
    kept = {u for u, v in reached.items() if v >= middle}
    assert set(_units_in_order(page, "#units tbody tr")) == kept
    assert set(_units_in_order(page, grid)) == kept
    assert page.locator("#unit-count").inner_text() == f"{len(kept)} of {len(reached)} shown"
    assert page.problems == []


def test_zoom_opens_and_closes(page, run_dir):
    page.goto((run_dir / layer_folder(2) / "units" / "0" / INDEX).as_uri())
    picture = page.locator("img.zoomable").first
    picture.scroll_into_view_if_needed()
    picture.click()
    assert page.locator("#zoom.open img").get_attribute("src") == picture.get_attribute("src")
    page.locator("#zoom").click()
    assert page.locator("#zoom").count() == 0
    assert page.problems == []


def test_the_index_shows_the_flags_summary_records(page, run_copy):
    from featvis.report import build_gallery

    path = run_copy / "summary.json"
    summary = json.loads(path.read_text())
    summary["layers"][1]["flags"].append({"method": "maximize", "figure": "distinctness",
                                          "value": 0.9, "explanation": "they look alike"})
    path.write_text(json.dumps(summary))
    build_gallery(run_copy)
    expected = []
    for layer in summary["layers"]:
        titles = {s["method"]: s["title"] for s in layer["sections"]}
        expected += [(f"{titles[f['method']]}: {f['figure']}", f["explanation"])
                     for f in layer["flags"]]
    page.goto((run_copy / INDEX).as_uri())
    badges = page.locator(".badge").all()
    assert [(b.inner_text(), b.get_attribute("title")) for b in badges] == expected
    page.goto((run_copy / summary["layers"][1]["folder"] / INDEX).as_uri())
    assert "they look alike" in page.locator("#method-maximize .warning").inner_text()
    assert page.problems == []
