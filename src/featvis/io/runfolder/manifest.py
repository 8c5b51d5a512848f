"""Run folders' ownership: the one rule that keeps what a user owns, featvis replaces or
updates only what it wrote itself.

A run folder carries ``manifest.json``: a format id and, for every file featvis wrote in it,
the file's size and sha256. An entry of a folder is featvis's *own* when it is a regular file
listed there with the same size and hash; anything else (a user's notes, an edited page, a
symlink, a dot-file, a foreign folder) is *foreign*. A folder may be replaced only when it is
empty or holds nothing foreign; otherwise the command refuses and names the first foreign
entry. With ``force`` featvis replaces its own files and carries every foreign entry into the
new folder unchanged (renamed ``NAME.kept`` where the new run writes ``NAME`` itself), so
nothing foreign is ever deleted. Nothing is written through a symlink: paths inside a run
folder are built from checked segments and every folder on the way is a real one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ...errors import FeatvisError
from ..fileio import (atomic_write_bytes, claim, clear_stale, file_identity, remove_temporary,
                      stale_temporary, write_new)
from ..safejson import loads as parse_json
from .schema import (EVALUATION, LEGACY_RUN_FORMATS, MAX_JSON_BYTES, SUMMARY, check_segments,
                     is_index)

__all__ = ["MANIFEST", "MANIFEST_FORMAT", "OwnershipError", "FolderContents", "inspect_folder",
           "Replacement", "plan_replacement", "RunBuilder", "build_run", "check_run_targets",
           "write_into_run", "recover", "path_inside"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "featvis.manifest/1"
_MAX_MANIFEST_BYTES = 64 * 2**20
_FORCE_HINT = "--force replaces featvis's own files and keeps the others"


class OwnershipError(FeatvisError):
    """An output would replace or write through something featvis did not write."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_small_json(path: Path, limit: int) -> object | None:
    """``path`` parsed, or None if it is missing, a symlink, too large or not JSON."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > limit:
            return None
        return parse_json(path.read_bytes(), str(path))
    except (OSError, ValueError):
        return None


def _is_record(record: object) -> bool:
    return isinstance(record, dict) and isinstance(record.get("size"), int) \
        and isinstance(record.get("sha256"), str)


def _read_manifest(root: Path) -> dict[str, dict] | None:
    """The ``files`` of ``root/manifest.json``; None if there is none or it is not featvis's."""
    manifest = _read_small_json(root / MANIFEST, _MAX_MANIFEST_BYTES)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT \
            or not isinstance(files, dict):
        return None
    for rel, record in files.items():
        try:
            check_segments(rel)
        except ValueError:
            return None
        if not _is_record(record) or not (record.get("previous") is None
                                          or _is_record(record["previous"])):
            return None
    return files


def _legacy_listing(root: Path) -> dict[str, dict] | None:
    """The files of a ``featvis.run/1`` folder written before manifests existed, by name:
    its summary, the pictures it names, the gallery and the evaluation. None otherwise."""
    summary = _read_small_json(root / SUMMARY, MAX_JSON_BYTES)
    if not isinstance(summary, dict) or summary.get("format") not in LEGACY_RUN_FORMATS \
            or not isinstance(summary.get("layers"), list):
        return None
    names = {SUMMARY, "index.html", "training.png", EVALUATION}
    for layer in summary["layers"]:
        if not isinstance(layer, dict) or not is_index(layer.get("layer")):
            return None
        folder = f"layer{layer['layer']}"
        names.add(f"{folder}/index.html")
        names.update(v for v in (layer.get("files") or {}).values() if isinstance(v, str))
        for unit in layer.get("unit_details") or []:
            if isinstance(unit, dict) and is_index(unit.get("unit")):
                names.add(f"{folder}/units/{unit['unit']}/index.html")
                names.update(v for v in (unit.get("files") or {}).values()
                             if isinstance(v, str))
    return dict.fromkeys(names, {})


