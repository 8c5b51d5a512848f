"""Bernoulli-Bernoulli restricted Boltzmann machine as an ``nn.Module``.

Parameters follow ``nn.Linear``: ``weight`` is ``(n_hidden, n_visible)``, so the hidden
pre-activation is ``v @ weight.T + hidden_bias``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_int
from ..train import TrainingRecipe, fit_rbm

__all__ = ["RBM"]


class RBM(nn.Module):
    """Binary RBM with energy ``E(v, h) = -v.b - h.c - h W v``.

    Args:
        n_visible: number of visible units.
        n_hidden: number of hidden units.
        seed: seed of the initial weights ``0.1 * randn`` (biases start at 0).
    """

    def __init__(self, n_visible: int, n_hidden: int, *, seed: int | None = 0) -> None:
        super().__init__()
        n_visible, n_hidden = check_int("n_visible", n_visible), check_int("n_hidden", n_hidden)
        seed = None if seed is None else check_int("seed", seed, minimum=None)
        self.n_visible, self.n_hidden = n_visible, n_hidden
        self.weight = nn.Parameter(torch.empty(n_hidden, n_visible), requires_grad=False)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible), requires_grad=False)
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden), requires_grad=False)
        self.history: list[dict[str, float]] = []
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int | None = 0) -> None:
        """Weights ``0.1 * randn`` from ``seed`` (Hinton's rbm.m), biases zero."""
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.weight.device).manual_seed(seed)
        with torch.no_grad():
            self.weight.normal_(0.0, 0.1, generator=generator)
            self.visible_bias.zero_()
            self.hidden_bias.zero_()
        self.history = []

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}"

    # -- conditionals -------------------------------------------------------------------
    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid hidden input ``v @ W.T + c``."""
        return F.linear(v, self.weight, self.hidden_bias)

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """``p(h = 1 | v)``."""
        return self.hidden_logits(v).sigmoid_()       # in place on the fresh product

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        """``p(v = 1 | h)``."""
        return torch.addmm(self.visible_bias, h, self.weight).sigmoid_()

    def sample_hidden(self, v: torch.Tensor, generator: torch.Generator | None = None
                      ) -> torch.Tensor:
        """Binary sample of ``h`` given ``v``."""
        return bernoulli(self.hidden_probs(v), generator)

    def sample_visible(self, h: torch.Tensor, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """Binary sample of ``v`` given ``h``."""
        return bernoulli(self.visible_probs(h), generator)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """``F(v) = -v.b - sum_j softplus(c_j + W_j.v)``, so ``p(v) = exp(-F(v)) / Z``."""
        return -(v @ self.visible_bias) - F.softplus(self.hidden_logits(v)).sum(-1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Hidden probabilities: an RBM used as a feature extractor."""
        return self.hidden_probs(v)

    # -- training -----------------------------------------------------------------------
    def fit(self, images: torch.Tensor, epochs: int = 10, batch_size: int = 100, *,
            seed: int = 0, warm_start: bool = False, progress: bool = True,
            **recipe) -> "RBM":
        """Train with CD-k (or persistent CD), Hinton's rbm.m recipe; returns ``self``.

        ``recipe`` takes the other fields of :class:`featvis.TrainingRecipe` (``lr``,
        ``momentum``, ``final_momentum``, ``momentum_switch``, ``weight_decay``, ``cd_steps``,
        ``persistent``, ``sparsity_target``, ``sparsity_cost``, ``reshuffle``). Unless
        ``warm_start``, parameters are first reset from ``seed``, so the result depends on
        ``seed`` alone.
        ``self.history`` gets one entry per epoch (see :func:`featvis.train.fit_rbm`).
        """
        if "next_layer_data" in recipe:
            raise TypeError("next_layer_data applies to DBN.fit, not to a single RBM")
        recipe = TrainingRecipe(epochs=epochs, batch_size=batch_size, seed=seed, **recipe)
        if not warm_start:
            self.reset_parameters(recipe.seed)
        fit_rbm(self, images, recipe, progress=progress)
        return self


def bernoulli(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary sample ``rand() < p`` as floats (several times faster than ``torch.bernoulli``);
    ``p`` may be a broadcast view, the sample is a new contiguous tensor."""
    return torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype).lt_(p)
