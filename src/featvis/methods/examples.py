"""Method 1: dataset examples, the top-k inputs that activate each unit most.

Streams over the data keeping a running top-k per unit, so memory is O(units x k + batch),
never O(N x units). Several layers are mined in the same pass over the data. Inputs are
ranked by the probe's score: a DBN's pre-activation (same order as the activation, without
the ties a saturated float32 sigmoid would make), a module's output, and for a channel its
maximum over positions (the first maximum in row-major order, whose position is returned:
row and column on a channel's map, the token of a feature over a sequence).
Ties go to the lower dataset index, exactly. The running top-k is a :class:`~.topk.TopK`
updated batch by batch, the same mergeable state that sharded mining combines, so a single
pass and any split of the data into shards give bit-identical results.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Iterator, Mapping, Protocol, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import stream
from ..data.stream import Data, Loading, count, input_shape, take
from ..data.tensors import check_inputs, iter_batches
from ..params import POSITIVE, Interval, Param, validated
from ..figures import class_purity
from ..errors import DataError
from ..io.safejson import json_float
from ..seam import Key, Probe, Scores, directed, probe
from ..units import Units, resolve_units
from .registry import SANITY, Method, Page
from .running_statistics import (RunningStatistics, StatisticsPlan, class_labels,
                                 histogram_edges, plan_record)
from .topk import TopExamples, TopK

__all__ = ["TopExamples", "top_examples", "mine"]


class _Mining:
    """One layer's running :class:`TopK`, with ``keep_rows`` the selected inputs themselves
    (for data that is only streamed once and cannot be indexed afterwards), and with
    ``statistics`` (histogram ``edges``, ``classes``) the layer's
    :class:`~featvis.methods.running_statistics.RunningStatistics`, whose top it is."""

    def __init__(self, units: torch.Tensor, k: int, unit_shape: tuple[int, ...],
                 input_shape: tuple[int, ...], keep_rows: bool, dtype: torch.dtype,
                 statistics: StatisticsPlan | None = None, edges: torch.Tensor | None = None,
                 classes: int = 0) -> None:
        self.units, self.input_shape, self.unit_shape = units, input_shape, unit_shape
        self.statistics = None if statistics is None else RunningStatistics(
            edges, k, statistics.bands, statistics.per_band, statistics.threshold,
            statistics.seed, classes, len(unit_shape), dtype=dtype)
        self.best = TopK(units.numel(), k, len(unit_shape), device=units.device, dtype=dtype) \
            if statistics is None else self.statistics.top
        self.candidates: torch.Tensor | None = None
        self.rows = torch.empty(units.numel(), 0, math.prod(input_shape), device=units.device,
                                dtype=dtype) if keep_rows else None

    @property
    def state(self) -> TopK | RunningStatistics:
        """What the pass keeps of the layer: its statistics where gathered, else its top-k."""
        return self.best if self.statistics is None else self.statistics

    @state.setter
    def state(self, state: TopK | RunningStatistics) -> None:
        if self.statistics is None:
            self.best = state
        else:
            self.statistics, self.best = state, state.top

    def shortlist(self, values: torch.Tensor) -> torch.Tensor:
        """The rows of a batch that can enter the running top-k (and bottom-k), whose
        positions mining needs (remembered for :meth:`update` of the same batch)."""
        if self.statistics is not None:
            return self.statistics.shortlist(values)
        self.candidates = self.best.candidates(values)
        return self.candidates

    def update(self, scores: Scores, batch: torch.Tensor, start: int,
               labels: torch.Tensor | None = None) -> None:
        """Add the scores of inputs ``start ..``: their values ``(B, U)`` and, for the
        entries kept, their positions (``labels``: the batch's, for the statistics)."""
        values = scores.values
        indices = torch.arange(start, start + values.shape[0], device=values.device)

        def locate(rows: torch.Tensor) -> torch.Tensor:     # flat -> (U, m, P), row-major
            return torch.stack(torch.unravel_index(scores.locate(rows), self.unit_shape), -1)

        if self.statistics is not None:
            self.statistics.update(values, indices, labels=labels,
                                   locate=locate if scores.located else None)
            return
        candidates, self.candidates = self.candidates, None
        source, m = self.best._update(values, indices, None, locate if scores.located else None,
                                      candidates)
        if self.rows is None:
            return
        fresh = batch.flatten(1)[(source - m).clamp(min=0)]         # (U, n, D)
        if m:
            old = self.rows.gather(1, source.clamp(max=m - 1).unsqueeze(2)
                                   .expand(-1, -1, self.rows.shape[2]))
            fresh = torch.where((source < m).unsqueeze(2), old, fresh)
        self.rows = fresh

    def result(self, images: Data | None, activation) -> TopExamples:
        if self.rows is None:
            return self.best.result(images, units=self.units, activation=activation)
        mean = self.rows.mean(1).view(-1, *self.input_shape)
        return self.best._examples(mean, self.units, activation)


class Checkpoint(Protocol):
    """Where a long mining pass keeps its state, to continue after a kill
    (:class:`featvis.pipeline.resume.MiningCheckpoint`)."""

    def restore(self, seam: Probe, images: Data, settings: dict,
                states: dict[Key, TopK | RunningStatistics]) -> int | None:
        """The input to continue at, the ``states`` filled from a saved state of the same
        model, data and ``settings``; ``None`` to begin afresh."""

    def save(self, states: dict[Key, TopK | RunningStatistics], next_input: int,
             last: bool) -> None:
        """Called after each batch (``last``: the pass is done); saves when it is time."""


def _first_batch(batches: Iterable[torch.Tensor]
                 ) -> tuple[torch.Tensor | None, Iterable[torch.Tensor]]:
    """The first batch (to learn one input's shape) and an iterable of all the batches."""
    batches = iter(batches)
    first = next(batches, None)
    return first, itertools.chain([] if first is None else [first], batches)


def _numbered(batches: Iterable[torch.Tensor], share: tuple[int, int]
              ) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, batch)`` of the share's batches of an iterable (every batch is read)."""
    index, count = share
    start = 0
    for b, batch in enumerate(batches):
        if b % count == index:
            yield start, batch
        start += batch.shape[0]


