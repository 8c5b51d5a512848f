"""The seam between models and methods: what a method may ask of a model.

A :class:`Probe` answers, for one model: its layers (keys, unit counts, unit shapes), the
activations of several layers in one forward pass, a differentiable per-unit objective, and
its capabilities as data (incoming weights, the layer below, first-layer filters, a
generative model to sample). :func:`probe` is the only place in featvis that dispatches on
the kind of model: a featvis :class:`~featvis.models.DBN`, whose layers are hidden depths
``1..L``; a :class:`~featvis.models.ConvDBN`, whose layers are depths ``d`` (pooling maps) and
``"d.detection"`` (detection maps) and whose units are its filters; or any ``nn.Module``,
whose layers are the dotted names of ``named_modules()`` and whose units are the neurons of
a dense output or the channels of a convolutional one.

Reading a module never changes it: activations are read in eval mode (dropout off,
BatchNorm running statistics used, never updated) with the modes restored afterwards, and
forward hooks go on the target modules only, inside a context manager that always removes
them. Hooks copy the outputs (a later in-place op cannot change them) and stop the forward
pass once the deepest target has run."""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import FeatvisError
from ..params import check_int
from ..units import unit_generator
from ..data.whitening import Whitening


Key = int | str
SPATIAL = ("mean", "center", "positive")
LINEAR_SPATIAL = ("mean", "center")     # the reductions that keep an affine layer affine
LEAK = 0.01                # the slope "positive" keeps of a map's negative part


class LayerError(FeatvisError, ValueError):
    """A layer key that names no layer of the model."""


class UnsupportedError(FeatvisError, TypeError):
    """A method asked of a model (or layer) that cannot support it; the message says why."""


@dataclass(frozen=True)
class LayerInfo:
    """A layer as the methods see it: ``units`` along the output's axis ``unit_axis`` (an
    axis of the batched output: 1 for a dense layer or a convolution's channels, the last
    for a transformer's features or a channels-last map), each with the positions
    ``unit_shape`` (``()`` for a dense neuron, ``(H, W)`` for a conv channel, ``(T,)`` for
    a feature over tokens); ``output_shape`` excludes the batch."""

    name: Key
    type: str
    units: int
    unit_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    unit_axis: int = 1

    @property
    def positions_shape(self) -> tuple[int, ...]:
        """The positions each unit takes a value at (the output's other axes)."""
        return self.unit_shape


@dataclass
class Scores:
    """What mining ranks inputs by: ``values (N, U)``, and for units with a map the flat
    position ``(N, U)`` of each value in it (``None`` for dense units)."""

    values: torch.Tensor
    positions: torch.Tensor | None = None


