"""The convolutional DBN: convolutional RBMs stacked from the input up, each trained greedily
on the pooling probabilities of the one below (Lee et al. 2009)."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import DataError, is_int
from ...params import check_int
from ..training import TrainingRecipe
from ..codec import read_model, save_model
from ..stack import Stack
from .crbm import ConvRBM, check_maps, conv_recipe, fit_conv_rbm
from .pooling import block_softmax, sample_blocks


MAX_LAYERS = 16         # layers of a ConvDBN
MAX_SIDE = 2 ** 16      # largest input side a config may record
LAYER_KEYS = ("filters", "filter_size", "pool")


# -- the stack -------------------------------------------------------------------------------
def _layer_specs(layers: object) -> list[dict[str, int]]:
    """``layers`` as a list of ``{"filters", "filter_size", "pool"}`` dicts of positive ints,
    else ``ValueError``."""
    if isinstance(layers, (str, bytes, dict)) or not isinstance(layers, Iterable):
        raise ValueError(f"layers must be a list of dicts with {', '.join(LAYER_KEYS)}, "
                         f"got {layers!r}")
    specs = list(layers)
    if not 1 <= len(specs) <= MAX_LAYERS:
        raise ValueError(f"a ConvDBN has 1 to {MAX_LAYERS} layers, got {len(specs)}")
    out = []
    for d, spec in enumerate(specs, start=1):
        if not isinstance(spec, dict) or set(spec) != set(LAYER_KEYS):
            raise ValueError(f"layer {d} must be a dict with exactly {', '.join(LAYER_KEYS)}, "
                             f"got {spec!r}")
        out.append({key: check_int(f"layer {d} {key}", spec[key]) for key in LAYER_KEYS})
    return out



class ConvDBN(Stack, nn.Module):
    """A stack of :class:`ConvRBM` s trained greedily, layer ``d`` on the pooling
    probabilities of layer ``d - 1`` (Lee et al. 2009).

    Depths are ``d = 1..L`` from the input. Layer 1 has ``channels`` input maps and the
    ``visible`` kind; layer ``d > 1`` has binary inputs, the ``filters`` of layer ``d - 1``.

    Args:
        layers: ``[{"filters": K, "filter_size": w, "pool": C}, ...]`` from the input up.
        channels, visible, sigma: the input's channels and units (see :class:`ConvRBM`).
        seed: layer ``d`` is initialised from ``seed + d`` (``None``: uninitialised).
        input_shape: one input's ``(C, H, W)``, else recorded by :meth:`fit`.

    Attributes:
        rbms: ``nn.ModuleList``; ``rbms[d - 1]`` is layer ``d``.
        input_shape: ``(C, H, W)`` of the training inputs (``None`` before :meth:`fit`).
        input_norm: mean L2 norm of the training inputs (buffer ``_input_norm``, NaN:
            unknown), the default radius of activation maximization.
        data_info, recipe, test_accuracy: dicts saved with the model (``recipe``: the
            training recipe's fields and ``history``, one list of epochs per layer).
    """

    kind = "cdbn"

    def __init__(self, layers: Sequence[dict], *, channels: int = 1, visible: str = "binary",
                 sigma: float = 1.0, seed: int | None = 0,
                 input_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.layer_specs = _layer_specs(layers)
        channels = check_int("channels", channels)
        seed = None if seed is None else check_int("seed", seed, minimum=None)
        rbms, below = [], channels
        for d, spec in enumerate(self.layer_specs, start=1):
            rbms.append(ConvRBM(below, spec["filters"], spec["filter_size"], spec["pool"],
                                seed=None if seed is None else seed + d,
                                **(dict(visible=visible, sigma=sigma) if d == 1 else {})))
            below = spec["filters"]
        self.rbms = nn.ModuleList(rbms)
        self.register_buffer("_input_norm", torch.tensor(float("nan")))
        self.input_shape: tuple[int, int, int] | None = None
        if input_shape is not None:
            self.input_shape = self._check_input_shape(input_shape)
        self.data_info: dict = {}
        self.recipe: dict = {}
        self.test_accuracy: dict = {}

    # -- description -------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return self.rbms[0].channels

    @property
    def history(self) -> list[list[dict]]:
        """Per layer, its training epochs (from :attr:`recipe` after a checkpoint load)."""
        if any(rbm.history for rbm in self.rbms):
            return [list(rbm.history) for rbm in self.rbms]
        return [list(h) for h in self.recipe.get("history", [[] for _ in self.rbms])]

    @property
    def config(self) -> dict:
        """All a ``featvis.model/1`` checkpoint needs to rebuild the model (JSON-ready)."""
        return {"layers": [dict(spec) for spec in self.layer_specs], "channels": self.channels,
                "visible": self.visible, "sigma": self.rbms[0].initial_sigma,
                "input_shape": None if self.input_shape is None else list(self.input_shape)}

    @classmethod
    def from_config(cls, config: dict, *, seed: int | None = None) -> "ConvDBN":
        """The model a checkpoint's ``config`` describes; ``ValueError`` if it is not one."""
        keys = {"layers", "channels", "visible", "sigma", "input_shape"}
        if not isinstance(config, dict) or set(config) != keys:
            raise ValueError("config must hold exactly " + ", ".join(sorted(keys)) + ", got "
                             f"{sorted(config) if isinstance(config, dict) else config!r}")
        return cls(config["layers"], channels=config["channels"], visible=config["visible"],
                   sigma=config["sigma"], seed=seed, input_shape=config["input_shape"])

    def extra_repr(self) -> str:
        text = ", ".join(f"{s['filters']}x{s['filter_size']}/{s['pool']}"
                         for s in self.layer_specs)
        return f"layers=[{text}], channels={self.channels}" + (
            f", visible={self.visible!r}" if self.visible != "binary" else "")

    def check_depth(self, depth: int) -> int:
        """``depth`` as an ``int`` if it is a layer ``1..L``, else ``ValueError``."""
        if not is_int(depth) or not 1 <= depth <= self.n_layers:
            raise ValueError(f"depth must be a layer in 1..{self.n_layers}, got {depth!r}")
        return int(depth)

    def _check_input_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        values = list(shape) if isinstance(shape, (list, tuple, torch.Size)) else []
        if len(values) != 3 or not all(is_int(s) and 1 <= s <= MAX_SIDE for s in values):
            raise ValueError(f"input_shape must be (C, H, W) of positive integers up to "
                             f"{MAX_SIDE}, got {shape!r}")
        shape = tuple(int(s) for s in values)
        if shape[0] != self.channels:
            raise ValueError(f"input_shape {shape} has {shape[0]} channels, the model takes "
                             f"{self.channels}")
        self.map_shapes(shape)                    # big enough for every layer
        return shape

    def map_shapes(self, input_shape: Sequence[int] | None = None) -> list[dict]:
        """Per layer, :meth:`ConvRBM.map_shapes` for ``input_shape`` (default: the model's),
        plus ``input``: the full size of the layer's input map."""
        shape = self.input_shape if input_shape is None else tuple(input_shape)
        if shape is None:
            raise ValueError("the model has no input_shape yet: fit it or pass input_shape")
        size, out = tuple(shape[1:]), []
        for d, rbm in enumerate(self.rbms, start=1):
            try:
                maps = rbm.map_shapes(*size)
            except DataError as exc:
                raise DataError(f"layer {d}: {exc}") from None
            out.append({"input": size, **maps})
            size = maps["pool"]
        return out

    # -- up-pass -----------------------------------------------------------------------------
    def _inputs(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """``x`` as ``(N, C, H, W)`` on the model's device and dtype: 4-D, or flat ``(N, C *
        H * W)`` when the model knows its input shape (or the maps are square)."""
        if isinstance(x, torch.Tensor) and x.dim() == 2:
            shape = self.input_shape
            side = math.isqrt(x.shape[1] // self.channels) if x.shape[1] else 0
            if shape is None and self.channels * side * side == x.shape[1]:
                shape = (self.channels, side, side)
            if shape is None or math.prod(shape) != x.shape[1]:
                raise DataError(f"{name}: cannot read flat inputs of width {x.shape[1]} as "
                                f"({self.channels}, H, W) maps; pass (N, C, H, W)")
            x = x.reshape(-1, *shape)
        x = check_maps(x, self.channels, unit_range=False, name=name)
        p = self.rbms[0].weight
        return x.to(p.device, p.dtype)

    def _up(self, x: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(detection probs, pool probs)`` of layer ``depth`` for checked ``x``."""
        pool = x
        for rbm in self.rbms[:depth]:
            det, pool = rbm.probs(pool)
        return det, pool

    def transform(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        """Pooling probabilities ``(N, K_d, Hp, Wp)`` of layer ``depth`` (the deterministic
        up-pass, each layer on the pooling probabilities of the one below); differentiable
        with respect to ``x`` (the parameters need no gradient)."""
        depth = self.check_depth(depth)
        return self._up(self._inputs(x), depth)[1]

    def detection(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        """Detection probabilities ``(N, K_d, Hd, Wd)`` of layer ``depth``."""
        depth = self.check_depth(depth)
        return self._up(self._inputs(x), depth)[0]

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Pooling probabilities of layer ``depth`` (default: the top)."""
        return self.transform(x, self.n_layers if depth is None else depth)

    # -- training ----------------------------------------------------------------------------
    def fit(self, images: torch.Tensor, epochs: int = 10, batch_size: int | None = None, *,
            seed: int = 0, progress: bool = True, resume: bool = False,
            on_layer: Callable[["ConvDBN", int], None] | None = None,
            on_epoch: Callable[[int, dict], None] | None = None,
            **recipe) -> "ConvDBN":
        """Greedy layer-wise training: layer ``d`` is reset from ``seed + d`` and trained
        with CD (see :meth:`ConvRBM.fit`) by ``recipe.for_layer(d)`` (the recipe with its
        ``layers[d - 1]`` overrides; the sigma schedule applies to a Gaussian first layer
        only) on the pooling probabilities of the trained layer ``d - 1``.
        ``images`` are ``(N, C, H, W)`` (or flat, square maps), in [0, 1] for binary inputs.
        Records :attr:`input_shape`, :attr:`input_norm` and :attr:`recipe`; ``on_epoch(d,
        entry)`` runs after each epoch of layer ``d``, ``on_layer(self, d)`` after each layer
        trained (e.g. to save a checkpoint). With ``resume`` the layers already trained
        (:attr:`trained_layers`, e.g. of a checkpoint saved by ``on_layer``) are kept and only
        read: the result equals an uninterrupted run's, and a recipe or input shape other
        than theirs is a ``ValueError``. Returns ``self``."""
        recipe = conv_recipe(self.visible, epochs=epochs, batch_size=batch_size, seed=seed,
                             **recipe)
        images = self._inputs(images, "images")
        if self.visible == "binary":
            check_maps(images, self.channels, unit_range=True)
        done = self.trained_layers if resume else 0
        if done:
            self._check_resume(recipe, tuple(images.shape[1:]))
        self.input_shape = self._check_input_shape(tuple(images.shape[1:]))
        self.input_norm = images.flatten(1).norm(dim=1).mean().item()
        kept = self.recipe.get("history", []) if done else []
        history: list[list[dict]] = [list(kept[d]) if d < done else [] for d in
                                     range(self.n_layers)]
        for rbm, epochs in zip(self.rbms[:done], history):
            rbm.history = [dict(entry) for entry in epochs]      # as if trained just now
        self.recipe = {**recipe.to_dict(), "history": history}
        features = images
        with torch.no_grad():
            for d, rbm in enumerate(self.rbms, start=1):
                if done == self.n_layers:
                    break                       # nothing left to train: no up-pass needed
                if d > done:
                    layer_recipe = dataclasses.replace(recipe.for_layer(d), seed=recipe.seed + d)
                    rbm.reset_parameters(layer_recipe.seed)
                    fit_conv_rbm(rbm, features, layer_recipe, progress=progress,
                                 description=f"layer {d}/{self.n_layers}",
                                 on_epoch=None if on_epoch is None else
                                 (lambda entry, d=d: on_epoch(d, entry)))
                    history[d - 1].extend(rbm.history)
                if d < self.n_layers:
                    features = torch.cat([rbm.pool_probs(chunk)
                                          for chunk in features.split(recipe.batch_size)])
                if d > done and on_layer is not None:
                    on_layer(self, d)
        return self

    @property
    def trained_layers(self) -> int:
        """How many layers, from the bottom, have finished training (recorded in
        :attr:`recipe`'s history when a layer ends; 0 before :meth:`fit`)."""
        history = self.recipe.get("history") or []
        return next((d for d, epochs in enumerate(history) if not epochs), len(history))

    def _check_resume(self, recipe: TrainingRecipe, shape: tuple[int, ...]) -> None:
        """``ValueError`` unless the trained layers were trained by ``recipe`` on inputs of
        ``shape``, so that resuming continues the same run."""
        saved = {key: value for key, value in self.recipe.items() if key != "history"}
        wanted = recipe.to_dict()
        changed = [f"{key} {saved.get(key)!r}, not {wanted[key]!r}" for key in wanted
                   if saved.get(key) != wanted[key]]
        if changed:
            raise ValueError(f"resume: layers 1..{self.trained_layers} were trained with "
                             f"another recipe ({'; '.join(changed)})")
        if self.input_shape != shape:
            raise ValueError(f"resume: layers 1..{self.trained_layers} were trained on inputs "
                             f"of shape {self.input_shape}, not {shape}")

    # -- top-down ----------------------------------------------------------------------------
    def sample(self, depth: int, units: Sequence[int] | torch.Tensor | None = None,
               n_samples: int = 10, *, seed: int = 0, mean_field: bool = False,
               input_shape: Sequence[int] | None = None, unit_on: bool = True
               ) -> torch.Tensor:
        """``E[v | ...]``, ``(U, n_samples, C, H, W)``: inputs that the pooling unit at the
        centre block (``((Hp - 1) // 2, (Wp - 1) // 2)``) of filter ``u``'s map at ``depth``
        draws, for every ``u`` of ``units`` (default: all filters).

        An ancestral down-pass: at ``depth`` that pooling unit is clamped on and every other
        one off, so its block has one detection unit on, drawn from the block softmax of the
        hidden biases conditioned on the pool state. Each layer below receives top-down
        input ``b + W (*) h`` (the layer above's visible bias and transposed convolution) at
        its pooling units, which :func:`block_softmax` adds to its blocks' logits (its own
        hidden biases: no input from further below), and its detection units are sampled,
        one multinomial per block. The result is the visible mean given the first layer's
        sample (bias only at the cropped border). ``mean_field`` propagates probabilities
        instead of samples (every sample is then the same). All units and samples run as one
        batch from a generator seeded by ``seed``. ``unit_on=False`` clamps that pooling unit
        off too (the whole layer off) and draws the same random numbers: the baseline whose
        mean a sample's mean is contrasted with.
        """
        n_samples = check_int("n_samples", n_samples)
        seed = check_int("seed", seed, minimum=None)
        depth, units, maps = self._down_pass_args(depth, units, input_shape)
        p = self.rbms[0].weight
        generator = torch.Generator(device=p.device).manual_seed(seed)
        with torch.no_grad():
            rows = units.to(p.device).repeat_interleave(n_samples)         # (U * n,)
            h = self._down_pass(depth, rows, 1.0 if unit_on else 0.0, generator, mean_field,
                                maps)
            v = self.rbms[0].visible_mean(h, maps[0]["input"])
        return v.view(len(units), n_samples, *v.shape[1:])

    def contrast(self, depth: int, units: Sequence[int] | torch.Tensor | None = None, *,
                 input_shape: Sequence[int] | None = None) -> torch.Tensor:
        """``E[v | unit on] - E[v | unit off]`` of the mean-field down-pass (see :meth:`sample`),
        ``(U, C, H, W)``: what switching filter ``u``'s centre pooling unit on adds to the
        visible mean. Computed from the first layer's change of detection probabilities
        (``W (*) dh``, times sigma for Gaussian units; for binary ones ``sigmoid(y) -
        sigmoid(x) = sigmoid(y) sigmoid(-x) (1 - e^(x - y))``, or its mirror image where
        ``y < x``), never as the difference of the
        two means: below a sparse first layer both means differ from the visible bias by
        far less than float32 resolves of it (e^-50 against 1e-4), so that difference is
        exactly 0. (``dh`` is the difference of the two passes' probabilities, as precise as
        float32 resolves the change that the unit's top-down input makes to them.)"""
        depth, units, maps = self._down_pass_args(depth, units, input_shape)
        first, size = self.rbms[0], maps[0]["input"]
        with torch.no_grad():
            rows = units.to(first.weight.device).repeat(2)
            on = torch.arange(len(rows), device=rows.device) < len(units)
            h = self._down_pass(depth, rows, on.to(first.weight.dtype), None, True, maps)
            h_on, h_off = h.chunk(2)
            change = first.visible_input(h_on - h_off, size)
            if first.visible == "gaussian":
                return change.mul_(first.sigma)
            x = first.visible_input(h_off, size).add_(first.visible_bias[:, None, None])
            y = x + change          # the form whose factors stay finite for change's sign
            return torch.where(change >= 0,
                               torch.sigmoid(y) * torch.sigmoid(-x) * -torch.expm1(-change),
                               -torch.sigmoid(x) * torch.sigmoid(-y) * -torch.expm1(change))

    def _down_pass_args(self, depth: int, units: object, input_shape: object
                        ) -> tuple[int, torch.Tensor, list[dict]]:
        """Checked ``(depth, units, maps)`` of a down-pass (units default to all filters)."""
        depth = self.check_depth(depth)
        if input_shape is not None:
            input_shape = self._check_input_shape(input_shape)
        filters = self.rbms[depth - 1].filters
        units = torch.arange(filters) if units is None else torch.as_tensor(units)
        if units.dim() != 1 or units.is_floating_point() or units.dtype == torch.bool or \
                units.numel() == 0 or \
                units.min() < 0 or units.max() >= filters:
            raise ValueError(f"units must be a non-empty list of filters in 0..{filters - 1}")
        return depth, units, self.map_shapes(input_shape)

    def _down_pass(self, depth: int, rows: torch.Tensor, on: float | torch.Tensor,
                   generator: torch.Generator | None, mean_field: bool, maps: list[dict]
                   ) -> torch.Tensor:
        """The first layer's detection states (or probabilities) of the down-pass from the
        centre pooling unit of filter ``rows[i]`` at ``depth`` clamped to ``on`` (per row or
        for all) and every other one off."""
        filters = self.rbms[depth - 1].filters
        hp, wp = maps[depth - 1]["pool"]
        state = self.rbms[0].weight.new_zeros(len(rows), filters, hp, wp)
        state[torch.arange(len(rows), device=rows.device), rows, (hp - 1) // 2,
              (wp - 1) // 2] = on
        h = self._draw(depth, None, state, generator, mean_field, maps)
        for d in range(depth - 1, 0, -1):
            above = self.rbms[d]
            top_down = above.visible_input(h, maps[d]["input"])
            top_down += above.visible_bias[:, None, None]
            h = self._draw(d, top_down, None, generator, mean_field, maps)
        return h

    def _draw(self, depth: int, top_down: torch.Tensor | None, state: torch.Tensor | None,
              generator: torch.Generator, mean_field: bool, maps: list[dict]) -> torch.Tensor:
        """Detection units of layer ``depth`` given only their biases, a ``top_down`` input
        and/or a pooling ``state``: probabilities, or one multinomial sample per block."""
        rbm = self.rbms[depth - 1]
        hd, wd = maps[depth - 1]["detection"]
        ref = top_down if top_down is not None else state
        if top_down is not None:
            top_down = top_down[:, :, :hd // rbm.pool, :wd // rbm.pool]
        logits = rbm.hidden_bias[:, None, None].expand(rbm.filters, hd, wd)
        logits = logits.expand(ref.shape[0], -1, -1, -1)
        probs, _ = block_softmax(logits, rbm.pool, top_down, state)
        if mean_field:
            return probs
        return sample_blocks(probs, rbm.pool, generator, pool_state=state)[0]

    def bases(self, depth: int) -> torch.Tensor:
        """Layer ``depth``'s filters as input pictures, ``(K_d, C, s, s)``: the first layer's
        weights; above, each filter's positive weights upsampled by the pooling factor below
        (spread evenly over each block) and convolved (transposed) with the bases of the
        layer below, i.e. a weighted sum of shifted lower bases (Lee et al.'s figures)."""
        depth = self.check_depth(depth)
        with torch.no_grad():
            pictures = self.rbms[0].weight.detach().clone()
            for d in range(2, depth + 1):
                c = self.rbms[d - 2].pool
                w = self.rbms[d - 1].weight.detach().clamp_min(0)
                w = w.repeat_interleave(c, 2).repeat_interleave(c, 3).div_(c * c)
                pictures = F.conv_transpose2d(w, pictures)
            return pictures

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write a ``featvis.model/1`` checkpoint (kind ``"cdbn"``) atomically."""
        save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "ConvDBN":
        """Read a checkpoint written by :meth:`save` (never unpickles), in eval mode;
        :class:`~featvis.CheckpointError` if the file is not one."""
        return read_model(cls, path, device)