def _matches(path: Path, size: int, record: dict) -> bool:
    """Whether the file is what ``record`` lists (or its ``previous`` version, which an
    interrupted update may have left); a legacy record ``{}`` accepts any content."""
    if not record:
        return True
    versions = [record] + ([record["previous"]] if record.get("previous") else [])
    sizes = [v for v in versions if v["size"] == size]
    return bool(sizes) and _sha256(path) in {v["sha256"] for v in sizes}


@dataclass
class FolderContents:
    """What a folder holds, sorted into featvis's own files and foreign entries.

    ``own`` maps each own file's relative path to its manifest record; ``foreign`` lists the
    foreign entries (relative paths, sorted; a foreign folder's files are listed one by one,
    an empty foreign folder by itself); ``stale`` lists temporaries of dead featvis runs;
    ``legacy`` marks a ``featvis.run/1`` folder from before manifests.
    """

    root: Path
    exists: bool
    is_run: bool = False
    own: dict[str, dict] = field(default_factory=dict)
    foreign: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    legacy: bool = False


def inspect_folder(root: str | os.PathLike) -> FolderContents:
    """Sort the entries of ``root`` (never following a symlink) by the manifest's rule.

    A ``featvis.run/1`` folder written before manifests existed is featvis's by name
    (``legacy``): its summary, the files it names and the gallery pages.
    """
    root = Path(root)
    if not os.path.lexists(root):
        return FolderContents(root, exists=False)
    if root.is_symlink() or not root.is_dir():
        raise OwnershipError(f"{root}: exists and is not a folder featvis wrote (a "
                             f"{'symlink' if root.is_symlink() else 'file'}); refusing to "
                             "replace it")
    manifest = _read_manifest(root)
    legacy = _legacy_listing(root) if manifest is None else None
    contents = FolderContents(root, exists=True, is_run=manifest is not None,
                              legacy=legacy is not None)
    listed = manifest or legacy or {}
    under = {"/".join(rel.split("/")[:n]) for rel in listed for n in range(1, rel.count("/") + 1)}
    folders = [(root, "")]                  # a stack, not recursion: any depth is fine
    while folders:
        folder, prefix = folders.pop()
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        if not entries and prefix and prefix.rstrip("/") not in under:
            contents.foreign.append(prefix.rstrip("/"))      # an empty folder of the user's
        for entry in entries:
            rel = prefix + entry.name
            if stale_temporary(entry.name):
                contents.stale.append(rel)
            elif entry.is_dir(follow_symlinks=False):
                folders.append((Path(entry.path), rel + "/"))
            elif rel == MANIFEST and manifest is not None:
                continue
            elif entry.is_file(follow_symlinks=False) and rel in listed and _matches(
                    Path(entry.path), entry.stat(follow_symlinks=False).st_size, listed[rel]):
                contents.own[rel] = listed[rel]
            else:
                contents.foreign.append(rel)
    contents.foreign.sort()
    return contents


def _refuse_foreign(contents: FolderContents, action: str) -> None:
    if contents.foreign:
        count = len(contents.foreign)
        raise OwnershipError(
            f"{contents.root}: refusing to {action}: {contents.foreign[0]!r} is not featvis's "
            f"(not in its manifest{'' if count == 1 else f'; {count - 1} more'}); "
            f"{_FORCE_HINT}")


def path_inside(path: str | os.PathLike, folder: str | os.PathLike) -> str | None:
    """``path`` relative to ``folder`` (both resolved) if it lies inside it, else None."""
    try:
        return Path(os.path.realpath(path)).relative_to(os.path.realpath(folder)).as_posix()
    except ValueError:
        return None


@dataclass
class Replacement:
    """A checked plan to replace the folder ``contents.root``: the own files to carry over
    (``carry``) and, with ``force``, the foreign entries to keep."""

    contents: FolderContents
    force: bool
    carry: list[str] = field(default_factory=list)


