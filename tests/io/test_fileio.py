"""Atomic writes and temporaries that say whose they are."""

import os
import re
import socket
import subprocess
import sys

import pytest

from featvis.io.fileio import BusyError, atomic_write_bytes, claim, holding

from helpers import run_cli


def _temporary(target, pid, kind="tmp"):
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())
    return target.parent / f".{target.name}.featvis-{pid}@{host}.{kind}"


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_atomic_write_follows_the_umask_and_replaces_a_symlink_not_its_target(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    link = tmp_path / "out.bin"
    os.symlink(outside, link)
    old = os.umask(0o027)
    try:
        atomic_write_bytes(link, b"new")
    finally:
        os.umask(old)
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert outside.read_text() == "precious"
    assert link.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "outside.txt"]


def test_stale_temporaries_go_and_live_ones_refuse(tmp_path, sleeper):
    target = tmp_path / "m.safetensors"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = _temporary(target, dead.pid)
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.featvis-1@elsewhere.tmp"      # another target, another host
    other.write_bytes(b"")
    atomic_write_bytes(target, b"complete")
    assert not stale.exists() and other.exists() and target.read_bytes() == b"complete"
    live = _temporary(target, sleeper, "lock")
    live.write_bytes(b"")
    with pytest.raises(BusyError, match=f"featvis process {sleeper} is writing it"):
        claim(target, "tmp")
    assert target.read_bytes() == b"complete"


def test_train_refuses_while_another_run_writes_the_same_checkpoint(tmp_path, capsys,
                                                                    sleeper):
    out = tmp_path / "m.safetensors"
    _temporary(out, sleeper, "lock").write_bytes(b"")
    code, _, err = run_cli(capsys, "train", "--sizes", "784,4", "--quiet", "--out", out)
    assert code == 2 and f"featvis process {sleeper}" in err and not out.exists()


def test_holding_leaves_no_lock_behind(tmp_path):
    target = tmp_path / "m.safetensors"
    with holding(target):
        atomic_write_bytes(target, b"x")             # the holder itself may write
        assert len(list(tmp_path.iterdir())) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_a_stale_temporary_goes_without_following_any_symlink(tmp_path):
    """A dead run's temporary folder is removed; a symlink inside it to the user's folder,
    and a symlink named like a temporary, lose only themselves."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    target = tmp_path / "run"
    folder = _temporary(target, dead.pid)
    folder.mkdir()
    (folder / "half.png").write_bytes(b"half")
    os.symlink(user, folder / "link")
    lock = _temporary(target, dead.pid, "lock")
    os.symlink(user, lock)                         # a stale lock that is a symlink
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    claim(target, "tmp")
    assert not os.path.lexists(folder) and not os.path.lexists(lock)
    assert (user / "thesis.tex").read_text() == "years of work" and mine.read_text() == "mine"


def test_remove_temporary_refuses_any_other_name(tmp_path):
    from featvis.io.fileio import remove_temporary

    precious = tmp_path / "precious"
    precious.mkdir()
    with pytest.raises(ValueError, match="not a featvis temporary"):
        remove_temporary(precious)
    assert precious.is_dir()


def test_a_failed_write_removes_only_its_own_temporary(tmp_path, monkeypatch):
    import featvis.io.fileio as fileio

    user = tmp_path / "user.txt"
    user.write_text("mine")
    out = tmp_path / "out.bin"
    planted = _temporary(out, os.getpid())
    real_claim = fileio.claim

    def raced(target, kind, stale_aside=None):
        path = real_claim(target, kind, stale_aside)
        os.symlink(user, path)           # someone takes the temporary's name meanwhile
        return path

    monkeypatch.setattr(fileio, "claim", raced)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(out, b"new")
    assert planted.is_symlink() and user.read_text() == "mine" and not out.exists()
    monkeypatch.undo()
    monkeypatch.setattr(fileio.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("full")))
    planted.unlink()
    with pytest.raises(OSError, match="full"):
        atomic_write_bytes(out, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user.txt"]    # its own is gone


def test_the_lock_goes_and_nothing_else(tmp_path):
    target = tmp_path / "m.safetensors"
    target.write_bytes(b"the user's model")
    (tmp_path / "other.txt").write_text("mine")
    with holding(target):
        assert len(list(tmp_path.iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "other.txt"]
    assert target.read_bytes() == b"the user's model"


def test_a_lock_swapped_for_a_symlink_loses_only_the_link(tmp_path):
    """If the lock's name is taken by a symlink to a user's file while it is held, leaving
    removes the link itself: the user's file stays."""
    target = tmp_path / "m.safetensors"
    user = tmp_path / "user.txt"
    user.write_text("mine")
    with holding(target):
        lock = next(p for p in tmp_path.iterdir() if p.name.endswith(".lock"))
        lock.unlink()
        os.symlink(user, lock)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user.txt"]
    assert user.read_text() == "mine"
