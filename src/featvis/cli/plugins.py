"""Methods from outside featvis, loaded before the command line's parser is built (so that
their names and options are in ``--methods``, ``--help`` and ``featvis methods``): the
modules named by ``--plugins MODULE,...`` and the entry points of the group
``featvis.methods`` of installed packages (each a module, or a
:class:`featvis.methods.Method`, registered if its name is free).

A package declares one in its ``pyproject.toml``::

    [project.entry-points."featvis.methods"]
    saliency = "my_package.featvis_methods"
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points
from typing import Sequence

from ..errors import FeatvisError, first_line

__all__ = ["GROUP", "plugins_named", "load_plugins"]

GROUP = "featvis.methods"


def plugins_named(argv: Sequence[str]) -> list[str]:
    """The modules of every ``--plugins MODULE,...`` (or ``--plugins=...``) in ``argv``, up
    to a ``--``."""
    modules: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--plugins":
            if i + 1 == len(argv):
                raise FeatvisError("--plugins: expected MODULE,..., got nothing")
            text = argv[i + 1]
        elif arg.startswith("--plugins="):
            text = arg.partition("=")[2]
        else:
            continue
        named = [part.strip() for part in text.split(",") if part.strip()]
        if not named:
            raise FeatvisError(f"--plugins: expected MODULE,..., got {text!r}")
        modules += named
    return modules


def load_plugins(argv: Sequence[str]) -> None:
    """Import the ``--plugins`` of ``argv`` (a failure is a one-line error naming the
    module), then the entry points of :data:`GROUP` (a failure is a one-line warning: an
    installed package's fault should not stop every command)."""
    from ..methods import Method, register, registered

    for module in plugins_named(argv):
        try:
            importlib.import_module(module)
        except Exception as exc:          # the user's code: anything it raises
            raise FeatvisError(f"--plugins {module}: {type(exc).__name__}: {first_line(exc)}"
                               ) from None
    for point in entry_points(group=GROUP):
        try:
            loaded = point.load()
            if isinstance(loaded, Method) and loaded.name not in registered():
                register(loaded)
        except Exception as exc:
            print(f"featvis: warning: entry point {point.name} = {point.value} "
                  f"({GROUP}) not loaded: {type(exc).__name__}: {first_line(exc)}",
                  file=sys.stderr)