def recover(folder: str | os.PathLike) -> None:
    """Clean up after featvis runs on ``folder`` that were killed (put a folder moved aside
    back, remove their temporaries); :class:`~featvis.io.fileio.BusyError` if one is running."""
    clear_stale(folder, _recover_aside)


def plan_replacement(out: str | os.PathLike, *, force: bool = False,
                     reading: Iterable[str | os.PathLike] = (),
                     rewriting: Iterable[str] = ()) -> Replacement:
    """Check that ``out`` may be replaced; :class:`OwnershipError` naming the problem if not.

    ``reading`` lists the files the run reads (the model): one inside ``out`` is refused
    unless it is featvis's own there (the demo's model), and then carried over unchanged.
    A model featvis saved in ``out`` that the run neither reads nor writes again
    (``rewriting``) would be lost: refused unless ``force``.
    """
    out = Path(os.path.abspath(out))       # '.', 'a/..': the folder they name
    if path_inside(Path.cwd(), out) is not None:
        raise OwnershipError(f"{out}: is the current folder or holds it; give --out a folder "
                             "of its own")
    recover(out)
    contents = inspect_folder(out)
    if not force:
        _refuse_foreign(contents, "replace it")
    plan = Replacement(contents, force)
    for path in reading:
        rel = path_inside(Path(path), Path(out)) if contents.exists else None
        if rel is None:
            continue
        if rel not in contents.own:
            raise OwnershipError(f"{path}: the file being read lies inside the output folder "
                                 f"{out} and featvis did not write it there; choose another "
                                 "--out")
        plan.carry.append(rel)
    models = [rel for rel in contents.own if rel.endswith(".safetensors")
              and rel not in plan.carry and rel not in set(rewriting)]
    if models and not force:
        raise OwnershipError(f"{out}: refusing to replace it: it holds the model featvis saved "
                             f"there ({models[0]}), which this run would delete; visualize "
                             f"that model, choose another --out, or --force")
    return plan


class RunBuilder:
    """A new run folder being written in a private temporary folder: every file goes
    through :meth:`write`, which records it for the manifest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.records: dict[str, dict] = {}
        self._own_files: dict[str, tuple[int, ...]] = {}     # what each own file is

    def _own(self, rel: str, path: Path) -> None:
        self._own_files[rel] = file_identity(path)

    def write(self, rel: str, data: bytes) -> str:
        """Write ``data`` at the relative path ``rel``; returns ``rel``."""
        path = self.root / check_segments(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if self._own_files.get(rel) == file_identity(path):
                path.unlink()                 # the very file this builder put there
        write_new(path, data)                 # anything else in the way: FileExistsError
        self.records[rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self._own(rel, path)
        return rel

    def link(self, source: Path, rel: str, record: dict | None = None) -> None:
        """Carry the file ``source`` over unchanged at ``rel`` (a hard link where possible);
        with ``record`` it is featvis's own and listed in the manifest."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir() and not source.is_symlink():
            path.mkdir()
            return
        try:        # the same inode: what tells the old folder's copy may go (_discard_aside)
            os.link(source, path, follow_symlinks=False)
        except OSError:
            if source.is_symlink():
                os.symlink(os.readlink(source), path)
            else:
                shutil.copy2(source, path)
        if record is not None:
            self.records[rel] = dict(record)
            self._own(rel, path)



def _manifest_bytes(records: Mapping[str, dict]) -> bytes:
    files = {rel: {k: v for k, v in record.items() if v is not None}
             for rel, record in sorted(records.items())}
    return json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1).encode()


def _kept_name(root: Path, rel: str) -> str:
    """A free name ``rel.kept`` (``rel.kept2``, ...) in ``root`` for a foreign entry."""
    candidate, n = f"{rel}.kept", 1
    while os.path.lexists(root / candidate):
        n += 1
        candidate = f"{rel}.kept{n}"
    return candidate


