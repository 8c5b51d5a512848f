"""Exceptions that carry a one-line, user-facing message (the CLI prints it and exits 2),
and the argument check every public function shares."""

from numbers import Integral


class FeatvisError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class DataError(FeatvisError, ValueError):
    """A data file or tensor that cannot be used (corrupt IDX, wrong shape, NaN, range)."""


class CheckpointError(FeatvisError, ValueError):
    """A checkpoint file that is truncated, foreign or inconsistent."""


class TrainingDivergedError(FeatvisError, FloatingPointError):
    """Training produced NaN or infinite values (learning rate too high)."""


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum``, else a
    ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)