def top_examples(model: nn.Module | Probe, images: Data | Iterable[torch.Tensor],
                 layer: Key | Sequence[Key], k: int = 9,
                 units: Units | Mapping[Key, Units] = None,
                 batch_size: int = 1000, progress: bool = False, *,
                 directions: torch.Tensor | Mapping[Key, torch.Tensor] | None = None,
                 loading: Loading | None = None, precision: str = "float32"
                 ) -> TopExamples | dict[Key, TopExamples]:
    """The ``k`` inputs with the highest activation of each unit.

    ``images`` is a tensor ``(N, *input_shape)``, a map-style ``Dataset`` (e.g.
    :class:`~featvis.data.ImageFolder`; read through a ``DataLoader`` as ``loading`` says,
    and afterwards only the top examples again, for their mean) or an iterable of batches
    read once (e.g. a ``DataLoader``: the top examples themselves are kept as they go by);
    the data is mined in batches of ``batch_size``. ``layer`` is a layer
    key (a DBN's depth, a module's dotted name) or a list of them, mined in one pass over
    the data; the result is then a dict by layer, and ``units`` may map each layer to its
    own units (a single ``units`` applies to every layer). ``directions (V, U)`` (a mapping
    by layer for several) ranks inputs by their projection on each of ``V`` directions in
    the layer's unit space instead (maximum over positions); ``units`` then picks
    directions. ``precision="bfloat16"`` runs the forward under autocast (faster where
    the device computes in bfloat16; the scores ranked as bfloat16 rounds them).

    Example:
        >>> ex = top_examples(cnn, images, "features.0", k=9)   # doctest: +SKIP
        >>> ex.indices.shape, ex.positions.shape                # (C, 9), (C, 9, 2)
        >>> top_examples(vit, images, "blocks.1.mlp.fc1").positions.shape  # doctest: +SKIP
        (U, 9, 1)                                  # the token of each maximum
    """
    single = not isinstance(layer, Iterable) or isinstance(layer, str)
    seam, best = mine(model, images, [layer] if single else layer, k, units, batch_size,
                      progress, directions=directions, loading=loading, precision=precision)
    results = {key: running.result(images if _indexed(images) else None,
                                   lambda v, key=key: seam.activation(key, v))
               for key, running in best.items()}
    return next(iter(results.values())) if single else results


