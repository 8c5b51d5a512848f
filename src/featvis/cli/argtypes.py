"""The command line's argument types: text to values, each with a one-line error
("expected ..., got 'text'") and the bounds of what the command line alone takes; the
methods' and settings' options parse through their declarations (:mod:`featvis.params`)."""

from __future__ import annotations

import argparse
import math
import re
from typing import Callable, Sequence

EXIT_USAGE = 2               # a user's error: one line on stderr

# The bounds of the counts only the command line takes (option -> (lowest, highest)), checked
# before any work; the methods' and settings' come from their declarations
# (featvis.cli.parser.bounds lists them all, as the README's table does).
LIMITS = {
    "--epochs": (1, 10_000), "--batch-size": (1, 100_000), "--patch-size": (2, 512),
    "--patches": (1, 10_000_000), "--ais-runs": (2, 10_000), "--max-pixels": (1, 2**31),
    "--max-bytes": (1, 2**40), "--workers": (0, 64), "--loader-batch-size": (1, 100_000),
    "--state-every": (0, 1_000_000),
}


MAX_LAYER_UNITS = 65_536                 # one entry of --sizes
MAX_WEIGHTS = 2**28                      # all of --sizes' weights (1 GiB of float32)
CONV_LIMITS = {"filters": (1, 1024), "filter_size": (1, 64), "pool": (1, 16)}
MAX_CONV_LAYERS = 8



MAX_TIMEOUT = 86_400.0


def count(option: str) -> Callable[[str], int]:
    """The argparse type of ``option``: an integer within its :data:`LIMITS`."""
    low, high = LIMITS[option]

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in {low:,}..{high:,}, got "
                                             f"{text!r}")
        return value
    return parse


def positive_number(text: str) -> float:
    """A finite number > 0 (a learning rate, a norm)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def seconds(text: str) -> float:
    value = positive_number(text)
    if value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_TIMEOUT:g} seconds, got "
                                         f"{text!r}")
    return value


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def sizes(text: str) -> list[int]:
    """``--sizes``: 2 to 64 layer sizes of at most 65,536 units, at most 2^28 weights."""
    sizes = int_list(text)
    if not 2 <= len(sizes) <= 64 or max(sizes) > MAX_LAYER_UNITS:
        raise argparse.ArgumentTypeError(f"expected 2 to 64 sizes of 1..{MAX_LAYER_UNITS:,} "
                                         f"units, got {text!r}")
    weights = sum(v * h for v, h in zip(sizes, sizes[1:]))
    if weights > MAX_WEIGHTS:
        raise argparse.ArgumentTypeError(f"{text!r} needs {weights:,} weights, above the "
                                         f"{MAX_WEIGHTS:,} (1 GiB of float32) featvis trains")
    return sizes


def number_list(text: str, kind: type = int) -> list:
    try:
        return [kind(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated {kind.__name__}s, got {text!r}") from None


CONV_LAYER_KEYS = ("filters", "filter_size", "pool")     # a ConvDBN layer's spec


def conv_layers(text: str) -> list[dict[str, int]]:
    """``FILTERSxSIZExPOOL,...`` (``40x10x2,40x6x2``) as ConvDBN layer specs."""
    layers = [part.strip().lower().split("x") for part in text.split(",")]
    if not all(len(values) == 3 and all(v.isdigit() and int(v) > 0 for v in values)
               for values in layers):
        raise argparse.ArgumentTypeError(f"expected FILTERSxSIZExPOOL,... of positive integers "
                                         f"(e.g. 40x10x2,40x6x2), got {text!r}")
    specs = [dict(zip(CONV_LAYER_KEYS, map(int, values))) for values in layers]
    odd = next((f"{key} {spec[key]}" for spec in specs for key, (low, high)
                in CONV_LIMITS.items() if not low <= spec[key] <= high), None)
    if odd is not None or len(specs) > MAX_CONV_LAYERS:
        bounds = ", ".join(f"{key} {low}..{high}" for key, (low, high) in CONV_LIMITS.items())
        raise argparse.ArgumentTypeError(f"expected at most {MAX_CONV_LAYERS} layers with "
                                         f"{bounds}, got {odd or text!r}")
    return specs


def conv_text(layers: Sequence[dict]) -> str:
    """ConvDBN layer specs as ``--conv-layers`` spells them."""
    return ",".join("x".join(str(spec[key]) for key in CONV_LAYER_KEYS) for spec in layers)


def shape(text: str) -> tuple[int, ...]:
    values = number_list(text)
    if not 1 <= len(values) <= 3 or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected D, H,W or C,H,W (positive), got {text!r}")
    return tuple(values)


MAX_MODEL_ARGS = 65_536                  # characters of --model-args


def json_object(text: str) -> dict:
    """A JSON object (``--model-args``), parsed by the bounded reader (never ``eval``)."""
    from ..io.safejson import loads

    if len(text) > MAX_MODEL_ARGS:
        raise argparse.ArgumentTypeError(f"expected a JSON object of at most {MAX_MODEL_ARGS} "
                                         f"characters, got {len(text)}")
    try:
        value = loads(text, "JSON")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({exc})") \
            from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object {{\"name\": value, ...}}, got "
                                         f"{text!r}")
    return value


def layer_names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer names, got {text!r}")
    return names


def device_name(text: str) -> str:
    if not re.match(r"^(auto|cpu|cuda(:[0-9]+)?)$", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:INDEX, got {text!r}")
    return text


def ais_runs(text: str) -> int:
    if text.strip() == "0":
        return 0
    try:
        return count("--ais-runs")(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (AIS needs at least 2 runs; 0 skips it)") \
            from None


def method_names(text: str) -> list[str]:
    """``--methods``: registered methods' names, comma-separated."""
    from ..methods import registered

    known = registered()
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method {unknown[0] if unknown else text!r}: choose from {','.join(known)}")
    return names


def shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/N, got {text!r}") from None
    if not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"expected i/N with 0 <= i < N, got {text!r}")
    return shard

