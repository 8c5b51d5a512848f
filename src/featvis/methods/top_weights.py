"""The ``top`` parameter of the methods that follow a unit's strongest weights (ranked
filters, linear combinations): its declaration, its check against the layer below, and its
deprecated spelling ``k``."""

from __future__ import annotations

import warnings

from ..params import Interval, Param, check_int
from ..seam import Key

__all__ = ["TOP", "check_top", "renamed_top"]

TOP = Param(Interval(int, 1, 1000), 10, "ranked filters / linear-combination terms per unit")
UNSET = object()      # ``k`` not given


def renamed_top(top: int | None, k: object, default: int | None) -> int | None:
    """``top``, or the deprecated spelling ``k`` (with a warning) when given."""
    if k is UNSET:
        return top
    warnings.warn("the argument k is now called top (k will be removed in the next release)",
                  FutureWarning, stacklevel=3)
    if top != default:
        raise TypeError("give top only (k is its deprecated spelling)")
    return k


def check_top(top: int, n_below: int, below: Key) -> int:
    """``top`` in ``1..n_below``: an impossible top is an error, never a silent clamp."""
    check_int("top", top)
    if top > n_below:
        raise ValueError(f"top={top} is larger than layer {below}'s {n_below} units")
    return top
