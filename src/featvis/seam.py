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
pass once the deepest target has run.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .errors import DataError, FeatvisError, UserCodeError, check_int, is_int, user_code
from .units import unit_generator
from .models.cdbn import ConvDBN, block_softmax, log_block_softmax
from .models.dbn import DBN
from .whitening import Whitening

__all__ = ["Key", "LayerInfo", "Scores", "LayerError", "UnsupportedError", "Probe", "probe",
           "layers", "affine", "SPATIAL"]

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
    """A layer as the methods see it: ``units`` along the output's dim 1, each of
    ``unit_shape`` (``()`` for a dense neuron, ``(H, W)`` for a conv channel);
    ``output_shape`` excludes the batch."""

    name: Key
    type: str
    units: int
    unit_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


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

    def check_deconvnet(self, key: Key) -> None:
        """:class:`UnsupportedError` unless deconvnet may project the layer: channels of a
        4-D output (the method itself refuses non-linearities other than ReLUs)."""
        if len(self.layer(key).unit_shape) != 2:
            raise UnsupportedError(f"layer {key!r} has no channel maps (a 4-D output) to "
                                   "project")

    def whitening(self) -> Whitening | None:
        """The whitening the model's inputs went through (natural patches), or ``None``."""
        return None

    def generative(self) -> nn.Module:
        """The generative model that unit sampling draws from."""
        raise UnsupportedError(f"unit sampling needs a generative model (a featvis DBN or "
                               f"ConvDBN); {self.kind} has no p(x | h)")

    def sample(self, key: Key, units: torch.Tensor, n_samples: int, seed: int,
               variant: str = "one-hot") -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(samples, contrast)`` of the model's own top-down sampler for each unit of
        ``units``: ``(U, n_samples, *input_shape)`` drawn with the unit on, and ``(U,
        *input_shape)`` what switching it on changes in the inputs' mean; ``None`` when the
        model has no sampler of its own and :func:`~featvis.methods.sample_unit` draws from
        :meth:`generative` itself (a DBN's one-hot and Gibbs variants)."""
        return None

    def randomized(self, key: Key, mode: str, seed: int) -> nn.Module:
        """A deep copy of the model whose incoming weights of ``key`` (``mode="layer"``), or
        of ``key`` and every weighted layer below it (``"cascade"``), are re-drawn from
        ``N(0, s^2)``, ``s`` the std of each trained tensor; biases kept. For the sanity
        checks of Adebayo et al. (2018); the model itself is never changed."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next((p.device for p in self.model.parameters()), torch.device("cpu"))

    @property
    def dtype(self) -> torch.dtype:
        return next((p.dtype for p in self.model.parameters() if p.is_floating_point()),
                    torch.float32)


RANDOMIZATIONS = ("layer", "cascade")


def _redraw(model: nn.Module, weights: Mapping[int, str], mode: str, seed: int) -> nn.Module:
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


def _redraw_stack(model: nn.Module, depth: int, mode: str, seed: int) -> nn.Module:
    """:func:`_redraw` of a stack of RBMs: the weights ``rbms.{j}.weight`` of layer ``depth``
    (and of the layers below for ``"cascade"``), the layer ``j + 1`` at position ``j``."""
    return _redraw(model, {j: f"rbms.{j}.weight" for j in range(depth)}, mode, seed)


def _unknown(key: object, known: Sequence[Key], what: str) -> LayerError:
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else \
        f"; {what} has {', '.join(map(repr, known[:12]))}{' ...' if len(known) > 12 else ''}"
    return LayerError(f"unknown layer {key!r}{hint}")


# -- DBN -------------------------------------------------------------------------------------
class DBNProbe(Probe):
    """A featvis DBN: layers are hidden depths ``1..L``, ranked by pre-activation."""

    def __init__(self, dbn: DBN) -> None:
        self.model = self.dbn = dbn
        self.input_shape = (dbn.sizes[0],)
        self.kind = f"DBN {'-'.join(map(str, dbn.sizes))}"

    def layer_keys(self) -> list[Key]:
        return list(range(1, self.dbn.n_layers + 1))

    def key_from_text(self, text):
        try:
            return int(text)
        except ValueError:
            raise LayerError(f"layer must be a hidden depth in 1..{self.dbn.n_layers}, got "
                             f"{text!r}") from None

    def layer(self, key: Key) -> LayerInfo:
        d = self.dbn.check_layer(key)
        return LayerInfo(d, "RBM", self.dbn.sizes[d], (), (self.dbn.sizes[d],))

    def scores(self, x, units):
        out = {}
        h = x
        for d in range(1, max(units) + 1):
            logits = self.dbn.rbms[d - 1].hidden_logits(h)
            if d in units:
                out[d] = Scores(logits if units[d] is None else logits[:, units[d]])
            h = torch.sigmoid(logits)
        return out

    def activation(self, key, values):
        return torch.sigmoid(values)

    def objective(self, key, units, spatial="mean"):
        d = self.layer(key).name
        rbm = self.dbn.rbms[d - 1]
        rows, offsets = rbm.weight[units], rbm.hidden_bias[units]

        def value(x: torch.Tensor) -> torch.Tensor:
            h = x if d == 1 else self.dbn._up(x, d - 1)
            return (h * rows).sum(1) + offsets
        return value

    def default_rho(self):
        return self.dbn.input_norm

    def describe(self):
        dbn = self.dbn
        return super().describe() | {
            "sizes": dbn.sizes, "input_norm": dbn.input_norm,
            "recipe": None if dbn.recipe is None else dbn.recipe.to_dict(),
            "history": [rbm.history for rbm in dbn.rbms], "data": dbn.data_info,
            "trained_layers": dbn.trained_layers, "visible": dbn.visible,
            "sigma": dbn.sigma if dbn.visible == "gaussian" else None,
            "whitening": None if dbn.whitening is None else dbn.whitening.config()}

    def whitening(self):
        return self.dbn.whitening

    def incoming_weights(self, key):
        return self.dbn.rbms[self.layer(key).name - 1].weight.detach()

    def below(self, key):
        d = self.layer(key).name
        return None if d == 1 else d - 1

    def filters(self, key):
        if self.below(key) is not None:
            raise UnsupportedError(f"layer {key} is not a first layer: its units see layer "
                                   f"{self.below(key)}, not the input")
        return self.incoming_weights(key)

    def generative(self):
        return self.dbn

    def randomized(self, key, mode, seed):
        return _redraw_stack(self.dbn, self.layer(key).name, mode, seed)


# -- convolutional DBN -----------------------------------------------------------------------
DETECTION = ".detection"       # the suffix of a ConvDBN's detection-layer keys: "2.detection"


class ConvDBNProbe(Probe):
    """A featvis :class:`~featvis.models.ConvDBN`: layer ``d`` (an int) is depth ``d``'s
    pooling layer and ``"d.detection"`` its detection layer; the units are the layer's
    ``K_d`` filters, each a map of probabilities from the deterministic up-pass (every layer
    on the pooling probabilities of the one below), ranked by its maximum."""

    def __init__(self, dbn: ConvDBN, input_shape: Sequence[int] | None = None) -> None:
        self.model = self.dbn = dbn
        shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        if shape is not None and dbn.input_shape is not None and shape != dbn.input_shape:
            raise DataError(f"images: one input has shape {shape}, the convolutional DBN "
                            f"takes {dbn.input_shape}")
        self.input_shape = dbn.input_shape or shape
        self.kind = "ConvDBN " + "-".join(
            f"{s['filters']}x{s['filter_size']}x{s['pool']}" for s in dbn.layer_specs)
        self._maps: list[dict] | None = None

    def layer_keys(self):
        return [key for d in range(1, self.dbn.n_layers + 1) for key in (d, f"{d}{DETECTION}")]

    def default_layers(self):
        """The pooling layers (what the next layer reads)."""
        return list(range(1, self.dbn.n_layers + 1))

    def key_from_text(self, text):
        depth = text.removesuffix(DETECTION)
        if not depth.isdigit():
            raise LayerError(f"layer must be a depth in 1..{self.dbn.n_layers} (its pooling "
                             f"maps) or DEPTH{DETECTION}, got {text!r}")
        return int(depth) if depth == text else f"{int(depth)}{DETECTION}"

    def _depth(self, key: Key) -> tuple[int, bool]:
        """``(depth, whether the detection layer)`` of a layer key (else a LayerError)."""
        detection = isinstance(key, str) and key.endswith(DETECTION)
        depth = key.removesuffix(DETECTION) if detection else key
        if detection and depth.isdigit():
            depth = int(depth)
        if not is_int(depth) or not 1 <= depth <= self.dbn.n_layers:
            raise _unknown(key, self.layer_keys(), self.kind)
        return int(depth), detection

    def layer(self, key):
        d, detection = self._depth(key)
        if self._maps is None:
            if self.input_shape is None:
                raise FeatvisError(f"{self.kind}: untrained and no input_shape; fit it or pass "
                                   "input_shape=")
            self._maps = self.dbn.map_shapes(self.input_shape)
        shape = self._maps[d - 1]["detection" if detection else "pool"]
        units = self.dbn.rbms[d - 1].filters
        return LayerInfo(f"{d}{DETECTION}" if detection else d,
                         f"ConvRBM {'detection' if detection else 'pooling'}", units,
                         tuple(shape), (units, *shape))

    def scores(self, x, units):
        wanted = {key: self._depth(key) for key in units}
        top = max(depth for depth, _ in wanted.values())
        out, pooled = {}, x
        for d, rbm in enumerate(self.dbn.rbms[:top], start=1):     # one pass up the stack
            logits = rbm.hidden_logits(pooled)
            if d < top:
                pooled = block_softmax(logits, rbm.pool)[1]
            here = {key: detection for key, (depth, detection) in wanted.items() if depth == d}
            if here:
                logs = log_block_softmax(logits, rbm.pool)
                for key, detection in here.items():
                    maps = logs[0] if detection else logs[1]
                    out[key] = _map_scores(maps if units[key] is None else maps[:, units[key]])
        return out

    def activation(self, key, values):
        return values.exp()

    def objective(self, key, units, spatial="mean"):
        """The log of the unit's probability over its map, of the mean for ``"mean"`` and
        ``"positive"`` (probabilities have no negative part), of the centre for ``"center"``:
        the same maximizers, and a gradient where a sparse layer's probability underflows."""
        d, detection = self._depth(key)
        rbm = self.dbn.rbms[d - 1]

        def value(x: torch.Tensor) -> torch.Tensor:
            x = self.dbn._inputs(x)
            below = x if d == 1 else self.dbn._up(x, d - 1)[1]
            logs = log_block_softmax(rbm.unit_logits(below, units)[:, None], rbm.pool)
            maps = (logs[0] if detection else logs[1])[:, 0]
            if spatial == "center":
                return _reduce_map(maps, spatial)
            return maps.flatten(1).logsumexp(1) - math.log(maps.shape[1:].numel())
        return value

    def default_rho(self):
        return self.dbn.input_norm

    def describe(self):
        dbn = self.dbn
        recipe = {key: value for key, value in dbn.recipe.items() if key != "history"}
        return super().describe() | {
            "config": dbn.config, "n_layers": dbn.n_layers, "input_norm": dbn.input_norm,
            "recipe": recipe or None, "history": dbn.history, "data": dbn.data_info,
            "trained_layers": dbn.trained_layers, "visible": dbn.visible,
            "sigma": dbn.sigma if dbn.visible == "gaussian" else None,
            "whitening": dbn.data_info.get("whitening")}

    def whitening(self):
        config = self.dbn.data_info.get("whitening")
        return None if config is None else Whitening.from_parts(config, {})

    def incoming_weights(self, key):
        """A filter's connection to each map below: the L2 norm of its ``w x w`` weights on
        that map, ``(K_d, K_{d-1})`` (all positive; ranked filters show the strongest)."""
        return self.dbn.rbms[self._depth(key)[0] - 1].weight.detach().flatten(2).norm(dim=2)

    def below(self, key):
        d = self._depth(key)[0]
        return None if d == 1 else d - 1

    def filters(self, key):
        if self.below(key) is not None:
            raise UnsupportedError(f"layer {key} is not a first layer: its filters read layer "
                                   f"{self.below(key)}'s maps, not the input")
        return self.dbn.rbms[0].weight.detach()

    def bases(self, key):
        """:meth:`ConvDBN.bases`: above the first layer, each filter's positive weights
        upsampled by the pooling below and convolved with the bases below (Lee et al. 2009's
        display of second-layer bases)."""
        return self.dbn.bases(self._depth(key)[0])

    def check_deconvnet(self, key):
        self._depth(key)
        raise UnsupportedError("a convolutional DBN's maps are probabilities of probabilistic "
                               "max-pooling (block softmaxes), not a ReLU network's: "
                               "deconvnet's rectified backward pass does not apply")

    def generative(self):
        return self.dbn

    def sample(self, key, units, n_samples, seed, variant="one-hot"):
        """:meth:`ConvDBN.sample` with the centre pooling unit of each filter's map clamped
        on (one generator seeded by ``seed`` for all the units asked for, as
        :meth:`ConvDBN.sample` draws them), and as contrast :meth:`ConvDBN.contrast`, the
        mean-field down-pass with the unit on minus with it off: a sparse layer's blocks are
        mostly off in any one draw, so the draws' average misses (often entirely) what a unit
        adds. A detection layer's unit is sampled the same way: its block's pooling unit on
        is one detection unit on."""
        if variant != "one-hot":
            raise UnsupportedError(f"variant {variant!r}: a convolutional DBN is sampled by "
                                   "its top-down pass with one pooling unit clamped "
                                   "(variant 'one-hot'); Gibbs chains are for DBNs")
        d = self._depth(key)[0]
        drawn = self.dbn.sample(d, units, n_samples, seed=seed, input_shape=self.input_shape)
        return drawn, self.dbn.contrast(d, units, input_shape=self.input_shape)

    def randomized(self, key, mode, seed):
        return _redraw_stack(self.dbn, self._depth(key)[0], mode, seed)


# -- any nn.Module ---------------------------------------------------------------------------
@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode (dropout off, BatchNorm running statistics), every submodule's
    mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


class _Stop(Exception):
    """Raised by a hook once every target has run: the rest of the forward is not needed."""


@contextlib.contextmanager
def capture(targets: Mapping[str, nn.Module], *,
            reduce: Callable[[str, torch.Tensor], object] | None = None, at: str = "output"
            ) -> Iterator[dict[str, object]]:
    """Hooks on ``targets`` (name -> module) only, always removed on exit; yields the dict
    that each forward fills with copies of their outputs (``at="input"``: of their one
    input, caught before the module runs), or with ``reduce(name, tensor)`` computed inside
    the hook (new tensors, so no copy is needed either way: a later in-place op cannot
    change them). The forward pass ends (by :class:`_Stop`, which :func:`run_forward`
    catches) once all have been read."""
    captured: dict[str, object] = {}

    def read(name: str, value: object, what: str) -> None:
        if name in captured:
            raise FeatvisError(f"layer {name!r} runs twice in one forward pass; featvis "
                               "reads one output per layer (pick a module that runs once)")
        if not isinstance(value, torch.Tensor):
            raise FeatvisError(f"layer {name!r} {what} {type(value).__name__}, not one tensor")
        captured[name] = value.clone() if reduce is None else reduce(name, value)
        if len(captured) == len(targets):
            raise _Stop

    def hook_for(name: str):
        if at == "input":
            return lambda module, args: read(name, args[0] if len(args) == 1 else args,
                                             "takes")
        return lambda module, args, output: read(name, output, "returns")

    handles = []
    try:
        for name, module in targets.items():
            register = (module.register_forward_pre_hook if at == "input"
                        else module.register_forward_hook)
            handles.append(register(hook_for(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def run_forward(model: nn.Module, x: torch.Tensor, targets: Mapping[str, nn.Module],
                reduce: Callable[[str, torch.Tensor], object] | None = None, *,
                at: str = "output") -> dict:
    """The outputs (or inputs, see :func:`capture`) of ``targets`` for input ``x``, or their
    ``reduce``, from one (truncated) forward pass."""
    with capture(targets, reduce=reduce, at=at) as captured, \
            user_code(f"the model's forward pass on inputs of shape {tuple(x.shape)}"):
        try:
            model(x)
        except _Stop:
            pass
    missing = [name for name in targets if name not in captured]
    if missing:
        raise FeatvisError(f"layer {missing[0]!r} never ran in the model's forward pass")
    return captured


def _map_scores(maps: torch.Tensor) -> Scores:
    """A channel's score: the maximum of its map ``(N, U, *map)`` and its flat position (the
    first maximum, row-major)."""
    values, positions = maps.flatten(2).max(2)
    return Scores(values, positions)


def _reduce_map(output: torch.Tensor, spatial: str) -> torch.Tensor:
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


class ModuleProbe(Probe):
    """Any ``nn.Module``: layers by dotted module name, discovered by one forward pass on a
    zero input of ``input_shape``."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int] | None) -> None:
        self.model = model
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.kind = type(model).__name__
        self.modules = dict(model.named_modules())
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
            found, self._reasons = _discover(self.model, example)
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
                raise LayerError(f"layer {key!r} {self._reasons[key]}; featvis reads layers "
                                 "that return one tensor once per forward pass")
            raise _unknown(key, list(self.infos), self.kind)
        return self.infos[key]

    def scores(self, x, units):
        def reduce(key: str, output: torch.Tensor) -> Scores:
            """In the hook: only the units asked for, a channel by its maximum."""
            if units[key] is not None:
                output = output[:, units[key]]
            return Scores(output.clone()) if output.dim() == 2 else _map_scores(output)

        targets = {key: self.modules[key] for key in units}
        with eval_mode(self.model), torch.no_grad():
            return run_forward(self.model, x, targets, reduce)

    def objective(self, key, units, spatial="mean"):
        info, module = self.layer(key), self.modules[key]
        targets = {key: module}
        if affine(module) and (not info.unit_shape or spatial in LINEAR_SPATIAL):
            # The layer is affine in its input: unit u reads ``row_u . input + offset_u``, so
            # the forward pass stops before the layer, whose own work (64 channels where one
            # is wanted, and its backward) is never done.
            rows, offsets = self._affine_readout(key, units, spatial)

            def value(x: torch.Tensor) -> torch.Tensor:
                with eval_mode(self.model):
                    inputs = run_forward(self.model, x, targets, at="input")[key]
                return (inputs.flatten(1) * rows).sum(1) + offsets
            return value

        def value(x: torch.Tensor) -> torch.Tensor:
            with eval_mode(self.model):
                output = run_forward(self.model, x, targets)[key]
            picked = output[torch.arange(len(units), device=output.device), units]
            return _reduce_map(picked, spatial) if info.unit_shape else picked
        return value

    def _affine_readout(self, key: str, units: torch.Tensor, spatial: str
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """For an affine layer, ``(N, D)`` rows and ``(N,)`` offsets with ``unit(x) = row .
        input + offset`` per entry of ``units``: the gradient and the value at a zero input
        of the layer alone, one row per distinct unit."""
        module = self.modules[key]
        example = torch.zeros((1, *self.input_shape), device=self.device, dtype=self.dtype)
        with eval_mode(self.model), torch.no_grad():
            shape = run_forward(self.model, example, {key: module}, at="input")[key].shape[1:]
        distinct, inverse = units.unique(return_inverse=True)
        zero = torch.zeros((len(distinct), *shape), device=self.device, dtype=self.dtype,
                           requires_grad=True)
        with torch.enable_grad():
            output = module(zero)
            picked = _reduce_map(output[torch.arange(len(distinct)), distinct], spatial)
            (rows,) = torch.autograd.grad(picked.sum(), zero)
        return rows.flatten(1)[inverse], picked.detach()[inverse]

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

    def randomized(self, key, mode, seed):
        module = self._module(key)
        if not _has_weights(module):
            raise UnsupportedError(f"layer {key!r} is a {type(module).__name__}: it has no "
                                   "weight parameter of 2 or more dims (Linear, Conv) to "
                                   "re-draw")
        weighted = [name for name in self.infos if _has_weights(self.modules[name])]
        below = weighted[:weighted.index(key) + 1]
        return _redraw(self.model, {position: f"{name}.weight"
                                    for position, name in enumerate(below)}, mode, seed)


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


def _discover(model: nn.Module, example_batch: torch.Tensor
              ) -> tuple[list[LayerInfo], dict[str, str]]:
    """The layers of ``model`` in forward-call order, and why each other module is not one.
    A forward pass that fails is one line naming the input's shape and what the model's
    first layer expects."""
    found: dict[str, LayerInfo] = {}
    reasons: dict[str, str] = {}
    started: list[str] = []

    def hook_for(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            if name in found or name in reasons:
                found.pop(name, None)
                reasons[name] = "runs more than once in one forward pass"
            elif not isinstance(output, torch.Tensor) or output.dim() < 2:
                shape = f" of shape {tuple(output.shape)}" \
                    if isinstance(output, torch.Tensor) else ""
                reasons[name] = f"returns {type(output).__name__}{shape}, not a batch of units"
            else:
                found[name] = LayerInfo(name, type(module).__name__, int(output.shape[1]),
                                        tuple(output.shape[2:]), tuple(output.shape[1:]))
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
            model(example_batch)
    except UserCodeError as exc:
        raise UserCodeError(f"{exc}{_first_layer(modules, started)}") from exc.__cause__
    finally:
        for handle in handles:
            handle.remove()
    for name in modules:
        if name and name not in found:
            reasons.setdefault(name, "never runs in the model's forward pass")
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
    return _discover(model, example_batch)[0]


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
