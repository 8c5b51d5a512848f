"""The probe of a featvis ConvDBN: pooling layers ``d`` and detection layers ``"d.detection"``."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import DataError, FeatvisError, is_int
from ..models.conv.cdbn import ConvDBN
from ..models.conv.pooling import block_softmax, log_block_softmax
from ..data.whitening import Whitening
from .base import (Key, LayerError, LayerInfo, Probe, UnsupportedError, check_position,
                   map_scores, redraw_stack, reduce_map, unknown_layer)


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
            raise unknown_layer(key, self.layer_keys(), self.kind)
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

    def scores(self, x, units, directions=None, shortlists=None):
        for key in directions or ():
            self.check_directions(key)
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
                    out[key] = map_scores(maps if units[key] is None else maps[:, units[key]],
                                          (shortlists or {}).get(key))
        return out

    def activation(self, key, values):
        return values.exp()

    def objective(self, key, units, spatial="mean", *, directions=None, cosine_power=0.0):
        """The log of the unit's probability over its map, of the mean for ``"mean"`` and
        ``"positive"`` (probabilities have no negative part), of the centre for ``"center"``
        (of that position for an index): the same maximizers, and a gradient where a sparse
        layer's probability underflows."""
        if directions is not None or cosine_power:
            self.check_directions(key)
        check_position(self.layer(key), spatial)
        d, detection = self._depth(key)
        rbm = self.dbn.rbms[d - 1]

        def value(x: torch.Tensor) -> torch.Tensor:
            x = self.dbn._inputs(x)
            below = x if d == 1 else self.dbn._up(x, d - 1)[1]
            logs = log_block_softmax(rbm.unit_logits(below, units)[:, None], rbm.pool)
            maps = (logs[0] if detection else logs[1])[:, 0]
            if spatial not in ("mean", "positive"):
                return reduce_map(maps, spatial)
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

    def _bases_reason(self, key):
        self._depth(key)
        return None                     # its own bases, at every depth

    def check_deconvnet(self, key):
        self._depth(key)
        raise UnsupportedError("a convolutional DBN's maps are probabilities of probabilistic "
                               "max-pooling (block softmaxes), not a ReLU network's: "
                               "deconvnet's rectified backward pass does not apply")

    def generative(self):
        return self.dbn

    def sample(self, key, units, n_samples, seed, variant="one-hot", **chain):
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

    def like(self, model):
        twin = ConvDBNProbe(model, self.input_shape)
        twin._maps = self._maps
        return twin

    def randomized(self, key, mode, seed):
        return redraw_stack(self.dbn, self._depth(key)[0], mode, seed)
