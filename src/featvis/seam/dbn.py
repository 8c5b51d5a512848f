"""The probe of a featvis DBN: layers are hidden depths ``1..L``."""

from __future__ import annotations


import torch

from ..models.dbn import DBN
from .base import (Key, LayerError, LayerInfo, Probe, Scores, UnsupportedError, check_position,
                   pick, project, redraw_stack)


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

    def scores(self, x, units, directions=None, shortlists=None):
        out = {}
        h = x
        for d in range(1, max(units) + 1):
            logits = self.dbn.rbms[d - 1].hidden_logits(h)
            if d in units:
                values = logits if directions is None or d not in directions else \
                    project(logits, directions[d])
                out[d] = Scores(values if units[d] is None else values[:, units[d]])
            h = torch.sigmoid(logits)
        return out

    def outputs(self, x, keys):
        depths = {self.layer(key).name for key in keys}
        out, h = {}, x
        for d in range(1, max(depths) + 1):
            logits = self.dbn.rbms[d - 1].hidden_logits(h)
            if d in depths:
                out[d] = logits
            h = torch.sigmoid(logits)
        return out

    def activation(self, key, values):
        return torch.sigmoid(values)

    def objective(self, key, units, spatial="mean", *, directions=None, cosine_power=0.0):
        """A unit's pre-activation (a direction's projection of them), affine in the layer
        below: ``row . h + offset``."""
        check_position(self.layer(key), spatial)
        d = self.layer(key).name
        rbm = self.dbn.rbms[d - 1]

        def below(x: torch.Tensor) -> torch.Tensor:
            return x if d == 1 else self.dbn._up(x, d - 1)

        if cosine_power:
            return lambda x: pick(rbm.hidden_logits(below(x)), units, directions, cosine_power)
        if directions is None:
            rows, offsets = rbm.weight[units], rbm.hidden_bias[units]
        else:
            rows, offsets = directions[units] @ rbm.weight, directions[units] @ rbm.hidden_bias
        return lambda x: (below(x) * rows).sum(1) + offsets

    def check_directions(self, key):
        self.layer(key)

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

    def sample(self, key, units, n_samples, seed, variant="one-hot", **chain):
        return self.dbn.sample(self.layer(key).name, units, n_samples, seed=seed,
                               variant=variant, **chain)

    def like(self, model):
        return DBNProbe(model)

    def randomized(self, key, mode, seed):
        return redraw_stack(self.dbn, self.layer(key).name, mode, seed)
