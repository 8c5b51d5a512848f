"""The ownership rule: featvis replaces or updates only what it wrote itself."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from featvis.io.fileio import BusyError
from featvis.report import INDEX, ReportError, build_gallery
from featvis.io.runfolder import (MANIFEST, OwnershipError, inspect_folder, layer_folder,
                               load_summary, plan_replacement, write_into_run)
from featvis.pipeline.visualization import VisualizeSettings, visualize

from helpers import run_cli, snapshot

QUICK = ["--units", "1", "--methods", "combination", "--layers", "1,2", "--quiet"]
FOREIGN = "is not featvis's"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, small_dbn):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    small_dbn.save(path)
    return path


@pytest.fixture
def run(tmp_path, small_dbn, mnist_small):
    """A fresh, quick run folder of ``small_dbn``."""
    out = tmp_path / "run"
    visualize(small_dbn, mnist_small[0], out,
              VisualizeSettings(layers=[1, 2], methods=["combination"], units=1),
              progress=False)
    return out


def refused(capsys, *argv, naming):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert naming in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_a_run_folder_lists_every_file_it_holds(run):
    manifest = json.loads((run / MANIFEST).read_text())
    files = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {MANIFEST}
    contents = inspect_folder(run)
    assert contents.is_run and not contents.foreign and set(contents.own) == files - {MANIFEST}


@pytest.mark.parametrize("make", [
    lambda out: (out / "summary.json").write_text('{"my": "own summary"}'),   # the old guard
    lambda out: (out / "notes.txt").write_text("my notes"),
    lambda out: (out / ".hidden").write_text("a dot-file"),
    lambda out: (out / "mine").mkdir() or (out / "mine" / "data.csv").write_text("1,2"),
    lambda out: (out / "empty").mkdir(),
    lambda out: (out / INDEX).write_text("<p>my edited gallery</p>"),
    lambda out: (out / layer_folder(1) / "combination.png").write_bytes(b"not featvis's png"),
    lambda out: os.symlink("/etc/hostname", out / layer_folder(1) / "link"),
], ids=["summary", "notes", "dot-file", "subfolder", "empty-folder", "edited-page",
        "same-name-other-bytes", "symlink"])
def test_visualize_refuses_a_folder_with_anything_foreign(capsys, run, model_path, make):
    make(run)
    before = snapshot(run)
    refused(capsys, "visualize", model_path, "--out", run, *QUICK, naming=FOREIGN)
    assert snapshot(run) == before


def test_a_folder_without_a_manifest_is_never_replaced(capsys, tmp_path, model_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "summary.json").write_text('{"format": "featvis.run/1"}')
    err = refused(capsys, "visualize", model_path, "--out", out, *QUICK,
                  naming="'summary.json' is not featvis's")
    assert "--force" in err
    assert snapshot(out) == {"summary.json": b'{"format": "featvis.run/1"}'}


def test_force_replaces_featvis_files_and_carries_the_others_unchanged(capsys, run,
                                                                      model_path):
    (run / "notes.txt").write_text("my notes")
    (run / ".hidden").write_bytes(b"\x00dot")
    (run / "mine").mkdir()
    (run / "mine" / "data.csv").write_text("1,2")
    (run / INDEX).write_text("<p>edited</p>")
    os.symlink("../outside", run / layer_folder(1) / "link")
    code, _, err = run_cli(capsys, "visualize", model_path, "--out", run, *QUICK, "--force")
    assert code == 0, err
    after = snapshot(run)
    assert after["notes.txt"] == b"my notes" and after[".hidden"] == b"\x00dot"
    assert after["mine/data.csv"] == b"1,2"
    assert after["index.html.kept"] == b"<p>edited</p>" and b"featvis gallery" in after[INDEX]
    assert after[f"{layer_folder(1)}/link"] == ("link", "../outside")
    assert "kept 5 file(s)" in err and "'index.html' (as 'index.html.kept')" in err
    # The carried files stay foreign: the next run without --force refuses again.
    assert set(inspect_folder(run).foreign) == {".hidden", "index.html.kept",
                                                f"{layer_folder(1)}/link", "mine/data.csv",
                                                "notes.txt"}
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]     # no temporaries left


def test_a_file_or_symlink_at_out_is_never_replaced(capsys, tmp_path, model_path):
    target = tmp_path / "real"
    target.mkdir()
    os.symlink(target, tmp_path / "link")
    refused(capsys, "visualize", model_path, "--out", model_path, *QUICK, "--force",
            naming="is the model being read")
    refused(capsys, "visualize", model_path, "--out", tmp_path / "link", *QUICK, "--force",
            naming="exists and is not a folder featvis wrote")
    assert model_path.is_file() and list(target.iterdir()) == []


def test_visualizing_the_demo_model_inside_its_folder_keeps_it(capsys, tmp_path, small_dbn,
                                                             mnist_small):
    demo = tmp_path / "demo"
    visualize(small_dbn, mnist_small[0], demo,
              VisualizeSettings(layers=[1], methods=["combination"], units=1),
              save_model_as="model.safetensors", progress=False)
    model = demo / "model.safetensors"
    before = model.read_bytes()
    code, _, err = run_cli(capsys, "visualize", model, "--out", demo, *QUICK)
    assert code == 0, err
    assert model.read_bytes() == before
    assert "model.safetensors" in json.loads((demo / MANIFEST).read_text())["files"]
    assert [d["layer"] for d in load_summary(demo)["layers"]] == [1, 2]


def test_a_model_inside_out_that_featvis_did_not_write_is_refused(capsys, run, model_path):
    inside = run / "model.safetensors"
    inside.write_bytes(model_path.read_bytes())
    before = snapshot(run)
    refused(capsys, "visualize", inside, "--out", run, *QUICK, "--force",
            naming="lies inside the output folder")
    assert snapshot(run) == before


def test_report_and_evaluate_never_write_through_a_symlinked_folder(capsys, tmp_path, run,
                                                                   model_path):
    outside = tmp_path / "outside"               # holds what the gallery reads, and more
    os.rename(run / layer_folder(1), outside)
    (outside / INDEX).write_text("precious")
    os.symlink(outside, run / layer_folder(1))
    before = snapshot(outside)
    refused(capsys, "report", run, naming=f"refusing to write '{layer_folder(1)}'")
    refused(capsys, "evaluate", model_path, "--run", run, "--ais-runs", 0, "--quiet",
            naming=f"refusing to write '{layer_folder(1)}'")
    assert snapshot(outside) == before
    code, _, err = run_cli(capsys, "report", run, "--force")
    assert code == 0 and f"'{layer_folder(1)}' (as '{layer_folder(1)}.kept')" in err
    assert snapshot(outside) == before
    assert (run / (layer_folder(1) + ".kept")).is_symlink()
    assert (run / layer_folder(1) / INDEX).is_file()


def test_report_keeps_an_edited_page_unless_forced(capsys, run):
    (run / layer_folder(2) / INDEX).write_text("my annotations")
    refused(capsys, "report", run, naming=f"refusing to write '{layer_folder(2)}/index.html'")
    assert (run / layer_folder(2) / INDEX).read_text() == "my annotations"
    assert run_cli(capsys, "report", run, "--force")[0] == 0
    assert (run / layer_folder(2) / "index.html.kept").read_text() == "my annotations"
    assert inspect_folder(run).foreign == [f"{layer_folder(2)}/index.html.kept"]


def test_report_refuses_a_folder_featvis_did_not_write(capsys, run):
    (run / MANIFEST).unlink()
    before = snapshot(run)
    refused(capsys, "report", run, naming="not a featvis run folder")
    assert snapshot(run) == before


def test_gallery_urls_are_built_from_checked_segments(run):
    path = run / "summary.json"
    summary = json.loads(path.read_text())
    for bad in ("http://host/x.png", "/etc/passwd", "../x.png", "layer1/a b.png",
                "layer1//x.png", "c:x.png"):
        summary["layers"][0]["files"]["combination"] = bad
        path.write_text(json.dumps(summary))
        with pytest.raises(ReportError, match="not a plain relative path"):
            build_gallery(run)
    html = (run / INDEX).read_text()
    for url in re.findall(r'(?:src)="([^"]+)"', html):
        assert url.startswith("./"), url


def test_files_follow_the_umask(tmp_path, small_dbn, mnist_small):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        for _ in range(2):                     # a new folder, then a replaced one
            visualize(small_dbn, mnist_small[0], out,
                      VisualizeSettings(layers=[1], methods=["combination"], units=1),
                      progress=False)
            assert out.stat().st_mode & 0o777 == 0o755
            assert (out / layer_folder(1)).stat().st_mode & 0o777 == 0o755
            assert (out / INDEX).stat().st_mode & 0o777 == 0o644
            assert (out / MANIFEST).stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _host():
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())


def test_stale_temporaries_are_removed_and_live_ones_refuse(capsys, tmp_path, run,
                                                           model_path):
    host = _host()
    stale = tmp_path / f".run.featvis-{_dead_pid()}@{host}.tmp"
    stale.mkdir()
    (stale / "half.png").write_bytes(b"half")
    assert run_cli(capsys, "visualize", model_path, "--out", run, *QUICK)[0] == 0
    assert not stale.exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".run.featvis-{sleeper.pid}@{host}.tmp"
        live.mkdir()
        before = snapshot(run)
        refused(capsys, "visualize", model_path, "--out", run, *QUICK,
                naming=f"featvis process {sleeper.pid} is writing it")
        refused(capsys, "report", run, naming=f"featvis process {sleeper.pid}")
        assert snapshot(run) == before and live.is_dir()
        with pytest.raises(BusyError):
            plan_replacement(run)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_folder_moved_aside_by_a_killed_run_is_put_back(tmp_path, run):
    before = snapshot(run)
    aside = tmp_path / f".run.featvis-{_dead_pid()}@{_host()}.old"
    os.rename(run, aside)                      # killed between the two renames
    plan_replacement(run)
    assert snapshot(run) == before and not aside.exists()


def signalled_visualize(folder, model_path, signal_number):
    """The exit status of a long ``featvis visualize`` into ``folder/run``, sent
    ``signal_number`` once its temporary folder exists."""
    import time

    args = [sys.executable, "-m", "featvis", "visualize", model_path, "--out", folder / "run",
            "--quiet", "--steps", "100000", "--methods", "maximize", "--units", "2"]
    proc = subprocess.Popen([str(a) for a in args], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") for p in folder.iterdir()) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal_number)
    return proc.wait(timeout=60)


def test_sigkill_during_visualize_leaves_nothing_that_blocks_the_next_run(tmp_path,
                                                                          model_path):
    import signal

    out = tmp_path / "run"
    signalled_visualize(tmp_path, model_path, signal.SIGKILL)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temporary"
    result = subprocess.run([str(a) for a in [sys.executable, "-m", "featvis.cli", "visualize",
                                              model_path, "--out", out, *QUICK]],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_write_into_run_checks_every_target_before_writing(run):
    (run / layer_folder(2) / INDEX).write_text("mine")
    before = snapshot(run)
    with pytest.raises(OwnershipError, match=f"{layer_folder(2)}/index.html"):
        write_into_run(run, {"aaa.txt": b"x", f"{layer_folder(2)}/index.html": b"y"})
    assert snapshot(run) == before


def test_visualize_refuses_to_delete_a_model_featvis_saved(capsys, tmp_path, small_dbn,
                                                            mnist_small, model_path):
    demo = tmp_path / "demo"
    visualize(small_dbn, mnist_small[0], demo,
              VisualizeSettings(layers=[1], methods=["combination"], units=1),
              save_model_as="model.safetensors", progress=False)
    before = snapshot(demo)
    refused(capsys, "visualize", model_path, "--out", demo, *QUICK,
            naming="it holds the model featvis saved there (model.safetensors)")
    assert snapshot(demo) == before
    assert run_cli(capsys, "visualize", model_path, "--out", demo, *QUICK, "--force")[0] == 0
    assert not (demo / "model.safetensors").exists()


def test_an_interrupted_update_leaves_only_featvis_files(run, monkeypatch):
    import featvis.io.runfolder.manifest as runfolder

    writes = []
    real = runfolder.atomic_write_bytes

    def killed_after_two(path, data, **kwargs):
        if len(writes) == 3:              # the pending manifest and two pages
            raise KeyboardInterrupt
        writes.append(path)
        real(path, data, **kwargs)

    monkeypatch.setattr(runfolder, "atomic_write_bytes", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        build_gallery(run)
    monkeypatch.undo()
    contents = inspect_folder(run)
    assert contents.is_run and contents.foreign == []
    build_gallery(run)                                 # and the next update goes through
    assert inspect_folder(run).foreign == []


def test_force_keeps_foreign_entries_where_featvis_writes(capsys, run, model_path):
    (run / MANIFEST).write_text("[]")                  # not featvis's manifest: all foreign
    (run / "training.png").unlink()
    (run / "training.png").mkdir()
    (run / "training.png" / "mine.txt").write_text("mine")
    code, _, err = run_cli(capsys, "visualize", model_path, "--out", run, *QUICK, "--force")
    assert code == 0, err
    assert (run / "manifest.json.kept").read_text() == "[]"
    assert json.loads((run / MANIFEST).read_text())["format"] == "featvis.manifest/1"
    assert (run / "training.png.kept" / "mine.txt").read_text() == "mine"


@pytest.mark.parametrize("pid", ["0", "99999999999999999999"])
def test_impossible_pids_are_stale(run, pid):
    stale = run.parent / f".run.featvis-{pid}@{_host()}.tmp"
    stale.mkdir()
    plan_replacement(run)
    assert not stale.exists()


def test_a_deep_foreign_folder_is_walked_without_recursion(capsys, run, model_path):
    deep = str(run)
    for _ in range(1200):                 # os.makedirs and shutil.rmtree would recurse
        deep += "/d"
        os.mkdir(deep)
    Path(deep, "x").write_text("deep")
    try:
        refused(capsys, "visualize", model_path, "--out", run, *QUICK, naming="'d/d/d/d")
    finally:
        os.unlink(Path(deep, "x"))
        while deep != str(run):
            os.rmdir(deep)
            deep = os.path.dirname(deep)


def test_out_is_never_the_current_folder(capsys, tmp_path, model_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for out in (".", "sub/..", ".."):
        refused(capsys, "visualize", model_path, "--out", out, *QUICK,
                naming="is the current folder or holds it")
    assert list(here.iterdir()) == []


def test_a_run_folder_from_before_manifests_is_featvis_s(capsys, run, model_path):
    """A featvis.run/1 folder (no manifest) is replaced without --force; report asks to
    re-run; a user's file in it is still foreign."""
    (run / MANIFEST).unlink()
    summary = json.loads((run / "summary.json").read_text())
    legacy = {"format": "featvis.run/1", "layers": [
        {"layer": 1, "files": {"combination": "layer1/combination.png"},
         "unit_details": [{"unit": 0, "files": {"combination": "layer1/units/0/c.png"}}]}]}
    (run / "summary.json").write_text(json.dumps(legacy))
    for rel in ("layer1/combination.png", "layer1/units/0/c.png", "layer1/index.html"):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(b"old")
    for rel in list(summary["layers"][0]["files"].values()):
        (run / rel).unlink()
    import shutil
    for layer in summary["layers"]:
        shutil.rmtree(run / layer["folder"])
    refused(capsys, "report", run, naming="written by an older featvis (featvis.run/1)")
    (run / "notes.txt").write_text("mine")
    refused(capsys, "visualize", model_path, "--out", run, *QUICK, naming="'notes.txt'")
    (run / "notes.txt").unlink()
    assert run_cli(capsys, "visualize", model_path, "--out", run, *QUICK)[0] == 0
    assert load_summary(run)["format"] == "featvis.run/2"
    assert not (run / "layer1").exists()


