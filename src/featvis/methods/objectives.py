"""Objectives that compose, as lucent's do: what maximization climbs.

An :class:`Objective` maps a batch of pictures (one row per restart) to one value per row,
reading the outputs of the layers it declares (:attr:`Objective.layers`: only those are
hooked, in one forward pass) and the pictures themselves. Objectives add, subtract and scale
by numbers: ``unit("features.3", 7) - 0.5 * unit("features.3", 2) - 0.01 * tv()``. Every
value is climbed, so a penalty's value is the size of what it penalizes (:func:`l2`,
:func:`tv`, :func:`diversity`) and is subtracted.

Example:
    >>> from featvis.objectives import direction, tv, unit          # doctest: +SKIP
    >>> goal = unit("blocks.1.mlp.fc1", 3, spatial=0) - 0.3 * unit("blocks.1.mlp.fc1", 9)
    >>> maximize(vit, objective=goal - 1e-3 * tv(), rho=10.0).images     # (1, 1, 28, 28)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Real
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from ..data.tensors import picture_shape
from ..params import AnyOf, Interval, Options, check_int
from ..seam import SPATIAL, Key, Probe
from ..seam.base import check_position, pick, reduce_map

__all__ = ["Batch", "Objective", "unit", "direction", "l2", "tv", "diversity",
           "total_variation", "similarity_to_other_restarts", "SPATIAL_CHOICES"]

# A unit's reduction over its positions: by name, or one position by its index.
SPATIAL_CHOICES = AnyOf(Options(SPATIAL), Interval(int, None),
                        metavar="{" + ",".join(SPATIAL) + "}|INDEX")


@dataclass
class Batch:
    """What an objective reads: the pictures ``x (B, D)`` (flat, one input's shape
    ``shape``), the units-first outputs ``(B, U, *positions)`` of the layers it declares for
    the pictures as the model sees them (randomly transformed, with transforms), and
    ``restarts``: consecutive rows that are restarts of one goal."""

    x: torch.Tensor
    shape: tuple[int, ...]
    outputs: Mapping[Key, torch.Tensor] = field(default_factory=dict)
    restarts: int = 1
    seen: torch.Tensor | None = None          # the pictures the model sees (default: x)


class Objective:
    """A function of a :class:`Batch` to ``(B,)`` values, to be maximized. ``layers``: the
    layer keys it reads; ``reads_model``: it depends on the model (a penalty does not)."""

    layers: frozenset = frozenset()
    reads_model: bool = False

    def __call__(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def check(self, probe: Probe) -> None:
        """A one-line error if the objective asks of ``probe`` what its layers do not have
        (before any work)."""

    def model_part(self) -> Objective | None:
        """The objective without its penalties (what a unit's activation is): the terms that
        read the model, or ``None``."""
        return self if self.reads_model else None

    def __add__(self, other: Objective) -> Objective:
        return Sum.of((1.0, self), (1.0, _objective(other)))

    def __sub__(self, other: Objective) -> Objective:
        return Sum.of((1.0, self), (-1.0, _objective(other)))

    def __mul__(self, factor: float) -> Objective:
        return Sum.of((_factor(factor), self))

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return Sum.of((-1.0, self))


def _objective(other: object) -> Objective:
    if not isinstance(other, Objective):
        raise TypeError(f"objectives combine with objectives (and scale by numbers), got "
                        f"{type(other).__name__}")
    return other


def _factor(factor: object) -> float:
    if isinstance(factor, bool) or not isinstance(factor, Real) or factor != factor \
            or abs(factor) == float("inf"):
        raise TypeError(f"an objective scales by a finite number, got {factor!r}")
    return float(factor)


@dataclass(frozen=True, eq=False)
class Sum(Objective):
    """``sum(c * term)`` over ``terms`` ``(c, term)``."""

    terms: tuple[tuple[float, Objective], ...]

    @classmethod
    def of(cls, *terms: tuple[float, Objective]) -> Sum:
        flat = []
        for c, term in terms:
            flat += [(c * d, t) for d, t in term.terms] if isinstance(term, Sum) else [(c, term)]
        return cls(tuple(flat))

    @property
    def layers(self) -> frozenset:                          # type: ignore[override]
        return frozenset().union(*(t.layers for _, t in self.terms))

    @property
    def reads_model(self) -> bool:                          # type: ignore[override]
        return any(t.reads_model for _, t in self.terms)

    def __call__(self, batch: Batch) -> torch.Tensor:
        total = None
        for c, term in self.terms:
            value = term(batch)
            scaled = value if abs(c) == 1.0 else abs(c) * value
            if total is None:
                total = scaled if c > 0 else -scaled
            else:                   # total - w * penalty, as the keyword penalties always were
                total = total + scaled if c > 0 else total - scaled
        return total

    def check(self, probe: Probe) -> None:
        for _, term in self.terms:
            term.check(probe)

    def model_part(self) -> Objective | None:
        kept = tuple((c, t) for c, t in self.terms if t.reads_model)
        if len(kept) == len(self.terms):
            return self                   # the same object: maximize reuses its gradient
        return None if not kept else kept[0][1] if kept == ((1.0, kept[0][1]),) else Sum(kept)

    def __repr__(self) -> str:
        text = " ".join(f"{'-' if c < 0 else '+'} {'' if abs(c) == 1 else f'{abs(c):g} * '}"
                        f"{t!r}" for c, t in self.terms)
        return text[2:] if text.startswith("+ ") else text


@dataclass(frozen=True, eq=False)
class _Read(Objective):
    """Unit ``u`` of a layer, or with ``v (1, U)`` the projection on that direction, reduced
    over positions by ``spatial``."""

    key: Key
    u: int
    spatial: str | int = "positive"
    v: torch.Tensor | None = None
    cosine_power: float = 0.0

    @property
    def layers(self) -> frozenset:                          # type: ignore[override]
        return frozenset([self.key])

    reads_model = True

    def __call__(self, batch: Batch) -> torch.Tensor:
        output = batch.outputs[self.key]
        rows = torch.full((len(output),), self.u, device=output.device)
        v = None if self.v is None else self.v.to(output.device, output.dtype)
        picked = pick(output, rows, v, self.cosine_power)
        return reduce_map(picked, self.spatial) if picked.dim() > 1 else picked

    def check(self, probe: Probe) -> None:
        info = probe.layer(self.key)
        check_position(info, self.spatial)
        if self.v is not None and self.v.shape[1] != info.units:
            raise ValueError(f"direction on layer {self.key!r}: v has {self.v.shape[1]} "
                             f"values, the layer {info.units} units")
        if self.v is None and self.u >= info.units:
            raise ValueError(f"unit {self.u} of layer {self.key!r}: the layer has "
                             f"{info.units} {info.unit_name}s (0..{info.units - 1})")

    def __repr__(self) -> str:
        what = f"unit({self.key!r}, {self.u}" if self.v is None else f"direction({self.key!r}"
        return f"{what}, spatial={self.spatial!r})"


def unit(key: Key, u: int, spatial: str | int = "positive") -> Objective:
    """Unit ``u`` of layer ``key``: its value (a unit with positions reduced by ``spatial``:
    the mean of its positive part, ``"mean"``, ``"center"``, or a position's index)."""
    return _Read(key, check_int("u", u, minimum=0), _spatial(spatial))


def direction(key: Key, v: torch.Tensor, spatial: str | int = "positive",
              cosine_power: float = 0.0) -> Objective:
    """The projection of layer ``key``'s output on ``v (U,)`` (a vector over its units),
    reduced over positions by ``spatial``; ``cosine_power`` p > 0: lucent's ``dot x cos^p``
    (see :func:`featvis.seam.base.pick`)."""
    if not (isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() == 1
            and torch.isfinite(v).all()):
        raise ValueError(f"v must be a finite floating vector (U,) over the layer's units, got "
                         f"{f'{v.dtype} {tuple(v.shape)}' if isinstance(v, torch.Tensor) else v!r}")
    if isinstance(cosine_power, bool) or not isinstance(cosine_power, Real) or cosine_power < 0:
        raise ValueError(f"cosine_power must be a number >= 0, got {cosine_power!r}")
    return _Read(key, 0, _spatial(spatial), v.detach()[None], float(cosine_power))


def _spatial(spatial: object) -> str | int:
    return SPATIAL_CHOICES.check("spatial", spatial)


@dataclass(frozen=True, eq=False)
class _Penalty(Objective):
    """A function of the pictures alone."""

    name: str
    value: Callable[[Batch], torch.Tensor]

    def __call__(self, batch: Batch) -> torch.Tensor:
        return self.value(batch)

    def __repr__(self) -> str:
        return f"{self.name}()"


def total_variation(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Per row, the sum of absolute differences between neighbouring pixels of the picture."""
    pictures = x.view(-1, *picture_shape(shape))
    return ((pictures[..., 1:, :] - pictures[..., :-1, :]).abs().flatten(1).sum(1)
            + (pictures[..., :, 1:] - pictures[..., :, :-1]).abs().flatten(1).sum(1))


def similarity_to_other_restarts(x: torch.Tensor, restarts: int) -> torch.Tensor:
    """Per row, the mean cosine with the goal's other restarts (0 for a single restart)."""
    if restarts < 2:
        return x.new_zeros(x.shape[0])
    unit = F.normalize(x, dim=1).view(-1, restarts, x.shape[1])
    gram = unit @ unit.transpose(1, 2)
    return ((gram.sum(2) - gram.diagonal(dim1=1, dim2=2)) / (restarts - 1)).reshape(-1)


def l2() -> Objective:
    """The squared L2 norm of each picture (subtract it: ``- 0.01 * l2()``)."""
    return _Penalty("l2", lambda b: b.x.pow(2).sum(1))


def tv() -> Objective:
    """The total variation of each picture (subtract it to smooth: ``- 0.05 * tv()``)."""
    return _Penalty("tv", lambda b: total_variation(b.x, b.shape))


def diversity() -> Objective:
    """Each picture's mean cosine with the other restarts of its goal (subtract it so the
    restarts differ: ``- 0.5 * diversity()``)."""
    return _Penalty("diversity", lambda b: similarity_to_other_restarts(b.x, b.restarts))
