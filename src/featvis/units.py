"""Which activation of which layer: a model's hidden layer seen as a function of its input.

Every method asks a :class:`Layer` for pre-activations (``a_d`` in DESIGN.md) of some units;
activations are ``sigmoid(a_d)`` for a DBN. Methods never reach into a model themselves.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .models.dbn import DBN

__all__ = ["Layer", "DBNLayer", "layer_of", "layer_logits", "resolve_units",
           "model_device", "model_dtype"]

Units = Sequence[int] | torch.Tensor | None


def resolve_units(units: Units, n_units: int, device: torch.device | None = None) -> torch.Tensor:
    """Unit indices as an int64 tensor (``None`` means all ``n_units``); range-checked."""
    if units is None:
        return torch.arange(n_units, device=device)
    if isinstance(units, torch.Tensor):
        index = units.to(device).reshape(-1) if units.dim() == 0 else units.to(device)
        ok = index.dim() == 1 and not index.is_floating_point() and index.dtype != torch.bool
    else:
        units = [units] if isinstance(units, int) else list(units)
        ok = all(isinstance(u, int) and not isinstance(u, bool) for u in units)
        index = torch.tensor(units if ok else [], dtype=torch.long, device=device)
    if not ok:
        raise ValueError(f"units must be a list of integer indices, got {units!r}")
    if index.numel() == 0:
        raise ValueError("units is empty")
    bad = (index < 0) | (index >= n_units)
    if bad.any():
        raise ValueError(f"unit index {index[bad][0].item()} out of range: the layer has "
                         f"{n_units} units (0..{n_units - 1})")
    return index.long()


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
        return x if self.depth == 1 else self.dbn.transform(x, self.depth - 1)

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
