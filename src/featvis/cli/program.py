"""The ``featvis`` program: plugins, then the parser, then one sub-command, with every user
error as one line on stderr and exit status 2 (Ctrl-C: 130). Outputs are written atomically.
torch is loaded only once :func:`main` has set ``OMP_WAIT_POLICY`` (see there)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Callable, Sequence

from ..errors import FeatvisError, Terminated, UserCodeError, first_line
from .argtypes import EXIT_USAGE
from .plugins import load_plugins

__all__ = ["main"]


def _sizes(args: argparse.Namespace) -> None:
    """``--sizes``, or its old spelling ``--layers`` with a warning."""
    if args.old_sizes is not None:
        if args.sizes is not None:
            raise FeatvisError("give --sizes only (--layers is its old spelling)")
        print(f"featvis {args.command}: warning: --layers is now --sizes (layer sizes); "
              "--layers will mean layer keys, as in 'featvis visualize'", file=sys.stderr)
        args.sizes = args.old_sizes


def _terminated(signum: int, frame: object) -> None:
    raise Terminated(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    # Spinning OpenMP threads make torch an order of magnitude slower whenever another
    # process shares the cores; passive waiting costs little when they are idle. Set before
    # torch is loaded, and never over the user's own setting (the library itself never does).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # A distributed run reports a failed peer in one line; c10d's own dumps would not.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        load_plugins(argv)             # before the parser: their methods' options are in it
    except FeatvisError as exc:
        print(f"featvis: error: {first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    from .parser import build_parser

    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    # SIGTERM unwinds like Ctrl-C, so that temporaries are removed on the way out.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    try:
        return _run(func, args)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``func(args)``, with every user error as one line on stderr and exit status 2."""
    from .commands import _check_input_limits

    try:
        if hasattr(args, "old_sizes"):
            _sizes(args)
        _check_input_limits(args)
        return func(args)
    except KeyboardInterrupt:
        print("featvis: interrupted", file=sys.stderr)
        return 130
    except UserCodeError as exc:
        spec = getattr(args, "model_spec", "")
        named = f"--model {spec}: " if ":" in spec and not str(exc).startswith("--model") \
            else ""
        print(f"featvis {args.command}: error: {named}{first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        raise
    except SystemExit as exc:       # the user's code outside the seam's guard
        print(f"featvis {args.command}: error: the model's code called sys.exit({exc.code!r})",
              file=sys.stderr)
        return EXIT_USAGE
    except FeatvisError as exc:
        print(f"featvis {args.command}: error: {first_line(exc)}", file=sys.stderr)
        # 1 where another process of a distributed run failed, not this one's usage.
        return getattr(exc, "exit_status", EXIT_USAGE)
    except (ValueError, OSError) as exc:
        print(f"featvis {args.command}: error: {first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE

