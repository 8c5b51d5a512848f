"""Identity of models and data sets: one sha256 over named tensors.

Checkpoints record the fingerprint of their training data (``data_sha256``) and run folders
that of the model they show (``model_sha256``), so that ``train --resume`` on other data and
``evaluate --run`` with another model's run are refused instead of mixed silently.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import torch
from torch import nn

__all__ = ["fingerprint", "model_fingerprint", "data_fingerprint"]


def fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        digest.update(f"{name}|{str(t.dtype)}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """The fingerprint of a model's ``state_dict`` (what its checkpoint stores)."""
    return fingerprint(model.state_dict())


def data_fingerprint(images: torch.Tensor) -> str:
    """The fingerprint of a data set's inputs."""
    return fingerprint({"images": images})
