"""Resumable mining: a long pass over the data saves its state beside the output as it goes,
so that a killed run continues where it stopped and ends in the same bytes as one that was
never interrupted.

The state of the run writing ``OUT`` is ``.OUT.featvis-mining.safetensors`` in ``OUT``'s
folder (``.OUT.featvis-mining-3of8.safetensors`` for share 3 of 8: a shard or a rank), in
format ``featvis.mining/1``: the shard file format (:mod:`featvis.pipeline.shards`) with the
input to continue at. It is written atomically every ``every`` mining batches (and once more
when the pass ends, if it was written before, for the work after mining), kept after a kill
or an error, and removed when the run completes. A state is only continued for the same
model, data (a tensor's whole, a dataset's count and head), layers, units, ``k``, batch size,
share and directions: anything else is refused with the difference named. The top-k
selection is exact, so the continued pass gives the uninterrupted one's states bit for bit
(with the same number of torch threads: a matmul's rounding may depend on it).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..data import stream
from ..data.stream import Data
from ..errors import CheckpointError, FeatvisError, first_line
from ..io.fileio import file_identity
from ..io.fingerprint import fingerprint, model_fingerprint
from ..methods.running_statistics import RunningStatistics, top_of
from ..methods.topk import TopK
from ..seam import Key, Probe
from .shards import load_mining_state, save_shard

__all__ = ["MiningCheckpoint", "STATE_EVERY", "state_path"]

STATE_EVERY = 100        # mining batches between saves: 100,000 inputs at the default batch


def state_path(out: str | os.PathLike, share: tuple[int, int] = (0, 1)) -> Path:
    """Where the run writing ``out`` keeps its mining state (see the module's notes)."""
    out = Path(os.path.abspath(out))
    part = "" if tuple(share) == (0, 1) else f"-{share[0]}of{share[1]}"
    return out.parent / f".{out.name}.featvis-mining{part}.safetensors"


class MiningCheckpoint:
    """The mining state of the run writing ``out`` (share ``(i, N)`` of the data): saved
    every ``every`` batches (0: never), continued with ``resume``; without it an existing
    state is refused unless ``force``, which starts afresh. Checked when made, before any
    work: :class:`FeatvisError` naming the option that decides.

    Example:
        >>> ckpt = MiningCheckpoint("run", every=50, resume=True)      # doctest: +SKIP
        >>> visualize(cnn, ImageFolder("imagenet/val"), "run", checkpoint=ckpt)
    """

    def __init__(self, out: str | os.PathLike, share: tuple[int, int] = (0, 1), *,
                 every: int = STATE_EVERY, resume: bool = False, force: bool = False) -> None:
        self.path, self.share = state_path(out, share), tuple(share)
        self.every, self.resume = every, resume
        self.batches = 0
        self._ours: tuple[int, ...] | None = None   # the state file this run wrote or read
        self._run: tuple | None = None         # what restore() was given
        self._info: dict | None = None
        here = os.path.lexists(self.path)
        if resume and not (here and self.path.is_file()) or resume and self.path.is_symlink():
            raise FeatvisError(f"--resume: no mining state at {self.path} to continue (or a "
                               "symlink, which featvis does not follow)")
        if here and not resume:
            if not force:
                raise FeatvisError(f"{self.path}: the mining state of an interrupted run; "
                                   "--resume continues it, --force starts afresh")
            self._ours = self._check_ours()
            self.remove()                    # featvis's own, and given up: afresh

    def _check_ours(self) -> tuple[int, ...]:
        """The identity of the featvis mining state at the state's path; any other file
        there (a symlink, a user's file, one swapped in while it was read) is refused."""
        try:
            before = file_identity(self.path)
            if self.path.is_symlink():
                raise CheckpointError(f"{self.path}: is a symlink")
            load_mining_state(self.path)
            if file_identity(self.path) != before:
                raise CheckpointError(f"{self.path}: changed while featvis read it")
        except CheckpointError as exc:
            raise FeatvisError(f"{first_line(exc)}; not a featvis mining state, so featvis "
                               "does not replace it (move it away)") from None
        return before

    def restore(self, seam: Probe, images: Data, settings: dict,
                states: dict[Key, TopK | RunningStatistics]) -> int | None:
        """The input to continue at, ``states`` filled from the saved state (``None``
        without ``resume``); a state of other model, data or settings is refused."""
        if tuple(settings["share"]) != self.share:
            raise ValueError(f"checkpoint: made for share {self.share}, mining "
                             f"{tuple(settings['share'])}")
        self._run, self._info = (seam, images, settings), None
        if not self.resume:
            return None
        self._ours = self._check_ours()
        saved, info = load_mining_state(self.path)
        for name, what in (("shard", "share"), ("model_sha256", "model"),
                           ("data_sha256", "data"), ("directions_sha256", "directions"),
                           ("inputs", "number of inputs"), ("settings", "settings")):
            if info.get(name) != self.info[name]:
                raise FeatvisError(f"--resume: {self.path} is the mining state of another "
                                   f"{what}; --force starts afresh")
        for key, state in saved.items():
            like = states[key]
            ours, theirs = top_of(state), top_of(like)
            if type(state) is not type(like) or (isinstance(state, RunningStatistics) and
                                                 not torch.equal(state.edges, like.edges.cpu())) \
                    or (ours.units, ours.k, ours.position_axes, ours.dtype) != \
                    (theirs.units, theirs.k, theirs.position_axes, theirs.dtype):
                raise FeatvisError(f"--resume: {self.path}: layer {key!r} holds other units "
                                   "or statistics; --force starts afresh")
            states[key] = _moved(state, like)
        return info["next"]

    @property
    def info(self) -> dict:
        """What a state must share with this run to be continued (the shard format's
        ``info``), its fingerprints computed once, when first needed."""
        if self._info is None:
            seam, images, settings = self._run
            directions = getattr(seam, "directions", None)
            self._info = {
                "shard": list(settings["share"]), "inputs": stream.count(images),
                "model_sha256": model_fingerprint(seam.model),
                "data_sha256": stream.data_fingerprint(images),
                "directions_sha256": None if not directions else fingerprint(
                    {str(key): v for key, v in directions.items()}),
                "settings": {name: settings[name] for name in
                             ("k", "batch_size", "layers", "units", "statistics",
                              "precision")
                             if settings.get(name) is not None}}
        return self._info

    def save(self, states: dict[Key, TopK | RunningStatistics], next_input: int,
             last: bool) -> None:
        """Save after every ``every``-th batch, and when the pass ends if saved before."""
        if not last:
            self.batches += 1
        due = self.every and ((not last and self.batches % self.every == 0) or
                              (last and self._ours is not None))
        if not due:
            return
        if file_identity(self.path) not in (None, self._ours):
            raise FeatvisError(f"{self.path}: a file featvis did not write took the mining "
                               "state's place; featvis does not replace it (move it away)")
        save_shard(self.path, states, self.info, next_input=next_input)
        self._ours = file_identity(self.path)

    def remove(self) -> None:
        """The run completed: its state is no longer needed. Only the very file it wrote,
        continued or gave up goes: a file or symlink put in its place stays."""
        if self._ours is not None and file_identity(self.path) == self._ours:
            self.path.unlink()
        self._ours = None


def _moved(state: TopK | RunningStatistics, like: TopK | RunningStatistics
           ) -> TopK | RunningStatistics:
    """A loaded state on the device (and with the info) of the pass's own ``like``."""
    if isinstance(state, RunningStatistics):
        for name in RunningStatistics.TENSORS:
            setattr(state, name, getattr(state, name).to(like.edges.device))
        state.band_edges = state.band_edges.to(like.edges.device)
        state.top, state.bottom = _moved(state.top, like.top), _moved(state.bottom, like.bottom)
        state.class_top = [_moved(t, u) for t, u in zip(state.class_top, like.class_top)]
        return state
    state.device, state.info = like.device, like.info
    state.values, state.indices, state.positions = (
        t.to(like.device) for t in (state.values, state.indices, state.positions))
    return state