def _free_path(root: Path, rel: str) -> str:
    """Where a foreign entry ``rel`` can be carried into the new folder ``root``: ``rel``
    itself, unless featvis writes that path (or a file where ``rel`` needs a folder, or the
    manifest); then the first such component gets a free ``.kept`` name."""
    parts = rel.split("/")
    for n in range(1, len(parts) + 1):
        prefix = "/".join(parts[:n])
        path = root / prefix
        taken = prefix == MANIFEST or (os.path.lexists(path) and (
            n == len(parts) or not path.is_dir() or path.is_symlink()))
        if taken:
            return "/".join([_kept_name(root, prefix), *parts[n:]])
    return rel


def _note_kept(folder: Path, kept: list[str]) -> None:
    if kept:
        print(f"featvis: kept {len(kept)} file(s) featvis did not write in {folder}: "
              f"{', '.join(kept)}", file=sys.stderr)


def _files(root: Path) -> Iterator[os.DirEntry]:
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            yield from _files(Path(entry.path))
        else:
            yield entry


def _discard_aside(aside: Path, target: Path, own: Mapping[str, dict] | None = None) -> None:
    """Delete a replaced folder moved aside, file by file: only featvis's own files (regular
    files listed in ``own`` with their recorded size: a symlink or a changed file put in
    one's place since is not one) and files that also live in ``target`` (hard-linked there
    when carried over). Anything else stays, with a note, so a failure half-way can never
    lose a foreign file."""
    if own is None:
        own = inspect_folder(aside).own
    in_target = {(e.stat(follow_symlinks=False).st_dev, e.stat(follow_symlinks=False).st_ino)
                 for e in _files(target)} if target.is_dir() else set()
    for entry in list(_files(aside)):
        rel = Path(entry.path).relative_to(aside).as_posix()
        stat = entry.stat(follow_symlinks=False)
        listed = entry.is_file(follow_symlinks=False) and (
            rel == MANIFEST or rel in own and own[rel].get("size") == stat.st_size)
        if listed or (stat.st_dev, stat.st_ino) in in_target or stale_temporary(entry.name):
            os.unlink(entry.path)             # the entry itself: a symlink is never followed
    for folder, _, _ in sorted(os.walk(aside), key=lambda t: -len(t[0])):
        with contextlib.suppress(OSError):
            os.rmdir(folder)
    if os.path.lexists(aside):            # never delete what was not carried over
        kept = target.parent / _kept_name(target.parent, target.name)
        os.replace(aside, kept)
        print(f"featvis: kept {kept}: it holds files of the replaced folder that are not in "
              f"{target}", file=sys.stderr)


def _recover_aside(aside: Path, target: Path) -> None:
    """A stale folder moved aside by a run that died: put it back if the new folder never
    took its place, else discard what is featvis's or was carried over."""
    if not os.path.lexists(target):
        os.replace(aside, target)
    else:
        _discard_aside(aside, target)


@contextlib.contextmanager
def build_run(plan: Replacement) -> Iterator[RunBuilder]:
    """Yield a :class:`RunBuilder` over a temporary folder beside the target; when the body
    succeeds, carry over what ``plan`` keeps, write the manifest and move the folder into
    place. On any error the target is left exactly as it was."""
    out = plan.contents.root
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = claim(out, "tmp", stale_aside=_recover_aside)
    os.mkdir(tmp, 0o777)
    builder = RunBuilder(tmp)
    try:
        yield builder
        _publish(builder, plan)
    except BaseException:
        remove_temporary(tmp)     # the private folder (foreign files in it are hard links)
        raise


