"""Exceptions that carry a one-line, user-facing message (the CLI prints it and exits 2)."""


class FeatvisError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class DataError(FeatvisError, ValueError):
    """A data file or tensor that cannot be used (corrupt IDX, wrong shape, NaN, range)."""


class CheckpointError(FeatvisError, ValueError):
    """A checkpoint file that is truncated, foreign or inconsistent."""


class TrainingDivergedError(FeatvisError, FloatingPointError):
    """Training produced NaN or infinite values (learning rate too high)."""