class Probe:
    """What the methods may ask of a model; see :func:`probe`."""

    model: nn.Module
    input_shape: tuple[int, ...]
    kind: str
    unit_axis: Mapping[str, int] = MappingProxyType({})   # layers whose unit axis was named

    def layer(self, key: Key) -> LayerInfo:
        """The layer called ``key`` (an error naming close matches if there is none)."""
        raise NotImplementedError

    def layer_keys(self) -> list[Key]:
        """Every layer, in forward order."""
        raise NotImplementedError

    def key_from_text(self, text: str) -> Key:
        """A layer key as the user types it (a DBN's depth is a number)."""
        return text

    def scores(self, x: torch.Tensor, units: Mapping[Key, torch.Tensor | None]
               ) -> dict[Key, Scores]:
        """The ranking scores of several layers' units for inputs ``x`` in one forward pass
        (no gradients); ``units[key]`` selects units (``None``: all)."""
        raise NotImplementedError

    def activation(self, key: Key, values: torch.Tensor) -> torch.Tensor:
        """What the user calls the unit's activation, from :meth:`scores` values or
        :meth:`objective` values (a DBN ranks by pre-activations and reports probabilities)."""
        return values

    def objective(self, key: Key, units: torch.Tensor, spatial: str = "mean"
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The differentiable function ``x -> (N,)``: the value of unit ``units[n]`` for
        input ``x[n]`` (a channel's map reduced by ``spatial``: its mean, or its centre
        position). Prepared once for many calls (maximization's steps)."""
        raise NotImplementedError

    def default_rho(self) -> float | None:
        """The radius of maximization's norm sphere when the user gives none."""
        return None

    def default_layers(self) -> list[Key]:
        """The layers shown when the user names none."""
        return self.layer_keys()

    def describe(self) -> dict:
        """JSON-ready facts about the model for a run's summary (``kind``, ``input_shape``,
        ``trained_layers``: how many layers are trained, ``None`` when unknown)."""
        return {"kind": self.kind, "input_shape": list(self.input_shape or ()),
                "trained_layers": None}

    def incoming_weights(self, key: Key) -> torch.Tensor:
        """``(units, units below)`` weights into the layer (:class:`UnsupportedError` if it
        has none a method can use)."""
        raise NotImplementedError

    def below(self, key: Key) -> Key | None:
        """The layer whose units :meth:`incoming_weights` connect to (``None``: the input)."""
        raise NotImplementedError

    def filters(self, key: Key) -> torch.Tensor:
        """A first layer's filters as pictures ``(units, *shape)``."""
        raise NotImplementedError

    def bases(self, key: Key) -> torch.Tensor | None:
        """The model's own input-space pictures of the layer's units ``(units, *shape)``, or
        ``None`` when :func:`~featvis.methods.linear_combination` composes them from
        :meth:`incoming_weights` and :meth:`filters`."""
        return None

    def supports(self, key: Key) -> dict[str, str | None]:
        """What the layer ``key`` offers the methods, as data: for each capability ``None``
        when it has it, else the one-line reason it has not. Read from the model's own
        facts (its weights, its layer below, its kind), never by running a method:

        ``examples``, ``maximize`` (every layer); ``below`` (a layer below, not the input,
        whose units have input-space pictures: ranked filters); ``weights`` (incoming
        weights a method can use); ``bases`` (input-space pictures of the units: the model's
        own or composed from the weights down to the first-layer filters); ``whitened`` (the
        inputs were whitened); ``filters`` (the layer reads the input: first-layer filters);
        ``sampling`` (a generative model); ``deconvnet`` (channel maps that
        deconvnet may project)."""
        self.layer(key)
        return {"examples": None, "maximize": None, "below": self._below_reason(key),
                "weights": _reason(self.incoming_weights, key),
                "bases": self._bases_reason(key),
                "whitened": None if self.whitening() is not None else
                "the inputs were not whitened", "filters": _reason(self.filters, key),
                "sampling": _reason(self.generative),
                "deconvnet": _reason(self.check_deconvnet, key)}

    def _below_reason(self, key: Key) -> str | None:
        try:
            below = self.below(key)
        except UnsupportedError as exc:
            return str(exc)
        if below is None:
            return (f"ranked filters need a layer above the first: layer {key!r} connects to "
                    f"the input, and its filters are linear_combination(model, {key!r})")
        return _reason(self.incoming_weights, key) or self._bases_reason(below)

    def _bases_reason(self, key: Key) -> str | None:
        """Why the units of ``key`` have no input-space pictures: the weights down the chain
        of layers below, then the first layer's filters."""
        chain = [key]
        try:
            while (below := self.below(chain[-1])) is not None:
                chain.append(below)
            for upper in chain[:-1]:
                self.incoming_weights(upper)
            self.filters(chain[-1])
        except UnsupportedError as exc:
            return str(exc)
        return None

    def check_deconvnet(self, key: Key) -> None:
        """:class:`UnsupportedError` unless deconvnet may project the layer: channels of a
        4-D output (the method itself refuses non-linearities other than ReLUs)."""
        info = self.layer(key)
        if len(info.unit_shape) != 2:
            raise UnsupportedError(f"layer {key!r} has no channel maps (a 4-D output) to "
                                   "project")
        if info.unit_axis != 1:
            raise UnsupportedError(f"layer {key!r} has its units on axis {info.unit_axis}: "
                                   "deconvnet projects channels on axis 1")

    def whitening(self) -> Whitening | None:
        """The whitening the model's inputs went through (natural patches), or ``None``."""
        return None

    def generative(self) -> nn.Module:
        """The generative model that unit sampling draws from."""
        raise UnsupportedError(f"unit sampling needs a generative model (a featvis DBN or "
                               f"ConvDBN); {self.kind} has no p(x | h)")

    def sample(self, key: Key, units: torch.Tensor, n_samples: int, seed: int,
               variant: str = "one-hot", **chain: object) -> tuple[torch.Tensor, torch.Tensor]:
        """``(samples, contrast)`` of the model's own top-down sampler for each unit of
        ``units``: ``(U, n_samples, *input_shape)`` drawn with the unit on, and ``(U,
        *input_shape)`` what switching it on changes in the inputs' mean. ``chain``: a
        sampler's own settings (a DBN's Gibbs chains: ``n_chains``, ``burn_in``,
        ``interval``, ``progress``)."""
        self.generative()
        raise NotImplementedError

    def randomized(self, key: Key, mode: str, seed: int) -> nn.Module:
        """A deep copy of the model whose incoming weights of ``key`` (``mode="layer"``), or
        of ``key`` and every weighted layer below it (``"cascade"``), are re-drawn from
        ``N(0, s^2)``, ``s`` the std of each trained tensor; biases kept. For the sanity
        checks of Adebayo et al. (2018); the model itself is never changed."""
        raise NotImplementedError

    def like(self, model: nn.Module) -> "Probe":
        """The probe of ``model``, a copy of this probe's model with other weights (a
        :meth:`randomized` copy): what was found of the layers is reused, not found again."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next((p.device for p in self.model.parameters()), torch.device("cpu"))

    @property
    def dtype(self) -> torch.dtype:
        return next((p.dtype for p in self.model.parameters() if p.is_floating_point()),
                    torch.float32)


RANDOMIZATIONS = ("layer", "cascade")


def _reason(fact: Callable[..., object], *args: object) -> str | None:
    """``None`` when the probe's ``fact(*args)`` is there, else why not (its UnsupportedError)."""
    try:
        fact(*args)
    except UnsupportedError as exc:
        return str(exc)
    return None


def redraw(model: nn.Module, weights: Mapping[int, str], mode: str, seed: int) -> nn.Module:
    """A deep copy of ``model`` with its parameters ``weights`` (forward position -> dotted
    name; the last is the chosen layer's, the one ``"layer"`` re-draws) replaced by draws of
    ``N(0, s^2)``, ``s`` each tensor's (population) std. Each tensor's generator is seeded
    by ``(seed, position)``, so a layer gets the same draw in both modes."""
    if mode not in RANDOMIZATIONS:
        raise ValueError(f"mode must be one of {RANDOMIZATIONS}, got {mode!r}")
    seed = check_int("seed", seed, minimum=None)
    chosen = dict(list(weights.items())[-1:]) if mode == "layer" else weights
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for position, name in chosen.items():
            weight = copied.get_parameter(name)
            weight.normal_(0.0, float(weight.std(correction=0)),
                           generator=unit_generator(seed, position, weight.device))
    return copied


def redraw_stack(model: nn.Module, depth: int, mode: str, seed: int) -> nn.Module:
    """:func:`redraw` of a stack of RBMs: the weights ``rbms.{j}.weight`` of layer ``depth``
    (and of the layers below for ``"cascade"``), the layer ``j + 1`` at position ``j``."""
    return redraw(model, {j: f"rbms.{j}.weight" for j in range(depth)}, mode, seed)


def unknown_layer(key: object, known: Sequence[Key], what: str) -> LayerError:
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else \
        f"; {what} has {', '.join(map(repr, known[:12]))}{' ...' if len(known) > 12 else ''}"
    return LayerError(f"unknown layer {key!r}{hint}")



def map_scores(maps: torch.Tensor) -> Scores:
    """A channel's score: the maximum of its map ``(N, U, *map)`` and its flat position (the
    first maximum, row-major)."""
    values, positions = maps.flatten(2).max(2)
    return Scores(values, positions)


def reduce_map(output: torch.Tensor, spatial: str) -> torch.Tensor:
    """``(N, *map)`` per-row unit maps -> ``(N,)`` by ``spatial``."""
    if output.dim() == 1:
        return output
    flat = output.flatten(1)
    if spatial == "mean":
        return flat.mean(1)
    if spatial == "positive":       # leaky: a map negative everywhere keeps a gradient
        return torch.nn.functional.leaky_relu(flat, LEAK).mean(1)
    centre = 0
    for size in output.shape[1:]:
        centre = centre * size + size // 2
    return flat[:, centre]
