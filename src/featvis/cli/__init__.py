"""The ``featvis`` command: plugins (:mod:`.plugins`), a parser generated from the declared
parameters (:mod:`.parser`, :mod:`.argtypes`), thin sub-commands (:mod:`.commands`,
:mod:`.recipes` for ``train``) and :func:`main` (:mod:`.program`)."""

from .program import main

__all__ = ["main"]