def _publish(builder: RunBuilder, plan: Replacement) -> None:
    out = plan.contents.root
    current = inspect_folder(out)         # again: the folder may have changed meanwhile
    if current.exists and not plan.force:
        _refuse_foreign(current, "replace it")
    for rel in plan.carry:
        if rel in current.own and rel not in builder.records:
            builder.link(out / rel, rel, current.own[rel])
    kept = []
    for rel in current.foreign:
        name = _free_path(builder.root, rel)
        builder.link(out / rel, name)
        kept.append(repr(rel) if name == rel else f"{rel!r} (as {name!r})")
    write_new(builder.root / MANIFEST, _manifest_bytes(builder.records))
    if not current.exists:
        os.replace(builder.root, out)
    else:
        aside = claim(out, "old", stale_aside=_recover_aside)
        os.replace(out, aside)
        try:
            os.replace(builder.root, out)
        except BaseException:
            os.replace(aside, out)
            raise
        _discard_aside(aside, out, current.own)
    _note_kept(out, kept)


def check_run_targets(run_dir: str | os.PathLike, rels: Iterable[str], *,
                      force: bool = False) -> tuple[FolderContents, list[str]]:
    """Check that ``rels`` may be written into the run folder ``run_dir``: each target must
    be absent or featvis's own, and no folder on its way a symlink or a file; otherwise
    :class:`OwnershipError` unless ``force``. Returns the folder's contents and the foreign
    entries in the way (which ``force`` renames ``NAME.kept``)."""
    run_dir = Path(run_dir)
    recover(run_dir)
    contents = inspect_folder(run_dir)
    if contents.legacy:
        raise OwnershipError(f"{run_dir}: written by an older featvis (featvis.run/1); run "
                             "'featvis visualize' again to rebuild it")
    if not contents.is_run:
        raise OwnershipError(f"{run_dir}: not a featvis run folder (no valid {MANIFEST}); "
                             "write one with 'featvis visualize'")
    in_the_way = []
    for rel in rels:
        parts = check_segments(rel).split("/")
        for n in range(1, len(parts) + 1):
            prefix = "/".join(parts[:n])
            path = run_dir / prefix
            if not os.path.lexists(path):
                break
            is_folder = path.is_dir() and not path.is_symlink()
            if (n < len(parts) and not is_folder) or (n == len(parts) and
                                                      prefix not in contents.own):
                in_the_way.append(prefix)
                break
    in_the_way = sorted(set(in_the_way))
    if in_the_way and not force:
        raise OwnershipError(f"{run_dir}: refusing to write {in_the_way[0]!r}: it is not "
                             f"featvis's (not in its manifest, or a symlink); {_FORCE_HINT}")
    return contents, in_the_way


def write_into_run(run_dir: str | os.PathLike, files: Mapping[str, bytes], *,
                   force: bool = False) -> list[str]:
    """Write ``files`` (relative path -> bytes) into the existing run folder ``run_dir`` and
    record them in its manifest, after :func:`check_run_targets` (nothing is written if it
    fails); returns the foreign entries that ``force`` renamed ``NAME.kept``."""
    run_dir = Path(run_dir)
    contents, in_the_way = check_run_targets(run_dir, files, force=force)
    for rel in contents.stale:            # dead featvis temporaries, found without following links
        remove_temporary(run_dir / rel)
    kept = []
    for rel in in_the_way:
        name = _kept_name(run_dir, rel)
        os.replace(run_dir / rel, run_dir / name)
        kept.append(f"{rel!r} (as {name!r})")
    old = {rel: {"size": r["size"], "sha256": r["sha256"]} for rel, r in contents.own.items()}
    final = old | {rel: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                   for rel, data in files.items()}
    # First a manifest that accepts each file's old or new version, so that a run killed
    # half-way leaves only files featvis still knows as its own; the final one after.
    pending = {rel: dict(record, previous=old.get(rel)) for rel, record in final.items()}
    atomic_write_bytes(run_dir / MANIFEST, _manifest_bytes(pending))
    for rel, data in files.items():
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / rel, data, durable=False)
    atomic_write_bytes(run_dir / MANIFEST, _manifest_bytes(final))
    _note_kept(run_dir, kept)
    return kept
