"""Restricted Boltzmann machine as an ``nn.Module``: binary hidden units, binary
(Bernoulli-Bernoulli) or Gaussian (Gaussian-Bernoulli) visible units.

Parameters follow ``nn.Linear``: ``weight`` is ``(n_hidden, n_visible)``, so the hidden
pre-activation is ``v @ weight.T + hidden_bias`` (``v / sigma`` for Gaussian units).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..params import check_float, check_int
from .training import VISIBLE_KINDS, TrainingRecipe, fit_rbm

__all__ = ["RBM", "VisibleUnits"]


class VisibleUnits:
    """Binary or Gaussian visible units with one ``sigma``, for the RBMs and convolutional
    RBMs: the class sets ``visible`` and, for Gaussian units, the buffer ``_sigma``."""

    visible: str

    def _init_visible(self, visible: str, sigma: float) -> None:
        """Check and set ``visible`` and ``initial_sigma``; Gaussian units get the buffer
        ``_sigma`` (saved with the model, annealed by training)."""
        if not isinstance(visible, str) or visible not in VISIBLE_KINDS:
            raise ValueError(f"visible must be 'binary' or 'gaussian', got {visible!r}")
        sigma = check_float("sigma", sigma)
        if visible == "binary" and sigma != 1.0:
            raise ValueError(f"sigma applies to Gaussian visible units only, got sigma={sigma:g} "
                             "with visible='binary'")
        self.visible, self.initial_sigma = visible, sigma
        if visible == "gaussian":
            self.register_buffer("_sigma", torch.tensor(sigma))

    @property
    def _gaussian(self) -> bool:
        """Whether the visible units are Gaussian."""
        return self.visible == "gaussian"

    @property
    def sigma(self) -> float:
        """Standard deviation of ``v | h`` now (1.0 for binary units); settable for Gaussian
        units (the training schedule does)."""
        return float(self._sigma) if self._gaussian else 1.0

    @sigma.setter
    def sigma(self, value: float) -> None:
        if not self._gaussian:
            raise ValueError(f"a binary {type(self).__name__} has no sigma to set "
                             "(visible='binary')")
        self._sigma.fill_(check_float("sigma", value))

    def _reset(self, seed: int | None, weight_std: float) -> None:
        """Weights ``weight_std * randn`` from ``seed`` (a private generator), biases zero,
        sigma back to :attr:`initial_sigma`, history cleared."""
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.weight.device).manual_seed(seed)
        with torch.no_grad():
            self.weight.normal_(0.0, weight_std, generator=generator)
            self.hidden_bias.zero_()
            self.visible_bias.zero_()
            if self._gaussian:
                self._sigma.fill_(self.initial_sigma)
        self.history = []

    def _visible_repr(self) -> str:
        return f", visible='gaussian', sigma={self.sigma:g}" if self._gaussian else ""


class RBM(VisibleUnits, nn.Module):
    """RBM with binary hidden units h and binary or Gaussian visible units v.

    Binary: ``E(v, h) = -v.b - h.c - h W v``. Gaussian (Hinton's practical guide, one
    ``sigma`` s for all units): ``E(v, h) = sum_i (v_i - b_i)^2 / (2 s^2) - h.c - h W (v / s)``,
    so ``p(h_j = 1 | v) = sigmoid(c_j + W_j.v / s)`` and ``v | h ~ N(b + s W'h, s^2)``.

    Args:
        n_visible: number of visible units.
        n_hidden: number of hidden units.
        visible: ``"binary"`` or ``"gaussian"`` (real-valued inputs such as whitened patches).
        sigma: the starting standard deviation of Gaussian units (1.0 for binary ones). It
            lives in the buffer ``_sigma``, so checkpoints keep it and training may anneal
            it (see :class:`featvis.TrainingRecipe`).
        seed: seed of the initial weights, ``0.1 * randn`` as in rbm.m for binary units,
            ``0.01 * randn`` for Gaussian ones (the practical guide's scale: ``v / s`` is not
            bounded); biases start at 0.
    """

    def __init__(self, n_visible: int, n_hidden: int, *, visible: str = "binary",
                 sigma: float = 1.0, seed: int | None = 0) -> None:
        super().__init__()
        n_visible, n_hidden = check_int("n_visible", n_visible), check_int("n_hidden", n_hidden)
        self._init_visible(visible, sigma)
        seed = None if seed is None else check_int("seed", seed, minimum=None)
        self.n_visible, self.n_hidden = n_visible, n_hidden
        self.weight = nn.Parameter(torch.empty(n_hidden, n_visible), requires_grad=False)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible), requires_grad=False)
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden), requires_grad=False)
        self.history: list[dict[str, float]] = []
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int | None = 0) -> None:
        """Weights ``0.1 * randn`` (``0.01 * randn`` for Gaussian units) from ``seed``
        (Hinton's rbm.m), biases zero, sigma back to :attr:`initial_sigma`."""
        self._reset(seed, 0.01 if self._gaussian else 0.1)

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}" + self._visible_repr()

    # -- conditionals -------------------------------------------------------------------
    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid hidden input ``v @ W.T + c`` (``v / sigma`` for Gaussian units)."""
        if self._gaussian:
            v = v / self._sigma
        return F.linear(v, self.weight, self.hidden_bias)

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """``p(h = 1 | v)``."""
        return self.hidden_logits(v).sigmoid_()       # in place on the fresh product

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        """``p(v = 1 | h)`` of binary units; ``ValueError`` for Gaussian ones, which have no
        probability to give: :meth:`visible_mean` serves both kinds."""
        if self._gaussian:
            raise ValueError("visible_probs is for binary visible units; this RBM's are "
                             "Gaussian: use visible_mean (E[v | h]) or sample_visible")
        return torch.addmm(self.visible_bias, h, self.weight).sigmoid_()

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """``E[v | h]``: :meth:`visible_probs` for binary units, ``b + sigma W'h`` for
        Gaussian ones (the down-pass to the inputs that suits either kind)."""
        if not self._gaussian:
            return self.visible_probs(h)
        return torch.mm(h, self.weight).mul_(self._sigma).add_(self.visible_bias)

    def visible_mean_one_hot(self, units: torch.Tensor) -> torch.Tensor:
        """``(U, n_visible)``: ``E[v | h = e_u]`` for each hidden unit ``u`` of ``units`` (one
        unit on, the others off), by a row gather rather than a product with one-hot rows."""
        if self._gaussian:
            return self.weight[units].mul(self._sigma).add_(self.visible_bias)
        return torch.sigmoid(self.weight[units] + self.visible_bias)

    def visible_from_uniforms(self, uniforms: torch.Tensor, mean: torch.Tensor
                              ) -> torch.Tensor:
        """A sample of ``v`` with ``E[v | h] = mean`` from ``uniforms`` in [0, 1) (broadcast):
        ``uniforms < mean`` for binary units, ``mean + sigma * Phi^-1(uniforms)`` for Gaussian
        ones, so callers that draw their own uniforms (one generator per unit) serve both."""
        shape = torch.broadcast_shapes(uniforms.shape, mean.shape)
        if not self._gaussian:
            return torch.lt(uniforms, mean, out=mean.new_empty(shape))
        normal = torch.special.ndtri(uniforms.clamp(1e-7, 1 - 1e-7))
        return torch.add(mean, normal.mul_(self._sigma))

    def sample_hidden(self, v: torch.Tensor, generator: torch.Generator | None = None
                      ) -> torch.Tensor:
        """Binary sample of ``h`` given ``v``."""
        return bernoulli(self.hidden_probs(v), generator)

    def sample_visible(self, h: torch.Tensor, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """Sample of ``v`` given ``h``: binary, or ``E[v | h] + sigma * randn`` for Gaussian
        units."""
        if not self._gaussian:
            return bernoulli(self.visible_probs(h), generator)
        mean = self.visible_mean(h)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device,
                            dtype=mean.dtype)
        return noise.mul_(self._sigma).add_(mean)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """``F(v) = -v.b - sum_j softplus(c_j + W_j.v)``, so ``p(v) = exp(-F(v)) / Z``; for
        Gaussian units ``F(v) = |v - b|^2 / (2 sigma^2) - sum_j softplus(c_j + W_j.v / sigma)``."""
        hidden = F.softplus(self.hidden_logits(v)).sum(-1)
        if self._gaussian:
            return (v - self.visible_bias).pow(2).sum(-1).div(2 * self._sigma ** 2) - hidden
        return -(v @ self.visible_bias) - hidden

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
        ``persistent``, ``sparsity_target``, ``sparsity_cost``, ``reshuffle``, and for
        Gaussian units ``sigma``, ``sigma_decay``, ``sigma_floor``). Unless ``warm_start``,
        parameters (and sigma) are first reset from ``seed``, so the result depends on
        ``seed`` alone.
        ``self.history`` gets one entry per epoch (see :func:`featvis.models.training.fit_rbm`).
        """
        if recipe.get("next_layer_data", "last_epoch") != "last_epoch":
            raise TypeError("next_layer_data applies to DBN.fit, not to a single RBM")
        recipe = TrainingRecipe(epochs=epochs, batch_size=batch_size, seed=seed,
                                **recipe).for_layer(1)
        if not warm_start:
            self.reset_parameters(recipe.seed)
        fit_rbm(self, images, recipe, progress=progress)
        return self


def bernoulli(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary sample ``rand() < p`` as floats (several times faster than ``torch.bernoulli``);
    ``p`` may be a broadcast view, the sample is a new contiguous tensor."""
    return torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype).lt_(p)
