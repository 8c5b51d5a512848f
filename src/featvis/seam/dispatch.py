"""The one place that dispatches on the model's kind: :func:`probe` and :func:`layers`."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import DataError
from ..models.conv.cdbn import ConvDBN
from ..models.dbn import DBN
from .base import LayerInfo, Probe
from .cdbn import ConvDBNProbe
from .dbn import DBNProbe
from .module import ModuleProbe, discover


def layers(model: nn.Module, example_batch: torch.Tensor) -> list[LayerInfo]:
    """Every module of ``model`` whose output is one tensor with a unit dimension, in
    forward-call order, from one forward pass of ``example_batch`` (in eval mode, no
    gradients; hooks removed afterwards). A DBN lists its hidden layers, a ConvDBN its pooling
    and detection layers.

    Example:
        >>> for info in layers(cnn, torch.zeros(1, 1, 28, 28)):   # doctest: +SKIP
        ...     print(info.name, info.type, info.units, info.output_shape)
    """
    if isinstance(model, DBN):
        return [DBNProbe(model).layer(d) for d in range(1, model.n_layers + 1)]
    if isinstance(model, ConvDBN):
        seam = ConvDBNProbe(model, example_batch.shape[1:])
        return [seam.layer(key) for key in seam.layer_keys()]
    return discover(model, example_batch)[0]


def probe(model: nn.Module, input_shape: Sequence[int] | None = None) -> Probe:
    """The :class:`Probe` of ``model``: the one place that dispatches on the model's kind.

    ``input_shape`` is one input's shape, ``(D,)`` or ``(C, H, W)``; a DBN and a trained
    ConvDBN know their own, any other module needs it to find its layers unless it has an
    ``input_shape`` attribute (methods that receive data take it from the data).
    """
    if isinstance(model, DBN):
        shape = None if input_shape is None else tuple(input_shape)
        if shape is not None and shape != (model.sizes[0],):
            raise DataError(f"images: width {shape[0]} does not match the model's input size "
                            f"{model.sizes[0]}" if len(shape) == 1 else
                            f"images: one input has shape {shape}, the DBN takes "
                            f"({model.sizes[0]},)")
        return DBNProbe(model)
    if isinstance(model, ConvDBN):
        return ConvDBNProbe(model, input_shape)
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    # A module may declare the shape it takes (featvis's reference CNN does).
    return ModuleProbe(model, input_shape or getattr(model, "input_shape", None))
