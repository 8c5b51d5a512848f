"""The one place that dispatches on the model's kind: :func:`probe`, a
:func:`functools.singledispatch` function whose registrations below name every kind of model
featvis knows (any other ``nn.Module`` gets a :class:`~featvis.seam.module.ModuleProbe`), and
:func:`layers`, built on it."""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import torch
from torch import nn

from ..errors import DataError
from ..models.conv.cdbn import ConvDBN
from ..models.dbn import DBN
from .base import LayerInfo, Probe
from .cdbn import ConvDBNProbe
from .dbn import DBNProbe
from .hooks import Forward, call
from .module import ModuleProbe


@functools.singledispatch
def probe(model: nn.Module | Probe, input_shape: Sequence[int] | None = None, *,
          unit_axis: Mapping[str, int] | None = None, forward: Forward | None = None) -> Probe:
    """The :class:`Probe` of ``model``; ``probe(p) is p`` for a Probe ``p``, so a run builds
    one and passes it along (layers are found once).

    ``input_shape`` is one input's shape, ``(D,)`` or ``(C, H, W)``; a DBN and a trained
    ConvDBN know their own, any other module needs it to find its layers unless it has an
    ``input_shape`` attribute (methods that receive data take it from the data). A new kind
    of model registers its probe here: ``@probe.register(MyModel)``.

    ``unit_axis`` names the axis of a module's output that holds its units where featvis's
    rules do not decide it (:func:`featvis.seam.module.discover`), e.g. ``{"blocks.0":
    -1}`` for a transformer block's features (axis 1 is the batched output's first after
    the batch).

    ``forward(model, x)`` is how a module takes a batch ``x`` where it is not ``model(x)``: a
    dict, ``lambda model, x: model({"pixel_values": x})``, or other arguments; only the
    hooked layers' outputs are read, so a model may return anything.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module or a featvis Probe, got "
                        f"{type(model).__name__}")
    # A module may declare the shape it takes (featvis's reference CNN does).
    return ModuleProbe(model, input_shape or getattr(model, "input_shape", None), unit_axis,
                       forward or call)


@probe.register
def _(model: Probe, input_shape: Sequence[int] | None = None, *,
      unit_axis: Mapping[str, int] | None = None, forward: Forward | None = None) -> Probe:
    if unit_axis and unit_axis != getattr(model, "unit_axis", None):
        raise ValueError("unit_axis: give it when the probe is built, probe(model, "
                         "unit_axis=...)")
    if forward is not None and forward is not model.forward:
        raise ValueError("forward: give it when the probe is built, probe(model, "
                         "forward=...)")
    shape = None if input_shape is None else tuple(int(s) for s in input_shape)
    if shape is not None and model.input_shape is not None and shape != model.input_shape:
        raise DataError(f"images: one input has shape {shape}, the probe of {model.kind} "
                        f"takes {model.input_shape}")
    if shape is not None and model.input_shape is None:
        return probe(model.model, shape, unit_axis=getattr(model, "unit_axis", None),
                     forward=model.forward)
    return model


@probe.register
def _(model: DBN, input_shape: Sequence[int] | None = None, *,
      unit_axis: Mapping[str, int] | None = None, forward: Forward | None = None) -> Probe:
    _own_model(model, unit_axis, forward)
    shape = None if input_shape is None else tuple(input_shape)
    if shape is not None and shape != (model.sizes[0],):
        raise DataError(f"images: width {shape[0]} does not match the model's input size "
                        f"{model.sizes[0]}" if len(shape) == 1 else
                        f"images: one input has shape {shape}, the DBN takes "
                        f"({model.sizes[0]},)")
    return DBNProbe(model)


@probe.register
def _(model: ConvDBN, input_shape: Sequence[int] | None = None, *,
      unit_axis: Mapping[str, int] | None = None, forward: Forward | None = None) -> Probe:
    _own_model(model, unit_axis, forward)
    return ConvDBNProbe(model, input_shape)


def _own_model(model: nn.Module, unit_axis: Mapping[str, int] | None,
               forward: Forward | None) -> None:
    """A featvis model's layers and calls are its own: refuse what is for a module's."""
    if unit_axis:
        raise ValueError(f"unit_axis: a {type(model).__name__}'s units are its own (hidden "
                         "units, channels); unit_axis is for a module's layers")
    if forward is not None:
        raise ValueError(f"forward: a {type(model).__name__} takes its inputs itself; forward "
                         "is for a module that takes other than one tensor")


def layers(model: nn.Module | Probe, example_batch: torch.Tensor, *,
           unit_axis: Mapping[str, int] | None = None, forward: Forward | None = None
           ) -> list[LayerInfo]:
    """Every layer of ``model`` in forward-call order: for a module, every submodule whose
    output is one tensor with a unit dimension, found by one forward pass of one input shaped
    like ``example_batch``'s (in eval mode, no gradients; hooks removed afterwards); a DBN
    lists its hidden layers, a ConvDBN its pooling and detection layers.

    Example:
        >>> for info in layers(cnn, torch.zeros(1, 1, 28, 28)):   # doctest: +SKIP
        ...     print(info.name, info.type, info.units, info.output_shape)
    """
    seam = probe(model, example_batch.shape[1:], unit_axis=unit_axis, forward=forward)
    return [seam.layer(key) for key in seam.layer_keys()]
