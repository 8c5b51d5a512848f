"""Writing files safely: complete or absent, with the user's umask, and temporaries that
say whose they are.

Every temporary featvis makes lies beside its target and is named
``.{target}.featvis-{pid}@{host}.{kind}``. Before making one, :func:`claim` removes the
temporaries of the same target whose process is gone (a SIGKILL leaves them behind) and
refuses while a live process holds one (two runs writing the same output). Files are created
with mode 0666 and folders with 0777, so the user's umask decides, as for any other tool.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Callable, Iterator

from ..errors import FeatvisError

__all__ = ["BusyError", "clear_stale", "claim", "holding", "write_new", "atomic_write_bytes",
           "stale_temporary", "remove_temporary", "check_creatable", "file_identity", "NAME_MAX"]

KINDS = ("tmp", "old", "lock")
_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.featvis-(?P<pid>[0-9]+)@(?P<host>[A-Za-z0-9.-]+)"
                        r"\.(?P<kind>tmp|old|lock)$")


NAME_MAX = 255            # bytes in one file name (Linux, macOS)


class BusyError(FeatvisError):
    """Another featvis process is writing the same output."""


def _stem(name: str) -> str:
    """What a temporary of ``name`` is called after: ``name`` itself, or for a name too
    long to take the temporary's affixes, its start and a hash of the rest."""
    longest = f".{name}.featvis-{2**22}@{_HOST}.lock"
    if len(os.fsencode(longest)) <= NAME_MAX:
        return name
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    return f"{os.fsencode(name)[:80].decode(errors='ignore')}~{digest}"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (0 and impossible pids never do)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:       # someone else's live process
        return True
    return True


def stale_temporary(name: str) -> bool:
    """Whether ``name`` is a featvis temporary left by a process of this host that is gone;
    :class:`BusyError` if its process is alive (a run still writing there)."""
    match = _TEMPORARY.match(name)
    if match is None or match["host"] != _HOST:
        return False
    if _alive(int(match["pid"])):
        raise BusyError(f"{name}: featvis process {match['pid']} is still writing here; "
                        "wait for it to finish (or remove the file if that process is not "
                        "featvis)")
    return True


def file_identity(path: Path) -> tuple[int, ...] | None:
    """What tells the entry at ``path`` (never followed) from another put in its place: its
    inode (which a new file may reuse), size and change time; ``None`` if nothing is there."""
    try:
        stat = path.lstat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_ctime_ns


def remove_temporary(path: Path) -> None:
    """Delete a featvis temporary (a file, or a folder featvis built) left by a dead run.

    Only the entry itself goes: a symlink is unlinked, never followed, and a folder is
    removed without following the symlinks inside it (``shutil.rmtree``'s fd-based walk),
    so nothing outside the temporary is touched. Callers pass only names that match
    featvis's temporaries of a process that is gone."""
    if not _TEMPORARY.match(path.name):
        raise ValueError(f"{path}: not a featvis temporary; refusing to delete it")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _clear(entry: Path, kind: str, target: Path,
           stale_aside: Callable[[Path, Path], None] | None) -> None:
    """Clean up the dead temporary ``entry``: a folder moved aside may hold the only copy
    of some files, so only ``stale_aside`` may handle it; anything else is removed."""
    if kind != "old":
        remove_temporary(entry)
    elif stale_aside is not None:
        stale_aside(entry, target)


def clear_stale(target: str | os.PathLike,
                stale_aside: Callable[[Path, Path], None] | None = None) -> None:
    """Remove the temporaries of ``target`` left by dead processes of this host;
    :class:`BusyError` if a live one holds one. ``stale_aside(aside, target)`` handles a
    stale ``old`` folder, which may still hold the only copy of some files (without it such
    a folder is left alone)."""
    target = Path(target)
    parent = target.parent
    if parent.is_dir():
        for entry in sorted(parent.iterdir()):
            match = _TEMPORARY.match(entry.name)
            if match is None or match["target"] != _stem(target.name):
                continue
            if match["host"] != _HOST:
                continue                      # cannot tell whether it is alive: leave it
            if int(match["pid"]) == os.getpid():
                continue                      # this process's own (e.g. the lock it holds)
            if _alive(int(match["pid"])):
                raise BusyError(f"{target}: featvis process {match['pid']} is writing it "
                                f"({entry.name}); wait for it to finish")
            _clear(entry, match["kind"], target, stale_aside)


def claim(target: str | os.PathLike, kind: str,
          stale_aside: Callable[[Path, Path], None] | None = None) -> Path:
    """The path for a new temporary of ``kind`` (tmp, old, lock) of ``target``, after
    :func:`clear_stale`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    clear_stale(target, stale_aside)
    target = Path(target)
    path = target.parent / f".{_stem(target.name)}.featvis-{os.getpid()}@{_HOST}.{kind}"
    if os.path.lexists(path):                 # left by an earlier failure of this process
        _clear(path, kind, target, stale_aside)
    if os.path.lexists(path):
        raise BusyError(f"{path}: left by an earlier failure of this process; move it away")
    return path


@contextlib.contextmanager
def holding(target: str | os.PathLike) -> Iterator[None]:
    """Hold a lock file beside ``target`` for the duration of a long write (e.g. training),
    so that a second run to the same target refuses instead of racing."""
    lock = claim(target, "lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))
    try:
        yield
    finally:
        remove_temporary(lock)        # the lock's own name only, never followed


def check_creatable(path: str | os.PathLike, option: str) -> None:
    """Refuse, in one line naming ``option`` and ``path``, a file or folder featvis could not
    create: a name too long, a path under a file, or a folder where nothing can be written
    (tried with a temporary file, removed at once); nothing is left behind."""
    path = Path(os.path.abspath(path))
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise FeatvisError(f"{option} {path}: the name has {len(os.fsencode(path.name))} "
                           f"bytes, above the {NAME_MAX} a file name may have")
    missing = path
    while not os.path.lexists(missing.parent) and missing.parent != missing:
        missing = missing.parent
    above = missing.parent
    if not above.is_dir():
        raise FeatvisError(f"{option} {path}: {above} is not a folder")
    try:
        trial = claim(missing, "tmp")
        write_new(trial, b"")
    except OSError as exc:
        raise FeatvisError(f"{option} {path}: cannot write in {above} "
                           f"({exc.strerror or exc})") from None
    remove_temporary(trial)


def write_new(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Create ``path`` (which must not exist; never through a symlink) holding ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to a temporary beside ``path``, fsync it (unless not ``durable``), then
    rename it over ``path`` (a symlink at ``path`` is replaced, never followed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = claim(path, "tmp")
    try:
        write_new(tmp, data, durable=durable)
    except FileExistsError:
        raise        # something else took the temporary's name: not ours to delete
    except BaseException:
        remove_temporary(tmp)                      # created by write_new, then it failed
        raise
    try:
        os.replace(tmp, path)
    except BaseException:
        remove_temporary(tmp)
        raise
