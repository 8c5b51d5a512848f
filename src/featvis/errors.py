"""Exceptions that carry a one-line, user-facing message (the CLI prints it and exits 2),
and the argument checks the public functions share."""

import contextlib
from numbers import Integral
from typing import Iterator


class FeatvisError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class DataError(FeatvisError, ValueError):
    """A data file or tensor that cannot be used (corrupt IDX, wrong shape, NaN, range)."""


class CheckpointError(FeatvisError, ValueError):
    """A checkpoint file that is truncated, foreign or inconsistent."""


class TrainingDivergedError(FeatvisError, FloatingPointError):
    """Training produced NaN or infinite values (learning rate too high)."""


class UserCodeError(FeatvisError):
    """The user's own code (a model factory, forward pass or hook) raised; the message
    quotes the first line of what it raised."""


class Terminated(SystemExit):
    """A termination signal (SIGTERM), unwinding like Ctrl-C: never taken for the user's
    code calling ``sys.exit``."""


@contextlib.contextmanager
def user_code(what: str) -> Iterator[None]:
    """Run the user's code: anything it raises, ``SystemExit`` included, becomes a one-line
    :class:`UserCodeError` "``what`` raised ..." (its ``__cause__`` the original exception;
    none for an exit). Ctrl-C, a :class:`Terminated` and featvis's own errors (from its
    hooks) pass unchanged."""
    try:
        yield
    except (FeatvisError, Terminated):
        raise
    except SystemExit as exc:
        raise UserCodeError(f"{what} called sys.exit({exc.code!r})") from None
    except Exception as exc:  # noqa: BLE001 - any error of the user's code
        raise UserCodeError(f"{what} raised {type(exc).__name__}: {first_line(exc)}") from exc


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer, Python's or numpy's, and not a bool (which ``int()``
    and ``Integral`` would both let through)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): what a
    one-line error quotes of a library's longer one."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
