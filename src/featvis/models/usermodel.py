"""A user's own model on the command line: ``pkg.module:factory`` and a safetensors file.

The factory is imported with the current directory on ``sys.path`` and called with the
keyword arguments given (``--model-args``, JSON); weights are loaded strictly from safetensors (never a pickle: ``.pt`` and ``.pth``
files are refused), and a mismatch lists the missing and unexpected keys.
"""

from __future__ import annotations

import importlib
import os
import re
import reprlib
import sys
from pathlib import Path
from typing import Mapping

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import Terminated, UserCodeError, first_line

__all__ = ["ModelSpecError", "load_factory", "load_weights"]

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ModelSpecError(UserCodeError):
    """A ``module:factory`` that cannot be imported or called, or weights that do not fit."""


def load_factory(spec: str, kwargs: Mapping[str, object] | None = None) -> nn.Module:
    """The ``nn.Module`` that ``factory(**kwargs)`` of ``module`` returns, for ``spec`` =
    ``"module:factory"`` (the current directory is searched first)."""
    if not _SPEC.match(spec):
        raise ModelSpecError(f"--model {spec!r}: expected package.module:factory")
    module_name, factory_name = spec.split(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Terminated:
        raise
    except (Exception, SystemExit) as exc:   # noqa: BLE001 - anything the user's import does
        raise ModelSpecError(f"--model {spec}: cannot import {module_name} "
                             f"({_raised(exc)})") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ModelSpecError(f"--model {spec}: {module_name} has no callable {factory_name}")
    try:
        model = factory(**dict(kwargs or {}))
    except Terminated:
        raise
    except (Exception, SystemExit) as exc:   # noqa: BLE001 - anything the user's factory does
        given = f"**{reprlib.repr(dict(kwargs))}" if kwargs else ""
        raise ModelSpecError(f"--model {spec}: {factory_name}({given}) {_raised(exc)}") \
            from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"--model {spec}: {factory_name}() returned "
                             f"{type(model).__name__}, not a torch.nn.Module")
    return model


def _raised(exc: BaseException) -> str:
    """What the user's code did: "called sys.exit(3)" or "raised ValueError: ..."."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return f"raised {type(exc).__name__}: {first_line(exc)}"


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ``path`` (safetensors) into ``model`` strictly; returns ``model``."""
    path = Path(path)
    if path.suffix in (".pt", ".pth", ".pkl", ".bin"):
        raise ModelSpecError(f"--weights {path}: a {path.suffix} file is a pickle, which "
                             "featvis never loads; save the state_dict with "
                             "safetensors.torch.save_file")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelSpecError(f"--weights {path}: not a readable safetensors file "
                             f"({first_line(exc)})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelSpecError(f"--weights {path}: does not fit the model: missing keys "
                             f"{_listing(missing)}; unexpected keys {_listing(unexpected)}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ModelSpecError(f"--weights {path}: {name} has shape {tuple(tensor.shape)}, "
                                 f"the model's is {tuple(expected[name].shape)}")
    model.load_state_dict(state, strict=True)
    return model


def _listing(names: list[str]) -> str:
    return "none" if not names else ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
