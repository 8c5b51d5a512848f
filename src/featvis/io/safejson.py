"""JSON from files featvis did not necessarily write: bounded nesting, finite numbers only.

``json.loads`` recurses once per nesting level, so a small document nested a hundred
thousand levels deep exhausts the stack; :func:`loads` measures the depth with a flat scan
first and only hands documents of a sane depth to the parser.
"""

from __future__ import annotations

import json
import math
import re

__all__ = ["loads", "json_float", "MAX_DEPTH"]

MAX_DEPTH = 64

# Escape pairs go first, then string literals (no escapes left inside), then brackets are
# counted; simple patterns, as a repeated group would make the regex engine keep state
# for every escape of a long string.
_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets outside string literals nest deeper than ``limit`` (no recursion)."""
    outside = _STRING.sub("", _ESCAPE.sub("", text))
    quote = outside.find('"')
    if quote >= 0:      # a string never closed: the rest of the text is inside it
        outside = outside[:quote]
    depth = 0
    for match in _BRACKET.finditer(outside):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} overflows a float")
    return value


def loads(text: str | bytes, source: str) -> object:
    """Parse ``text`` (UTF-8 if bytes); a one-line ``ValueError`` naming ``source`` if it is
    malformed, nested deeper than :data:`MAX_DEPTH` levels or holds non-finite numbers."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{source}: malformed JSON (not UTF-8: {exc.reason})") from None
    if _depth_exceeds(text, MAX_DEPTH):
        raise ValueError(f"{source}: JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"{source}: JSON nested too deeply to parse") from None
    except ValueError as exc:   # a decode error, a non-finite number, an int too long
        raise ValueError(f"{source}: malformed JSON ({exc})") from None


def json_float(x: float) -> float | None:
    """A figure as featvis writes it into JSON: 6 decimals, ``None`` for NaN or infinity."""
    return None if not math.isfinite(x) else round(float(x), 6)
