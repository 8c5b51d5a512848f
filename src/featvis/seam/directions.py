"""Directions as units: a layer's units replaced by directions in its unit space (a linear
probe's weights, a concept vector, a sparse autoencoder's decoder rows), so that every method
that reads units (dataset examples, maximization) shows them, a direction's value being the
projection of the layer's output on it (at each position, then reduced as a unit's)."""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import torch
from torch import nn

from ..errors import DataError
from .base import Key, LayerInfo, Probe, UnsupportedError, project

__all__ = ["DirectedProbe", "directed"]

# What directions offer of a layer's capabilities: the methods that read units' values.
_KEPT = ("examples", "maximize", "directions")


class DirectedProbe(Probe):
    """The probe of a model whose layers ``directions`` (key -> ``(V, U)``) have their ``V``
    directions as units; every other layer, and everything else about the model, is the
    ``base`` probe's."""

    def __init__(self, base: Probe, directions: Mapping[Key, torch.Tensor]) -> None:
        if isinstance(base, DirectedProbe):
            raise ValueError("directions: the probe has directions already; give them all "
                             "at once")
        self.base = base
        self.model, self.input_shape, self.kind = base.model, base.input_shape, base.kind
        self.unit_axis, self.forward = base.unit_axis, base.forward
        self.directions = {}
        for key, v in directions.items():
            key = base.key_from_text(key) if isinstance(key, str) else key
            self.directions[key] = _checked(base, key, v)
        if not self.directions:
            raise ValueError("directions: no layer given")

    # -- the directed layers ----------------------------------------------------------------
    def layer(self, key):
        info = self.base.layer(key)
        if key not in self.directions:
            return info
        return replace(info, units=self.directions[key].shape[0], unit_name="direction")

    def scores(self, x, units, directions=None, shortlists=None):
        return self.base.scores(x, units, {k: v for k, v in self.directions.items()
                                           if k in units}, shortlists)

    def outputs(self, x, keys):
        found = self.base.outputs(x, keys)
        return {key: project(output, self.directions[key]) if key in self.directions
                else output for key, output in found.items()}

    def activation(self, key, values):
        return values if key in self.directions else self.base.activation(key, values)

    def objective(self, key, units, spatial="mean", *, directions=None, cosine_power=0.0):
        return self.base.objective(key, units, spatial, directions=self.directions.get(key),
                                   cosine_power=cosine_power)

    def supports(self, key):
        supports = self.base.supports(key)
        if key not in self.directions:
            return supports
        return {need: reason if need in _KEPT else
                f"layer {key!r} shows directions in its space, not its own units, and this "
                "method reads its units" for need, reason in supports.items()}

    def default_layers(self):
        return list(self.directions)

    def describe(self):
        return self.base.describe() | {"directions": {str(k): list(v.shape)
                                                      for k, v in self.directions.items()}}

    def like(self, model: nn.Module) -> "DirectedProbe":
        return DirectedProbe(self.base.like(model), self.directions)

    # -- everything else is the model's -----------------------------------------------------
    def layer_keys(self):
        return self.base.layer_keys()

    def key_from_text(self, text):
        return self.base.key_from_text(text)

    def default_rho(self):
        return self.base.default_rho()

    def incoming_weights(self, key):
        self._own(key)
        return self.base.incoming_weights(key)

    def below(self, key):
        return self.base.below(key)

    def filters(self, key):
        self._own(key)
        return self.base.filters(key)

    def bases(self, key):
        self._own(key)
        return self.base.bases(key)

    def check_deconvnet(self, key):
        self._own(key)
        self.base.check_deconvnet(key)

    def check_directions(self, key):
        self.base.check_directions(key)

    def regions(self, key, positions):
        return self.base.regions(key, positions)

    def whitening(self):
        return self.base.whitening()

    def generative(self):
        return self.base.generative()

    def sample(self, key, units, n_samples, seed, variant="one-hot", **chain):
        self._own(key)
        return self.base.sample(key, units, n_samples, seed, variant, **chain)

    def randomized(self, key, mode, seed):
        return self.base.randomized(key, mode, seed)

    def _own(self, key: Key) -> None:
        if key in self.directions:
            raise UnsupportedError(self.supports(key)["weights"])


def _checked(base: Probe, key: Key, v: object) -> torch.Tensor:
    """``v`` as directions ``(V, U)`` of layer ``key`` on the probe's device and dtype, or a
    one-line error naming the layer."""
    info: LayerInfo = base.layer(key)
    base.check_directions(key)
    if not (isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() == 2
            and v.shape[0] >= 1 and v.shape[1] == info.units):
        found = f"{v.dtype} {tuple(v.shape)}" if isinstance(v, torch.Tensor) else \
            type(v).__name__
        raise DataError(f"directions for layer {key!r} must be a floating tensor (V, "
                        f"{info.units}), one row per direction over its {info.units} units, "
                        f"got {found}")
    if not torch.isfinite(v).all():
        raise DataError(f"directions for layer {key!r} contain NaN or infinite values")
    return v.detach().to(base.device, base.dtype)


def directed(base: Probe, directions: Mapping[Key, torch.Tensor]) -> DirectedProbe:
    """``base`` with the layers of ``directions`` (key -> ``(V, U)``, ``U`` the layer's units)
    showing their directions as units; see :class:`DirectedProbe`.

    Example:
        >>> seam = directed(probe(vit, (1, 28, 28)), {"blocks.1": probe_weights})  # doctest: +SKIP
        >>> top_examples(seam, images, "blocks.1").indices      # (V, k): per direction
    """
    return DirectedProbe(base, directions)
