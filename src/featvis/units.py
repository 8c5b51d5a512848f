"""Which activation of which layer: a model's hidden layer seen as a function of its input.

Every method asks a :class:`Layer` for pre-activations (``a_d`` in DESIGN.md) of some units;
activations are ``sigmoid(a_d)`` for a DBN. Methods never reach into a model themselves.
"""

from __future__ import annotations

import reprlib
from typing import Iterable, Sequence

import numpy as np
import torch

from .errors import is_int
from .models.dbn import DBN

__all__ = ["Layer", "DBNLayer", "layer_of", "layer_logits", "resolve_units",
           "model_device", "model_dtype"]

Units = int | Sequence[int] | np.ndarray | torch.Tensor | None


def _describe(units: object) -> str:
    """``units`` for a one-line message: an array by its dtype and shape, else a short repr."""
    if isinstance(units, (np.ndarray, torch.Tensor)):
        return f"{type(units).__name__} of {units.dtype} with shape {tuple(units.shape)}"
    return reprlib.repr(units)


def _index(units: object) -> torch.Tensor | None:
    """``units`` as a 1-D integer tensor, or ``None`` if they are not integer indices (floats
    and bools are not: ``True`` would silently mean unit 1)."""
    if is_int(units):
        return torch.tensor([int(units)])
    if isinstance(units, np.ndarray):
        if not np.issubdtype(units.dtype, np.integer):
            return None
        units = torch.from_numpy(units.astype(np.int64))
    if isinstance(units, torch.Tensor):
        real = units.is_floating_point() or units.is_complex() or units.dtype == torch.bool
        return units.reshape(-1) if not real and units.dim() <= 1 else None
    if isinstance(units, Iterable) and not isinstance(units, (str, bytes)):
        values = list(units)
        if all(is_int(u) for u in values):
            return torch.tensor([int(u) for u in values], dtype=torch.long)
    return None


def resolve_units(units: Units, n_units: int, device: torch.device | None = None) -> torch.Tensor:
    """Unit indices as an int64 tensor (``None`` means all ``n_units``); range-checked.

    ``units`` is one index or a 1-D list, array or tensor of them; Python, numpy and torch
    integers are all indices.
    """
    if units is None:
        return torch.arange(n_units, device=device)
    index = _index(units)
    if index is None:
        raise ValueError(f"units must be an integer or a 1-D list of integer indices, got "
                         f"{_describe(units)}")
    if index.numel() == 0:
        raise ValueError("units is empty")
    bad = (index < 0) | (index >= n_units)
    if bad.any():
        raise ValueError(f"unit index {index[bad][0].item()} out of range: the layer has "
                         f"{n_units} units (0..{n_units - 1})")
    return index.to(device=device, dtype=torch.long)


class Layer:
    """A hidden layer: ``input_size``, ``n_units`` and pre-activations as functions of the input."""

    input_size: int
    n_units: int
    name: str

    def logits_rowwise(self, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """Pre-activation ``(N,)`` of unit ``units[n]`` for input ``x[n]`` (one unit per row)."""
        raise NotImplementedError

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """The layer's non-linearity applied to pre-activations."""
        raise NotImplementedError


class DBNLayer(Layer):
    """Hidden layer ``depth`` of a DBN: deterministic up-pass through the RBMs below."""

    def __init__(self, dbn: DBN, depth: int) -> None:
        self.dbn = dbn
        self.depth = dbn.check_layer(depth)
        self.rbm = dbn.rbms[depth - 1]
        self.input_size = dbn.sizes[0]
        self.n_units = dbn.sizes[depth]
        self.name = f"layer {depth}"

    def below(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities of layer ``depth - 1`` (the input itself for depth 1)."""
        return x if self.depth == 1 else self.dbn._up(x, self.depth - 1)   # no per-step check

    def logits_rowwise(self, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        h = self.below(x)
        return (h * self.rbm.weight[units]).sum(1) + self.rbm.hidden_bias[units]

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


def _as_dbn(model: torch.nn.Module) -> DBN:
    """``model`` if it is a :class:`DBN`, the only model kind the methods know so far."""
    if not isinstance(model, DBN):
        raise TypeError(f"expected a featvis.DBN, got {type(model).__name__}")
    return model


def layer_logits(model: torch.nn.Module, x: torch.Tensor,
                 units: dict[int, torch.Tensor | None]) -> dict[int, torch.Tensor]:
    """Pre-activations ``(N, len(units[d]))`` of several layers from one forward pass.

    ``units`` maps each layer to the indices of the units wanted (``None``: all, in order).
    """
    dbn = _as_dbn(model)
    out = {}
    h = x
    for d in range(1, max(units) + 1):
        logits = dbn.rbms[d - 1].hidden_logits(h)
        if d in units:
            out[d] = logits if units[d] is None else logits[:, units[d]]
        h = torch.sigmoid(logits)
    return out


def layer_of(model: torch.nn.Module, layer: int) -> Layer:
    """The :class:`Layer` called ``layer`` in ``model`` (hidden depth ``1..L`` for a DBN)."""
    return DBNLayer(_as_dbn(model), layer)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The floating dtype of the model's first parameter (float32 without parameters)."""
    return next((p.dtype for p in model.parameters()), torch.float32)
