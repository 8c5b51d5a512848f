"""The ``featvis`` command: thin sub-commands over the library."""

from .commands import main

__all__ = ["main"]