def test_sigterm_during_visualize_leaves_no_temporary(tmp_path, model_path):
    import signal

    assert signalled_visualize(tmp_path, model_path, signal.SIGTERM) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_the_builder_rewrites_only_its_own_files(tmp_path):
    from featvis.io.runfolder import RunBuilder

    builder = RunBuilder(tmp_path)
    builder.write("a/page.html", b"first")
    builder.write("a/page.html", b"second")          # its own: replaced
    assert (tmp_path / "a" / "page.html").read_bytes() == b"second"
    (tmp_path / "a" / "user.html").write_text("mine")
    with pytest.raises(FileExistsError):
        builder.write("a/user.html", b"featvis")     # not its own: never deleted
    assert (tmp_path / "a" / "user.html").read_text() == "mine"
    # Its own file swapped for a symlink to the user's file, or for another file: both stay.
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("years of work")
    page = tmp_path / "a" / "page.html"
    page.unlink()
    os.symlink(thesis, page)
    with pytest.raises(FileExistsError):
        builder.write("a/page.html", b"third")
    assert page.is_symlink() and thesis.read_text() == "years of work"
    page.unlink()
    page.write_text("the user's page")
    with pytest.raises(FileExistsError):
        builder.write("a/page.html", b"third")
    assert page.read_text() == "the user's page"