@validated(k=POSITIVE, batch_size=POSITIVE)
def mine(model: nn.Module | Probe, images: Data | Iterable[torch.Tensor],
         layers: Sequence[Key], k: int = 9, units: Units | Mapping[Key, Units] = None,
         batch_size: int = 1000, progress: bool = False, *, share: tuple[int, int] = (0, 1),
         directions: torch.Tensor | Mapping[Key, torch.Tensor] | None = None,
         loading: Loading | None = None, checkpoint: Checkpoint | None = None,
         statistics: StatisticsPlan | None = None, labels: torch.Tensor | None = None,
         precision: str = "float32") -> tuple[Probe, dict[Key, _Mining]]:
    """The probe and each layer's running top-k after one pass over ``images`` (see
    :func:`top_examples`), or over the share ``(i, n)`` of its batches: batch ``b`` is
    mined when ``b % n == i``, with its global example indices, so that the states of the
    ``n`` shares merge into the single pass's (:mod:`featvis.pipeline.distributed`). With a
    ``checkpoint`` the pass continues where a saved state of the same model, data and
    settings left off, and saves its state as it goes (data read by index only). With
    ``statistics`` every unit's statistics are gathered in the same pass (data read by
    index only; the histograms' range from the data's head first), with ``labels (N,)``
    (or a dataset's ``labels``) per class. ``precision="bfloat16"`` runs the model's forward
    under autocast (:data:`PRECISIONS`); the scores are then ranked as bfloat16 rounds them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                         f"{precision!r}")
    keys = list(layers)
    if not keys:
        raise ValueError("layer: no layers given")
    whole = share[1] == 1
    indexed = _indexed(images)
    if indexed and count(images) < k:
        raise ValueError(f"k={k} is larger than the number of inputs ({count(images)})")
    if not (indexed or isinstance(images, Iterable)):
        check_inputs(images)                  # e.g. None: refused, naming its type
    seam: Probe = probe(model, input_shape(images) if indexed else None)
    if not indexed:
        batches: Iterable[torch.Tensor] = iter_batches(images, batch_size)
        if seam.input_shape is None:  # a module fed batches: one input's shape from the first
            first, batches = _first_batch(batches)
            if first is None:
                raise ValueError(f"k={k} is larger than the number of inputs (0)")
            seam = probe(model, check_inputs(first).shape[1:])
    if directions is not None:
        if not isinstance(directions, Mapping) and len(keys) > 1:
            raise ValueError("directions: give a mapping {layer: (V, U) tensor} when mining "
                             "several layers")
        seam = directed(seam, directions if isinstance(directions, Mapping)
                        else {keys[0]: directions})
    infos = {key: seam.layer(key) for key in keys}          # every layer checked first
    wanted = units if isinstance(units, Mapping) else dict.fromkeys(infos, units)
    extra = [key for key in wanted if key not in infos]
    if extra:
        raise ValueError(f"units: layer {extra[0]!r} is not among the layers asked for")
    device, dtype = seam.device, seam.dtype
    ids = {key: resolve_units(wanted.get(key), info.units, device) for key, info in infos.items()}
    chosen = {key: None if wanted.get(key) is None else ids[key] for key in infos}
    ranges, classes = {}, 0
    if statistics is not None:
        if not indexed:
            raise ValueError("statistics: gathered over data read by index (a tensor or a "
                             "dataset), not batches read once")
        labels, classes = class_labels(images, labels)
        with _autocast(device, precision):
            ranges = _ranges(seam, stream.head(images), chosen, statistics.bins, batch_size)
    best = {key: _Mining(ids[key], k, info.unit_shape, seam.input_shape, not indexed, dtype,
                         statistics, ranges.get(key), classes)
            for key, info in infos.items()}
    begin = None
    if checkpoint is not None:
        if not indexed:
            raise ValueError("checkpoint: only data read by index (a tensor or a dataset) "
                             "can be resumed, not batches read once")
        settings = {"k": k, "batch_size": batch_size, "share": list(share), "layers": keys,
                    "units": [None if wanted.get(key) is None else m.units.tolist()
                              for key, m in best.items()],
                    "statistics": None if statistics is None else
                    plan_record(statistics, labels, classes),
                    "precision": None if precision == "float32" else precision}
        restored = {key: m.state for key, m in best.items()}
        begin = checkpoint.restore(seam, images, settings, restored)
        for key, m in best.items():
            m.state = restored[key]
    numbered = stream.batches(images, batch_size, share=share, loading=loading,
                              device=device, begin=begin) if indexed else \
        _numbered(batches, share)
    seen = 0 if begin is None else begin
    following = share[0] * batch_size if begin is None else begin   # the next batch's start
    with torch.no_grad(), tqdm(desc="examples", unit="input", unit_scale=True,
                               total=count(images) if indexed and whole else None,
                               initial=seen if whole else 0,
                               disable=not progress, leave=False) as bar:
        for start, batch in numbered:
            batch = check_inputs(batch, seam.input_shape).to(device, dtype, non_blocking=True)
            with _autocast(device, precision):
                scores = seam.scores(batch, chosen,
                                     shortlists={key: m.shortlist for key, m in best.items()})
            rows = None if classes == 0 else labels[start:start + batch.shape[0]]
            for key, running in best.items():
                running.update(scores[key], batch, start, rows)
            seen, following = start + batch.shape[0], start + share[1] * batch_size
            bar.update(batch.shape[0])
            if checkpoint is not None:
                checkpoint.save({key: m.state for key, m in best.items()}, following,
                                last=False)
        if checkpoint is not None:
            checkpoint.save({key: m.state for key, m in best.items()}, following, last=True)
    if whole and seen < k:
        raise ValueError(f"k={k} is larger than the number of inputs ({seen})")
    return seam, best


PRECISIONS = ("float32", "bfloat16")     # of the mining pass's forward (bfloat16: autocast)


def _autocast(device: torch.device, precision: str):
    """The forward's autocast context: bfloat16 where asked, else none (float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=precision == "bfloat16")


