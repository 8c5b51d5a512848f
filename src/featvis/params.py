"""Declared parameters (scikit-learn's ``_parameter_constraints`` idea): a :class:`Param`
holds a parameter's constraint, default and help once; the API validates values from it
(:meth:`Param.validate`, one message format: "``name`` must be ..., got ``value``"), and a
constraint parses command-line text with the error "expected ..., got ``'text'``"
(:meth:`Constraint.parse`).

Example:
    >>> steps = Param(Interval(int, 1, 100_000), 300, "maximization steps")
    >>> steps.validate("steps", 50)
    50
"""

from __future__ import annotations

import argparse
import functools
import inspect
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Callable, Sequence, TypeVar

__all__ = ["Interval", "Options", "Boolean", "Pair", "Steps", "AnyOf", "UnitPicks", "Param", "Constraint", "validated",
           "check_int", "check_float", "POSITIVE", "COUNT", "SEED", "RATE", "WEIGHT", "SHARE"]


class Constraint:
    """What values a parameter takes: :meth:`check` (API) and :meth:`parse` (CLI text)."""

    metavar: str | None = None
    choices: Sequence[str] | None = None
    none: bool = False                      # None is a value too

    def expected(self) -> str:
        raise NotImplementedError

    def accepts(self, value: object) -> bool:
        raise NotImplementedError

    def convert(self, text: str) -> object:
        raise NotImplementedError

    def check(self, name: str, value: object) -> Any:
        if value is None and self.none:
            return None
        if not self.accepts(value):
            raise ValueError(f"{name} must be {self.expected()}, got {value!r}")
        return self.normalize(value)

    def normalize(self, value: object) -> Any:
        return value

    def parse(self, text: str) -> Any:
        try:
            value = self.convert(text)
        except ValueError:
            value = _INVALID
        if value is _INVALID or not self.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {self.expected()}, got {text!r}")
        return self.normalize(value)


_INVALID = object()


@dataclass(frozen=True)
class Interval(Constraint):
    """Integers (``kind=int``, never a bool) or finite reals (``float``) from ``low`` to
    ``high`` (``None``: unbounded on that side); ``low_open`` / ``high_open``: that bound
    itself is refused."""

    kind: type
    low: float | None
    high: float | None = None
    low_open: bool = False
    none: bool = False
    high_open: bool = False

    @property
    def metavar(self) -> str:                       # type: ignore[override]
        return "N" if self.kind is int else "X"

    def expected(self) -> str:
        low, high = self.low, self.high
        if self.kind is int:
            if low is None:
                return "an integer" if high is None else f"an integer <= {high:,}"
            if high is not None:
                return f"an integer in {low:,}..{high:,}"
            return "a positive integer" if low == 1 else f"an integer >= {low}"
        if high is None:
            if low is None:
                return "a finite number"
            return f"a finite number {'>' if self.low_open else '>='} {low:g}"
        return (f"a number in {'(' if self.low_open else '['}{low:g}, {high:g}"
                f"{')' if self.high_open else ']'}")

    def accepts(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral if self.kind is int
                                                     else Real):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open
                                     else value <= self.high)

    def convert(self, text: str) -> object:
        return int(text) if self.kind is int else float(text)

    def normalize(self, value: object) -> Any:
        return self.kind(value)


@dataclass(frozen=True)
class Options(Constraint):
    """One of ``values`` (strings)."""

    values: tuple[str, ...]
    none: bool = False

    @property
    def choices(self) -> Sequence[str]:             # type: ignore[override]
        return self.values

    def expected(self) -> str:
        return f"one of {', '.join(self.values)}"

    def accepts(self, value: object) -> bool:
        return value in self.values

    def convert(self, text: str) -> object:
        return text


@dataclass(frozen=True)
class Boolean(Constraint):
    """``True`` or ``False`` (never 0, 1 or a string)."""

    none: bool = False

    def expected(self) -> str:
        return "True or False"

    def accepts(self, value: object) -> bool:
        return isinstance(value, bool)

    def convert(self, text: str) -> object:
        return {"true": True, "false": False}.get(text.lower(), text)