def test_stale_temporaries_inside_a_run_go_and_foreign_files_stay(capsys, run, model_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    page = run / layer_folder(1) / f".index.html.featvis-{dead.pid}@{_host()}.tmp"
    page.write_bytes(b"half a page")
    folder = run / f".x.featvis-{dead.pid}@{_host()}.tmp"
    folder.mkdir()
    (folder / "half.png").write_bytes(b"half")
    outside = run.parent / "outside.txt"
    outside.write_text("mine")
    os.symlink(outside, folder / "link")
    assert run_cli(capsys, "report", run)[0] == 0
    assert not os.path.lexists(page) and not os.path.lexists(folder)
    assert outside.read_text() == "mine" and inspect_folder(run).foreign == []


def test_a_replaced_folder_loses_only_featvis_own_files(tmp_path):
    """Discarding a folder moved aside deletes the files its manifest lists, as regular
    files of the recorded size, and files carried into the new folder; a symlink or a
    changed file put where a listed file was, and any foreign file, stay (kept beside the
    target), and no symlink is followed."""
    from featvis.io.runfolder.manifest import _discard_aside

    user = tmp_path / "thesis.tex"
    user.write_text("years of work")
    target, aside = tmp_path / "run", tmp_path / "aside"
    target.mkdir()
    (aside / "layer").mkdir(parents=True)
    (aside / "layer" / "a.png").write_bytes(b"png")             # featvis's own
    (aside / "b.png").write_bytes(b"edited since")              # listed, but changed
    os.symlink(user, aside / "c.png")                            # listed, but a symlink
    (aside / "notes.txt").write_text("mine")                     # foreign
    (aside / "carried.txt").write_text("carried over")
    os.link(aside / "carried.txt", target / "carried.txt")       # lives in the target too
    own = {rel: {"size": 3, "sha256": "0" * 64} for rel in ("layer/a.png", "b.png", "c.png")}
    _discard_aside(aside, target, own)
    kept = next(p for p in tmp_path.iterdir() if p.name not in ("run", "thesis.tex"))
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*")) == [
        "b.png", "c.png", "notes.txt"]
    assert (kept / "c.png").is_symlink() and user.read_text() == "years of work"
    assert (target / "carried.txt").read_text() == "carried over"


