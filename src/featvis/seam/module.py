"""The probe of any ``nn.Module``: layers by dotted module name, found by one forward pass."""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import FeatvisError, UserCodeError, user_code
from .base import (LINEAR_SPATIAL, RANDOMIZATIONS, Key, LayerError, LayerInfo, Probe, Scores,
                   UnsupportedError, check_position, map_scores, pick, project, redraw,
                   reduce_map, unknown_layer)
from .hooks import Forward, call, eval_mode, run_forward


class ModuleProbe(Probe):
    """Any ``nn.Module``: layers by dotted module name, discovered by one forward pass on a
    zero input of ``input_shape``."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int] | None,
                 unit_axis: Mapping[str, int] | None = None, forward: Forward = call) -> None:
        if not callable(forward):
            raise TypeError(f"forward must be a callable (model, x), got "
                            f"{type(forward).__name__}")
        self.model, self.forward = model, forward
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.kind = type(model).__name__
        self.modules = dict(model.named_modules())
        self.unit_axis = dict(unit_axis or {})
        for name, axis in self.unit_axis.items():
            if not isinstance(name, str) or isinstance(axis, bool) or not isinstance(axis, int):
                raise TypeError(f"unit_axis maps layer names to axes (e.g. {{'blocks.0': -1}}), "
                                f"got {name!r}: {axis!r}")
        self._infos: dict[Key, LayerInfo] | None = None
        self._reasons: dict[str, str] = {}

    @property
    def infos(self) -> dict[Key, LayerInfo]:
        """The layers, found by one forward pass of a zero input (on first use)."""
        if self._infos is None:
            if self.input_shape is None:
                raise FeatvisError(f"{self.kind}: pass input_shape= (one input's shape, e.g. "
                                   "(1, 28, 28)); featvis cannot guess it from the model")
            example = torch.zeros((1, *self.input_shape), device=self.device, dtype=self.dtype)
            found, self._reasons = discover(self.model, example, self.unit_axis, self.forward)
            self._infos = {info.name: info for info in found}
        return self._infos

    def _module(self, key: Key) -> nn.Module:
        self.layer(key)
        return self.modules[key]

    def layer_keys(self):
        return list(self.infos)

    def layer(self, key):
        if key not in self.infos:
            if isinstance(key, str) and key in self._reasons:
                reason = self._reasons[key]
                rule = "" if reason.startswith(_UNDECIDED) else \
                    "; featvis reads layers that return one tensor once per forward pass"
                raise LayerError(f"layer {key!r} {reason}{rule}")
            raise unknown_layer(key, list(self.infos), self.kind)
        return self.infos[key]

    def _units_first(self, key: str, output: torch.Tensor) -> torch.Tensor:
        """The layer's output ``(N, U, *positions)``: its unit axis moved to dim 1 (a view)."""
        axis = self.infos[key].unit_axis
        return output if axis == 1 else output.movedim(axis, 1)

    def scores(self, x, units, directions=None, shortlists=None):
        self.infos                        # found before the hooks below read unit axes
        directions, shortlists = directions or {}, shortlists or {}

        def reduce(key: str, output: torch.Tensor) -> Scores:
            """In the hook: only the units (or directions) asked for, a unit with positions
            by its maximum. Units on the last axis (tokens, channels-last maps) are read in
            place: a projection is one matmul, the maximum runs over contiguous rows."""
            chosen = None if key not in directions else \
                directions[key] if units[key] is None else directions[key][units[key]]
            read = output                 # the layer's own tensor, which later layers may change
            last = output.dim() > 2 and self.infos[key].unit_axis == output.dim() - 1
            if last:
                output = output @ chosen.T if chosen is not None else \
                    output if units[key] is None else output[..., units[key]]
            else:
                output = self._units_first(key, output)
                output = project(output, chosen) if chosen is not None else \
                    output if units[key] is None else output[:, units[key]]
            if output.dim() == 2:
                return Scores(output.clone() if output is read else output)
            return map_scores(output, shortlists.get(key), units_last=last)

        targets = {key: self.modules[key] for key in units}
        with eval_mode(self.model), torch.no_grad():
            return run_forward(self.model, x, targets, reduce, forward=self.forward)

    def outputs(self, x, keys):
        targets = {key: self.modules[self.layer(key).name] for key in keys}
        with eval_mode(self.model):
            found = run_forward(self.model, x, targets, forward=self.forward)
        return {key: self._units_first(key, output) for key, output in found.items()}

    def objective(self, key, units, spatial="mean", *, directions=None, cosine_power=0.0):
        info, module = self.layer(key), self.modules[key]
        check_position(info, spatial)
        targets = {key: module}

        def read(output: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
            """Row n's value of ``units[n]`` from the units-first output, reduced over its
            positions."""
            picked = pick(output, units, directions, cosine_power)
            return reduce_map(picked, spatial) if info.unit_shape else picked

        if affine(module) and not cosine_power and (
                not info.unit_shape or spatial in LINEAR_SPATIAL or not isinstance(spatial, str)):
            # The layer is affine in its input: unit u reads ``row_u . input + offset_u``, so
            # the forward pass stops before the layer, whose own work (64 channels where one
            # is wanted, and its backward) is never done.
            rows, offsets = self._affine_readout(key, units, read)

            def value(x: torch.Tensor) -> torch.Tensor:
                with eval_mode(self.model):
                    inputs = run_forward(self.model, x, targets, at="input",
                                         forward=self.forward)[key]
                return (inputs.flatten(1) * rows).sum(1) + offsets
            return value

        def value(x: torch.Tensor) -> torch.Tensor:
            with eval_mode(self.model):
                output = run_forward(self.model, x, targets, forward=self.forward)[key]
            return read(self._units_first(key, output), units)
        return value

    def _affine_readout(self, key: str, units: torch.Tensor,
                        read: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """For an affine layer, ``(N, D)`` rows and ``(N,)`` offsets with ``read(x) = row .
        input + offset`` per entry of ``units``: the gradient and the value at a zero input
        of the layer alone, one row per distinct unit."""
        module = self.modules[key]
        example = torch.zeros((1, *self.input_shape), device=self.device, dtype=self.dtype)
        with eval_mode(self.model), torch.no_grad():
            shape = run_forward(self.model, example, {key: module}, at="input",
                                forward=self.forward)[key].shape[1:]
        distinct, inverse = units.unique(return_inverse=True)
        zero = torch.zeros((len(distinct), *shape), device=self.device, dtype=self.dtype,
                           requires_grad=True)
        with torch.enable_grad():
            picked = read(self._units_first(key, module(zero)), distinct)
            (rows,) = torch.autograd.grad(picked.sum(), zero)
        return rows.flatten(1)[inverse], picked.detach()[inverse]

    def check_directions(self, key):
        self.layer(key)

    def default_layers(self):
        """Every Conv2d and Linear, in forward order."""
        return self._ordered((nn.Linear, nn.Conv2d))

    def _ordered(self, kind: type) -> list[str]:
        return [key for key in self.infos if isinstance(self.modules[key], kind)]

    def _first(self) -> str | None:
        """The first Linear or Conv2d in forward order: the one that reads the input."""
        ordered = self._ordered((nn.Linear, nn.Conv2d))
        return ordered[0] if ordered else None

    def incoming_weights(self, key):
        module = self._module(key)
        if not isinstance(module, nn.Linear):
            raise UnsupportedError(f"layer {key!r} is a {type(module).__name__}: ranked "
                                   "filters and linear combinations follow nn.Linear weights")
        return module.weight.detach()

    def below(self, key):
        module = self._module(key)
        if key == self._first():
            return None
        if isinstance(module, nn.Linear):
            linears = self._ordered(nn.Linear)
            earlier = linears[:linears.index(key)]
            for candidate in reversed(earlier):
                if self.modules[candidate].out_features == module.in_features:
                    return candidate
            raise UnsupportedError(f"layer {key!r}: no earlier nn.Linear has "
                                   f"{module.in_features} outputs to feed it, so its weights "
                                   "do not connect to a layer featvis can picture")
        raise UnsupportedError(f"layer {key!r} is a {type(module).__name__}: only chains of "
                               "nn.Linear and a first nn.Conv2d have pictures of their weights")

    def filters(self, key):
        module = self._module(key)
        if key != self._first():
            raise UnsupportedError(f"layer {key!r} does not read the input (the first Linear "
                                   f"or Conv2d is {self._first()!r}): it has no filters in "
                                   "input space")
        weight = module.weight.detach()
        if isinstance(module, nn.Conv2d):
            return weight                                  # (units, C_in, kh, kw)
        if module.in_features != math.prod(self.input_shape):
            raise UnsupportedError(f"layer {key!r} takes {module.in_features} features, not the "
                                   f"{math.prod(self.input_shape)} values of one input")
        return weight.reshape(weight.shape[0], *self.input_shape)

    def regions(self, key, positions):
        """The patches of a token or channels-last layer's positions, from the stem: the
        model's first convolution, when it reads the input in patches (its kernel no larger
        than its stride, as a ViT's patch embedding or ConvNeXt's stem). A layer with the
        stem's grid ``(H, W)`` as its positions has one patch per position; a token sequence
        of ``T >= H * W`` tokens has the patches, row by row, as its last ``H * W`` tokens
        and the ``T - H * W`` before them (class, distillation tokens) have none. Other
        layers (channels on axis 1, merged or pooled grids): ``None``."""
        info, stem = self.layer(key), self._stem()
        if stem is None or info.unit_axis == 1:
            return None
        grid, conv = self.infos[stem].unit_shape, self.modules[stem]
        if info.positions_shape == grid:
            rows, cols = positions[..., 0], positions[..., 1]
            patch = torch.ones_like(rows, dtype=torch.bool)
        elif len(info.positions_shape) == 1 and info.positions_shape[0] >= math.prod(grid):
            cell = positions[..., 0] - (info.positions_shape[0] - math.prod(grid))
            patch = cell >= 0
            rows, cols = cell.clamp(min=0) // grid[1], cell.clamp(min=0) % grid[1]
        else:
            return None
        (sh, sw), (kh, kw), (ph, pw) = conv.stride, conv.kernel_size, conv.padding
        boxes = torch.stack([rows * sh - ph, cols * sw - pw, torch.full_like(rows, kh),
                             torch.full_like(rows, kw)], -1)
        return boxes * patch.unsqueeze(-1)

    def _stem(self) -> str | None:
        """The first layer, when it is a Conv2d that cuts the input into patches (kernel no
        larger than stride, no dilation, an input of pictures ``(C, H, W)``)."""
        first = self._first()
        conv = self.modules.get(first) if first is not None else None
        if not (isinstance(conv, nn.Conv2d) and len(self.input_shape or ()) == 3
                and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
                and isinstance(conv.padding, tuple)
                and all(k <= s for k, s in zip(conv.kernel_size, conv.stride))):
            return None
        return first

    def like(self, model):
        twin = ModuleProbe(model, self.input_shape, self.unit_axis, self.forward)
        twin._infos, twin._reasons = self.infos, self._reasons
        return twin

    def randomized(self, key, mode, seed):
        """The weights the layer reads re-drawn (:func:`~featvis.seam.base.redraw`): its
        own (a Linear or Conv, or the weighted modules inside a block), else those of the
        nearest weighted layer before it (a ReLU, pooling or norm reads through them); with
        ``"cascade"`` also every weighted layer before them, in forward order."""
        module = self._module(key)
        if mode not in RANDOMIZATIONS:
            raise ValueError(f"mode must be one of {RANDOMIZATIONS}, got {mode!r}")
        order = list(self.infos)
        weighted = [name for name in order if _has_weights(self.modules[name])]
        own = [name for name in weighted if name == key or name.startswith(f"{key}.")] or \
            [name for name in weighted if order.index(name) < order.index(key)][-1:]
        if not own:
            raise UnsupportedError(f"layer {key!r} is a {type(module).__name__} and no layer "
                                   "at or before it has weights (Linear, Conv) to re-draw")
        below = dict(enumerate(weighted[:weighted.index(own[-1]) + 1]))
        chosen = below if mode == "cascade" else \
            {position: name for position, name in below.items() if name in own}
        return redraw(self.model, {position: f"{name}.weight"
                                    for position, name in chosen.items()}, "cascade", seed)


def affine(module: nn.Module) -> bool:
    """Whether ``module`` is exactly a Linear or Conv (no subclass with its own forward)
    without hooks of its own or global ones: its output is affine in its one input."""
    return (type(module) in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
            and not (module._forward_hooks or module._forward_pre_hooks)
            and not (nn.modules.module._global_forward_hooks
                     or nn.modules.module._global_forward_pre_hooks))


def _has_weights(module: nn.Module) -> bool:
    """Whether ``module`` has a ``weight`` parameter of a Linear or Conv (2 or more dims)."""
    weight = getattr(module, "weight", None)
    return isinstance(weight, nn.Parameter) and weight.dim() >= 2


# The modules whose kind says which axis of the output after them holds the units.
_CHANNELS_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm,
                   nn.modules.instancenorm._InstanceNorm, nn.GroupNorm)
_FEATURES_LAST = (nn.Linear, nn.LayerNorm, nn.Embedding)


def _decided_axis(module: nn.Module | None, shape: tuple[int, ...]) -> int | None:
    """The unit axis of a batched output ``shape`` of 3 or more dims, from the nearest
    module a rule knows that ran at or before the layer: a convolution or a norm over
    channels whose channel count is ``shape[1]`` puts the units on dim 1; a Linear,
    LayerNorm or Embedding whose feature size is the last dimension, on the last axis;
    anything else decides nothing (``None``)."""
    if isinstance(module, _CHANNELS_FIRST):
        channels = getattr(module, "out_channels", None) or getattr(module, "num_features", None) \
            or getattr(module, "num_channels", None)
        return 1 if channels == shape[1] else None
    if isinstance(module, _FEATURES_LAST):
        features = getattr(module, "out_features", None) or \
            getattr(module, "embedding_dim", None) or \
            (module.normalized_shape[-1] if isinstance(module, nn.LayerNorm) and
             len(module.normalized_shape) == 1 else None)
        return len(shape) - 1 if features == shape[-1] else None
    return None


def _given_axis(name: str, axis: int, shape: tuple[int, ...]) -> int:
    """``unit_axis[name]`` as an axis of the batched output (never the batch)."""
    if not -len(shape) < axis < len(shape) or axis % len(shape) == 0:
        raise LayerError(f"unit_axis {name!r}: {axis} is not an axis of its output "
                         f"{shape[1:]} after the batch (1..{len(shape) - 1}, or -1 for the last)")
    return axis % len(shape)


_UNDECIDED = "has output"


def _undecided(name: str, shape: tuple[int, ...]) -> str:
    return (f"{_UNDECIDED} {shape[1:]} and no rule decides which axis holds its units (a "
            f"convolution or channel norm before it: axis 1; a Linear or LayerNorm of the "
            f"last dimension: the last axis): name it, unit_axis={{{name!r}: -1}} or "
            f"--layers {name}@-1 for the last axis")


def discover(model: nn.Module, example_batch: torch.Tensor,
             unit_axis: Mapping[str, int] | None = None, forward: Forward = call
             ) -> tuple[list[LayerInfo], dict[str, str]]:
    """The layers of ``model`` in forward-call order, and why each other module is not one.
    A layer's unit axis is ``unit_axis[name]`` where given, else axis 1 of a 2-D output,
    else what :func:`_decided_axis` reads from the nearest module before it; a layer no rule
    decides is refused by name (never read on a guessed axis). A forward pass
    ``forward(model, x)`` that fails is one line naming the input's shape, what the model's
    first layer expects and how to call a forward that takes something else."""
    unit_axis = dict(unit_axis or {})
    found: dict[str, LayerInfo] = {}
    reasons: dict[str, str] = {}
    started: list[str] = []
    ruled: list[nn.Module] = []           # the modules a rule knows, in order of completion

    def hook_for(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            if isinstance(module, _CHANNELS_FIRST + _FEATURES_LAST):
                ruled.append(module)
            if name in found or name in reasons:
                found.pop(name, None)
                reasons[name] = "runs more than once in one forward pass"
            elif not isinstance(output, torch.Tensor) or output.dim() < 2:
                shape = f" of shape {tuple(output.shape)}" \
                    if isinstance(output, torch.Tensor) else ""
                reasons[name] = f"returns {type(output).__name__}{shape}, not a batch of units"
            else:
                shape = tuple(output.shape)
                axis = _given_axis(name, unit_axis[name], shape) if name in unit_axis else \
                    1 if len(shape) == 2 else _decided_axis(ruled[-1] if ruled else None, shape)
                if axis is None:
                    reasons[name] = _undecided(name, shape)
                    return
                positions = shape[1:axis] + shape[axis + 1:]
                found[name] = LayerInfo(name, type(module).__name__, int(shape[axis]),
                                        positions, shape[1:], axis)
        return hook

    modules = dict(model.named_modules())
    handles = []
    try:
        for name, module in modules.items():
            if name:
                handles.append(module.register_forward_hook(hook_for(name)))
                handles.append(module.register_forward_pre_hook(
                    lambda module, args, name=name: started.append(name)))
        with eval_mode(model), torch.no_grad(), user_code(
                f"the model's forward pass on one input of shape "
                f"{tuple(example_batch.shape[1:])}"):
            forward(model, example_batch)
    except UserCodeError as exc:
        hint = _first_layer(modules, started)
        if not hint and isinstance(exc.__cause__, (TypeError, IndexError, KeyError,
                                                   AttributeError)):
            hint = ("; a forward that takes other than one tensor (a dict, several "
                    "arguments) is called as probe(model, shape, forward=lambda model, x: "
                    "...) says, or --input-key NAME for a dict {NAME: x}")
        raise UserCodeError(f"{exc}{hint}") from exc.__cause__
    finally:
        for handle in handles:
            handle.remove()
    for name in modules:
        if name and name not in found:
            reasons.setdefault(name, "never runs in the model's forward pass")
    stray = sorted(set(unit_axis) - found.keys())
    if stray:
        why = reasons.get(stray[0], "is not a module of the model")
        raise LayerError(f"unit_axis names layer {stray[0]!r}, which {why}")
    return list(found.values()), reasons


def _first_layer(modules: Mapping[str, nn.Module], started: Sequence[str]) -> str:
    """What the first Linear or Conv that ``started`` in a forward pass expects of its input:
    "; its first layer 'conv1', a Conv2d, expects 1 input channel(s) on axis 1"."""
    for name in started:
        module = modules[name]
        if isinstance(module, nn.Linear):
            needs = f"{module.in_features} features on the last axis"
        elif isinstance(module, nn.modules.conv._ConvNd):
            needs = f"{module.in_channels} input channel(s) on axis 1"
        else:
            continue
        return f"; its first layer {name!r}, a {type(module).__name__}, expects {needs}"
    return ""