@dataclass(frozen=True)
class Pair(Constraint):
    """Two finite numbers ``(lo, hi)`` with ``lo < hi``, or one of ``words`` (text)."""

    words: tuple[str, ...] = ()
    none_word: str | None = None            # the word the CLI reads as None
    none: bool = False

    @property
    def metavar(self) -> str:                       # type: ignore[override]
        return "|".join(["LO,HI", *self.words, *([self.none_word] if self.none_word else [])])

    def expected(self) -> str:
        words = [repr(w) for w in self.words] + (["None"] if self.none else [])
        return "(lo, hi)" + "".join(f", {w}" for w in words[:-1]) + \
            (f" or {words[-1]}" if words else "")

    def accepts(self, value: object) -> bool:
        if isinstance(value, str):
            return value in self.words
        try:
            low, high = value                       # type: ignore[misc]
        except (TypeError, ValueError):
            return False
        return all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
                   for v in (low, high)) and low < high

    def normalize(self, value: object) -> Any:
        return value if isinstance(value, str) else (float(value[0]), float(value[1]))

    def convert(self, text: str) -> object:
        if text in self.words:
            return text
        return tuple(float(part) for part in text.split(","))

    def parse(self, text: str) -> Any:
        if self.none_word is not None and text == self.none_word:
            return None
        try:
            return super().parse(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected two finite numbers LO,HI with LO < HI, "
                                             f"got {text!r}") from None


