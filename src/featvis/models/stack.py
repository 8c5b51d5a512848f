"""What the stacks of RBMs (``DBN``, ``ConvDBN``) share: their input units, depth and the
mean norm of their training inputs."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Stack"]


class Stack:
    """Mixed into a stack of layers ``rbms`` (an ``nn.ModuleList``, input first) that keeps
    the buffer ``_input_norm``."""

    rbms: nn.ModuleList
    _input_norm: torch.Tensor

    @property
    def visible(self) -> str:
        """The input units: ``"binary"`` or ``"gaussian"``."""
        return self.rbms[0].visible

    @property
    def sigma(self) -> float:
        """The first layer's current sigma (1.0 for binary inputs; training may anneal it)."""
        return self.rbms[0].sigma

    @property
    def n_layers(self) -> int:
        """Number of hidden layers L."""
        return len(self.rbms)

    @property
    def input_norm(self) -> float | None:
        """Mean L2 norm of the training inputs (maximization's default radius), or None."""
        value = float(self._input_norm)
        return None if value != value else value

    @input_norm.setter
    def input_norm(self, value: float | None) -> None:
        self._input_norm.fill_(float("nan") if value is None else float(value))
