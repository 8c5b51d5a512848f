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
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Sequence

__all__ = ["Interval", "Options", "Pair", "Steps", "Param", "Constraint"]


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
    """Integers (``kind=int``) or finite reals (``float``) in ``low..high`` (``high=None``:
    no upper bound); ``low_open``: ``low`` itself is refused."""

    kind: type
    low: float
    high: float | None = None
    low_open: bool = False
    none: bool = False

    @property
    def metavar(self) -> str:                       # type: ignore[override]
        return "N" if self.kind is int else "X"

    def expected(self) -> str:
        if self.kind is int:
            if self.high is not None:
                return f"an integer in {self.low:,}..{self.high:,}"
            return "a positive integer" if self.low == 1 else f"an integer >= {self.low}"
        relation = ">" if self.low_open else ">="
        if self.high is None:
            return f"a finite number {relation} {self.low:g}"
        return f"a number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def accepts(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral if self.kind is int
                                                     else Real):
            return False
        if not math.isfinite(value) or (value <= self.low if self.low_open
                                        else value < self.low):
            return False
        return self.high is None or value <= self.high

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
class Param:
    """A declared parameter: its constraint, default and help."""

    constraint: Constraint
    default: Any
    help: str

    def validate(self, name: str, value: object) -> Any:
        """``value`` checked (and normalized: an int, a float, a tuple), else a ValueError
        naming ``name``."""
        return self.constraint.check(name, value)