@dataclass(frozen=True)
class Steps(Constraint):
    """At most ``most`` integers >= 0 (steps of an iteration), as a tuple."""

    most: int
    metavar: str = "STEP,..."

    def expected(self) -> str:
        return f"at most {self.most} steps >= 0"

    def accepts(self, value: object) -> bool:
        if isinstance(value, (str, bytes)):
            return False
        try:
            steps = list(value)                     # type: ignore[call-overload]
        except TypeError:
            return False
        return len(steps) <= self.most and all(
            isinstance(s, Integral) and not isinstance(s, bool) and s >= 0 for s in steps)

    def normalize(self, value: object) -> Any:
        return tuple(int(s) for s in value)         # type: ignore[attr-defined]

    def convert(self, text: str) -> object:
        return [int(part) for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class UnitPicks(Constraint):
    """Units by layer, as lucent names them: ``{layer: [unit, ...]}`` (the CLI's text
    ``layer:3,layer:7,other:0``; a layer key is text there, a unit an integer >= 0)."""

    metavar: str = "LAYER:UNIT,..."

    def expected(self) -> str:
        return "units by layer, {layer: [unit, ...]} (LAYER:UNIT,... on the command line)"

    def accepts(self, value: object) -> bool:
        return isinstance(value, dict) and bool(value) and all(
            isinstance(units, (list, tuple)) and units and all(
                isinstance(u, Integral) and not isinstance(u, bool) and u >= 0 for u in units)
            for units in value.values())

    def normalize(self, value: object) -> Any:
        return {key: list(dict.fromkeys(int(u) for u in units))     # type: ignore[union-attr]
                for key, units in value.items()}                     # type: ignore[union-attr]

    def convert(self, text: str) -> object:
        picks: dict[str, list[int]] = {}
        for part in text.split(","):
            layer, colon, unit = part.strip().rpartition(":")
            if not (colon and layer):
                raise ValueError(text)
            picks.setdefault(layer, []).append(int(unit))
        return picks


class AnyOf(Constraint):
    """A value any of ``constraints`` accepts (tried in order; text parsed by the first that
    reads it): e.g. a reduction's name or a position's index."""

    def __init__(self, *constraints: Constraint, metavar: str | None = None,
                 none: bool = False) -> None:
        self.constraints = constraints
        self.metavar = metavar
        self.none = none

    def expected(self) -> str:
        return " or ".join(c.expected() for c in self.constraints)

    def accepts(self, value: object) -> bool:
        return any(c.accepts(value) for c in self.constraints)

    def normalize(self, value: object) -> Any:
        return next(c for c in self.constraints if c.accepts(value)).normalize(value)

    def convert(self, text: str) -> object:
        for c in self.constraints:
            try:
                value = c.convert(text)
            except ValueError:
                continue
            if c.accepts(value):
                return value
        raise ValueError(text)


@dataclass(frozen=True)
class Param:
    """A declared parameter: its constraint, default and help."""

    constraint: Constraint
    default: Any
    help: str

    def validate(self, name: str, value: object) -> Any:
        """``value`` checked (and normalized: an int, a float, a tuple), else a ValueError
        naming ``name``."""
        return self.constraint.check(name, value)


def check_int(name: str, value: object, minimum: int | None = 1) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum`` (any integer
    for ``minimum=None``), else a ``ValueError`` naming ``name``: the shorthand of
    ``Interval(int, minimum).check``."""
    return Interval(int, minimum).check(name, value)


def check_float(name: str, value: object, low: float = 0.0, high: float = math.inf, *,
                low_inclusive: bool = False) -> float:
    """``value`` as a ``float`` if it is a finite real (not a bool) with ``low < value <
    high`` (``low <= value`` if ``low_inclusive``), else a ``ValueError`` naming ``name``:
    the shorthand of an open-ended :class:`Interval`. NaN and infinity are always refused,
    as they would silently turn every result into NaN."""
    return Interval(float, low, None if high == math.inf else high,
                    low_open=not low_inclusive, high_open=True).check(name, value)


# The constraints the API's functions share (the command line's options add upper bounds).
POSITIVE = Interval(int, 1)                                   # a count of at least one
COUNT = Interval(int, 0)                                      # a count, zero allowed
SEED = Interval(int, None)                                    # any integer
RATE = Interval(float, 0.0, low_open=True)                    # a step size, a norm: > 0
WEIGHT = Interval(float, 0.0)                                 # a penalty's weight: >= 0
SHARE = Interval(float, 0.0, 1.0, high_open=True)             # a fraction below one

_F = TypeVar("_F", bound=Callable[..., Any])


def validated(**declared: Constraint | Param) -> Callable[[_F], _F]:
    """Check the arguments a call passes to the decorated function against their
    declarations and pass them on normalized (an ``int``, a ``float``, a tuple): the
    functions' counterpart of :meth:`Param.validate` (scikit-learn's ``validate_params``).
    Defaults are the function's own and are not re-checked.

    Example:
        >>> @validated(steps=POSITIVE)
        ... def run(steps=10):
        ...     return steps
        >>> run(steps=0)
        Traceback (most recent call last):
        ValueError: steps must be a positive integer, got 0
    """
    constraints = {name: d.constraint if isinstance(d, Param) else d
                   for name, d in declared.items()}

    def decorate(function: _F) -> _F:
        signature = inspect.signature(function)
        unknown = sorted(constraints.keys() - signature.parameters.keys())
        if unknown:
            raise TypeError(f"{function.__qualname__} has no parameter {unknown[0]!r}")

        # The names positional arguments bind to, in order (no Signature.bind per call: it
        # would cost more than the checks on a sub-millisecond function).
        positional = [name for name, p in signature.parameters.items()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        checked_at = [(i, name) for i, name in enumerate(positional) if name in constraints]

        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if checked_at and checked_at[0][0] < len(args):
                args = list(args)
                for i, name in checked_at:
                    if i < len(args):
                        args[i] = constraints[name].check(name, args[i])
            for name, constraint in constraints.items():     # in declared order
                if name in kwargs:
                    kwargs[name] = constraint.check(name, kwargs[name])
            return function(*args, **kwargs)
        return checked                                    # type: ignore[return-value]
    return decorate
