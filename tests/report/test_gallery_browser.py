"""The gallery in a real browser: Debian's Chromium driven by Playwright, from file:// URLs."""

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


@pytest.mark.parametrize("run", ["run_dir", "cnn_run"])
def test_every_page_loads_its_images_and_links(page, run, request):
    run_dir = request.getfixturevalue(run)
    for html in sorted(run_dir.rglob(INDEX)):
        page.goto(html.as_uri())
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert widths and all(w > 0 for w in widths), html
        hrefs = page.eval_on_selector_all("a", "els => els.map(e => e.href)")
        for href in hrefs:
            assert href.startswith("file://") and Path(href[len("file://"):]).is_file(), href
    assert page.problems == []


def test_click_through_index_layer_unit_next(page, run_dir):
    page.goto((run_dir / INDEX).as_uri())
    page.get_by_role("link", name="layer 2", exact=True).first.click()
    assert page.url.endswith(f"/{layer_folder(2)}/index.html")
    page.locator(".units a", has_text="0").first.click()
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
        assert page.locator("script").count() == 0
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