def test_a_replaced_folder_loses_only_featvis_files_never_through_a_symlink(tmp_path, capsys):
    """_discard_aside deletes a listed regular file of its recorded size and nothing else: a
    symlink or a changed file at a listed name, and a foreign file, are kept (the folder is
    kept aside under a new name), and the symlink's target is untouched."""
    from featvis.io.runfolder.manifest import _discard_aside

    aside, target = tmp_path / "old", tmp_path / "run"
    (aside / "layer").mkdir(parents=True)
    target.mkdir()
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("years of work")
    (aside / "layer" / "own.png").write_bytes(b"png")
    os.symlink(thesis, aside / "layer" / "linked.png")
    (aside / "layer" / "changed.png").write_bytes(b"edited by the user")
    (aside / "notes.txt").write_text("mine")
    own = {"layer/own.png": {"size": 3}, "layer/linked.png": {"size": 13},
           "layer/changed.png": {"size": 3}}
    _discard_aside(aside, target, own)
    assert thesis.read_text() == "years of work"
    (kept,) = [p for p in tmp_path.iterdir() if p.name not in ("run", "thesis.tex")]
    assert not aside.exists() and "kept" in capsys.readouterr().err
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if not p.is_dir()) \
        == ["layer/changed.png", "layer/linked.png", "notes.txt"]
    assert (kept / "layer" / "linked.png").is_symlink()
