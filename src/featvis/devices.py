"""Devices by name: ``auto``, ``cpu``, ``cuda`` or ``cuda:i``, checked before any work, so
that a GPU that is not there is one line, never torch's "not compiled with CUDA"."""

from __future__ import annotations

import re

import torch

from .errors import FeatvisError

__all__ = ["resolve_device", "check_device"]

_NAME = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:i``
    as themselves once :func:`check_device` finds them present."""
    if isinstance(name, torch.device):
        return check_device(name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise FeatvisError(f"device {name!r}: expected auto, cpu, cuda or cuda:INDEX")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(torch.device(name))


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``; a CUDA device this machine lacks is a
    :class:`FeatvisError` naming it (and how many there are)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise FeatvisError(f"device {device!r}: {exc}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise FeatvisError(f"device {str(device)!r}: no CUDA device is available (this "
                               "torch sees none); use cpu")
        if device.index is not None and device.index >= count:
            raise FeatvisError(f"device {str(device)!r}: this machine has {count} CUDA "
                               f"device(s), cuda:0..cuda:{count - 1}")
    return device