def _ranges(seam: Probe, head: torch.Tensor, chosen: Mapping[Key, torch.Tensor | None],
            bins: int, batch_size: int) -> dict[Key, torch.Tensor]:
    """Each layer's histogram edges ``(U, bins + 1)`` over its units' range on ``head``
    (one pass, no positions located)."""
    nowhere = {key: (lambda v: v.new_empty(v.shape[1], 0, dtype=torch.long)) for key in chosen}
    lows: dict[Key, list] = {key: [] for key in chosen}
    highs: dict[Key, list] = {key: [] for key in chosen}
    with torch.no_grad():
        for start in range(0, len(head), batch_size):
            batch = check_inputs(head[start:start + batch_size], seam.input_shape)
            found = seam.scores(batch.to(seam.device, seam.dtype), chosen, shortlists=nowhere)
            for key, scores in found.items():
                lows[key].append(scores.values.amin(0))
                highs[key].append(scores.values.amax(0))
                if not (lows[key][-1].isfinite().all() and highs[key][-1].isfinite().all()):
                    raise DataError(f"layer {key}: a score is infinite (or NaN) on the data's "
                                    "head; its histogram has no range (use float32)")
    return {key: histogram_edges(torch.stack(lows[key]).amin(0),
                                 torch.stack(highs[key]).amax(0), bins) for key in chosen}


def _indexed(images: object) -> bool:
    """Whether the inputs can be read again by index (a tensor or a dataset)."""
    return isinstance(images, torch.Tensor) or stream.is_dataset(images)


# -- as a method of visualize ----------------------------------------------------------------
K = Param(Interval(int, 1, 1000), 9, "dataset examples per unit")


def _compute(probe: Probe, key: Key, units: Sequence[int], *, examples: TopExamples,
             k: int) -> TopExamples:
    """The layer's top examples, mined for every layer in the pipeline's one pass over the
    data (and handed over as ``examples``)."""
    return examples


def _rerun(probe: Probe, key: Key, units: torch.Tensor, *, inputs: torch.Tensor, k: int = 9
           ) -> torch.Tensor:
    return top_examples(probe, inputs[:SANITY["images"]], key, k=k, units=units).indices


def _write(page: Page, ex: TopExamples) -> None:
    k = page.params["k"]
    mean = page.show(ex.mean)
    purity = None if page.labels is None else class_purity(ex.indices, page.labels)
    boxes = None if ex.positions is None else page.probe.regions(page.key, ex.positions)
    strips = take(page.images, ex.indices)          # a dataset's examples read once
    page.section(page.tile(mean, scale="minmax"),
                 "the mean of each unit's top examples, one tile per unit")
    for j in range(len(page.units)):
        info = page.detail(j)
        info["examples"] = {"values": [round(v, 6) for v in ex.values[j].tolist()],
                            "indices": ex.indices[j].tolist()}
        if ex.positions is not None:
            info["examples"]["positions"] = ex.positions[j].tolist()
        facts = [("best example's score", info["examples"]["values"][0])]
        if purity is not None:
            info["examples"]["purity"] = {"share": json_float(purity.share[j].item()),
                                          "top_class": int(purity.top_class[j])}
            facts += [("most common class among them", int(purity.top_class[j])),
                      ("its share", info["examples"]["purity"]["share"])]
        values = ", ".join(f"{v:.3f}" for v in ex.values[j].tolist())
        page.panel(j, [
            ("examples_strip", page.tile(strips[j], scale="minmax", cols=k,
                                         boxes=None if boxes is None else boxes[j]),
             f"activations: {values}" + ("" if boxes is None else
                                         "; boxed: the patch of the winning token"), "strip"),
            ("examples_mean", page.tile(mean[j:j + 1], scale="minmax"), "their mean",
             "single")], facts)
    page.figure("mean top-1 example activation", ex.values[:, 0].mean().item(),
                "the score of each unit's best input, averaged: the scale the other "
                "methods' activations compare with")
    if purity is not None:
        page.figure("mean class purity (share of the top class)", purity.share.mean().item(),
                    "how many of a unit's top examples share one class: 1 for units that "
                    "select a class, 1/classes for units that do not")
        page.figure("mean label entropy (bits)", purity.entropy_bits.mean().item(),
                    "the spread of the top examples' classes: 0 for one class, "
                    "log2(classes) for all alike")
    page.keep(mean)


EXAMPLES = Method(
    "examples", "Dataset examples",
    "The inputs of the data set that activate the unit most, and their mean (Erhan, Bengio, "
    "Courville & Vincent 2009).",
    _compute, requires={"examples"}, params={"k": K}, write=_write, rerun=_rerun,
    overlap=True, made_of_data=True)
