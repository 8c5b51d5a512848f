import json
import re

import pytest

from featvis.report import INDEX, ReportError, build_gallery
from featvis.io.runfolder import layer_folder

from helpers import HOSTILE, HOSTILE_ATTRIBUTE, run_cli


def pages(root):
    return sorted(root.rglob(INDEX))


def test_gallery_pages_and_relative_links(run_dir):
    names = {p.relative_to(run_dir).as_posix() for p in pages(run_dir)}
    one, two, three = (layer_folder(d) for d in (1, 2, 3))
    assert {"index.html", f"{one}/index.html", f"{three}/index.html",
            f"{two}/units/0/index.html", f"{two}/units/2/index.html"} <= names
    assert len(names) == 1 + 3 + 3 * 3
    for page in pages(run_dir):
        html = page.read_text()
        for target in re.findall(r'(?:href|src)="([^"]+)"', html):
            assert not re.match(r"^[a-z]+:|^/", target), target       # relative only
            path, _, anchor = target.partition("#")
            assert (page.parent / path).resolve().is_file(), (page, target)
            if anchor:                                 # a section of the page it names
                assert f'id="{anchor}"' in (page.parent / path).read_text(), target
    index = (run_dir / INDEX).read_text()
    assert "784-64-32-16" in index and "training.png" in index
    layer = (run_dir / layer_folder(2) / INDEX).read_text()
    assert "Lee, Ekanadham" in layer and "Erhan" in layer


def test_unit_page_shows_the_figures(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    unit = summary["layers"][1]["unit_details"][1]
    html = (run_dir / layer_folder(2) / "units" / "1" / INDEX).read_text()
    assert f"{unit['maximize']['activation']:.3f}" in html
    assert f"{unit['filters']['weights'][0]:+.3f}" in html
    assert 'rel="prev" href="../0/index.html"' in html
    assert 'rel="next" href="../2/index.html"' in html


def test_names_are_escaped(hostile_run):
    for page in (hostile_run / INDEX, hostile_run / layer_folder(1) / INDEX,
                 hostile_run / layer_folder(1) / "units" / "0" / INDEX):
        html = page.read_text()
        assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert HOSTILE_ATTRIBUTE not in html


@pytest.mark.parametrize("damage,message", [
    (lambda root: (root / layer_folder(2) / "maximize.png").unlink(),
     f"{layer_folder(2)}/maximize.png: missing image"),
    (lambda root: (root / layer_folder(1) / "units" / "2" / "combination.png").unlink(),
     "combination.png: missing image"),
    (lambda root: (root / "summary.json").write_text('{"format": "featvis.run/1", '),
     "summary.json: malformed JSON"),
    (lambda root: (root / "summary.json").write_text('{"format": "other"}'),
     "not a featvis run summary"),
    (lambda root: (root / "summary.json").unlink(), "summary.json: missing"),
])
def test_report_on_a_broken_run_keeps_the_old_gallery(run_copy, capsys, damage, message):
    before = {p: p.read_bytes() for p in pages(run_copy)}
    damage(run_copy)
    with pytest.raises(ReportError, match=re.escape(message)):
        build_gallery(run_copy)
    code, _, err = run_cli(capsys, "report", run_copy)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in pages(run_copy)} == before


def test_report_rebuilds_a_deleted_gallery(run_copy, capsys):
    for page in pages(run_copy):
        page.unlink()
    code, out, _ = run_cli(capsys, "report", run_copy)
    assert code == 0 and out.strip() == str(run_copy / INDEX)
    assert len(pages(run_copy)) == 13


def test_demo_end_to_end_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli(capsys, "demo", "--out", out, "--epochs", 1,
                                   "--sizes", "784,16,8,4", "--units", 2, "--quiet",
                                   "--device", "cpu")
    assert code == 0 and stdout.strip() == str(out / INDEX)
    assert "1 epochs per RBM on 10000 MNIST images" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [len(layer["methods"]) for layer in summary["layers"]] == [5, 6, 6]
    assert len(pages(out)) == 1 + 3 + 3 * 2
    flags = [(layer["name"], f["figure"]) for layer in summary["layers"]
             for f in layer["flags"]]
    lines = [line for line in stderr.splitlines() if line.startswith("featvis: flag: ")]
    assert len(lines) == len(flags) and all(f"{name}, " in line and f": {figure}" in line
                                            for (name, figure), line in zip(flags, lines))
    assert (out / "model.safetensors").is_file() and summary["model"]["path"] == "model.safetensors"


def test_demo_with_an_input_layer_that_does_not_fit_the_data(tmp_path, capsys):
    code, _, stderr = run_cli(capsys, "demo", "--out", tmp_path / "demo", "--sizes", "700,10",
                              "--quiet", "--device", "cpu")
    assert code == 2 and "width 784 does not match the model's input size 700" in stderr
    assert not (tmp_path / "demo").exists()
