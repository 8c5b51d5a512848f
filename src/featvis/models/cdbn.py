"""Convolutional RBMs with probabilistic max-pooling, and the convolutional DBN stacked from
them (Lee, Grosse, Ranganath & Ng, ICML 2009).

A :class:`ConvRBM` has ``K`` filters of ``w x w`` over ``channels`` input maps. Its
*detection* layer is the valid correlation of the input with each filter, ``(N, K, H - w + 1,
W - w + 1)``; its *pooling* layer has one unit per ``C x C`` block of each detection map.
Probabilistic max-pooling constrains every block to at most one detection unit on, and the
block's pooling unit is on exactly when one of them is. Given the input, each block is then a
softmax over ``C^2 + 1`` states, its ``C^2`` detection units and "all off" (energy 0)::

    P(h_j = 1 | v) = exp(I_j) / (1 + sum_{j' in block} exp(I_j'))
    P(p = 1 | v)   = sum_{j in block} P(h_j = 1 | v)

with ``I_j = c_k + (W_k * v)_j`` the detection unit's input (``*``: valid cross-correlation,
``F.conv2d``). :func:`block_softmax` computes
these for the positive phase, the negative phase and top-down inference alike (a pooling
unit's input from the layer above shifts its block's "on" states, as in the paper's
hierarchical probabilistic inference), and :func:`sample_blocks` draws one multinomial per
block.

**Crop.** A detection map whose side is not a multiple of ``C`` is cropped to its top-left
``C * floor((H - w + 1) / C)`` rows (columns alike); equivalently the model sees the top-left
``Hd + w - 1`` rows of its input and ignores the last few (Lee's code trims its images the same
way). Every method here crops its inputs first; :meth:`ConvRBM.map_shapes` gives the sizes.

**Energy** (binary visible units, one bias ``b_c`` per input channel shared over positions)::

    E(v, h) = -sum_k sum_j h_kj (W_k * v)_j - sum_k c_k sum_j h_kj - sum_c b_c sum_i v_ci

and for Gaussian visible units (Hinton's practical guide, one ``sigma`` s per model)
``sum (v - b)^2 / (2 s^2)`` replaces the last term and ``v / s`` the ``v`` of the first, so
``v | h ~ N(b + s * sum_k W_k (*) h_k, s^2)`` (``(*)``: the full, transposed convolution).

Everything is batched over images and filters: ``F.conv2d`` for the up-pass, one matmul and
``F.fold`` for the transposed convolution (several times faster than ``conv_transpose2d`` on
CPU when the visible layer has few channels), ``conv2d_weight`` for the weight gradient.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import DataError, check_int, is_int
from ..train import TrainingRecipe, end_epoch, start_sigma_of
from ._checkpoint import read_model, save_model
from ._stack import Stack
from .rbm import VisibleUnits

__all__ = ["ConvRBM", "ConvDBN", "block_softmax", "log_block_softmax", "sample_blocks",
           "conv_recipe", "CONV_RECIPE", "CONV_RECIPE_GAUSSIAN"]

MAX_WIDTH = 4096        # filters or channels a config may ask for
MAX_FILTER = 256        # largest filter side
MAX_POOL = 16           # largest pooling block side
MAX_LAYERS = 16         # layers of a ConvDBN
MAX_SIDE = 2 ** 16      # largest input side a config may record
LAYER_KEYS = ("filters", "filter_size", "pool")

# The recipe fields where a convolutional RBM's defaults differ from rbm.m's (TrainingRecipe's
# defaults). Gradients are averages over the detection map (Lee's code), so the learning
# rate is per position; the sparsity target keeps few detection units on (Lee's code uses
# 0.002-0.02). Tuned on MNIST (24 filters of 8x8, pool 2, 2,000 digits, 5 epochs: local
# stroke detectors, see tests/test_cdbn.py). Layer 2 (``layers[1]``) is less sparse and takes
# four times the updates: with the first layer's values its filters stayed undertrained
# templates sharing one central blob (bases' distinctness 0.52; 0.35 with these, CDBN_DEMO).
CONV_LAYER_2 = dict(sparsity_target=0.03, batch_size=25)
CONV_RECIPE = dict(lr=0.5, momentum=0.5, final_momentum=0.9, momentum_switch=3,
                   weight_decay=1e-3, sparsity_target=0.01, sparsity_cost=1.0,
                   next_layer_data="final", layers=({}, CONV_LAYER_2))
# A Gaussian first layer (whitened natural images at unit variance) follows Lee's crbm code
# (honglaklee/convDBN, demo_cdbn.m) rescaled to featvis's parametrisation: his sigma 0.2 ->
# 0.1 on images of variance 0.1 is 0.63 -> 0.32 here, epsilon 0.02 is lr 0.02, and his hidden
# biases, divided by sigma^2 in the energy, learn 25 times faster than his weights: sparsity
# cost 5 / 0.2^2 = 125 at pbias 0.002. Batches of 10 patches of 32x32 (~4,800 positions,
# Lee's one 70x70 image per update) give 1,000 updates an epoch; sigma shrinks by 0.9 an
# epoch (Lee's 0.99 per 100 updates, ten times rarer). Layers above are binary: CONV_RECIPE's,
# but layer 2 targets 0.12: the pooled edges it sees are ~1% on, so at 0.03 its units met the
# target by their biases alone, firing where the input is empty, and CD drove their weights
# negative (free under sigmoid reconstructions; 90% negative): blank or vertical-bar bases,
# distinctness 0.43 / 0.90 on seeds 0 / 1. Near 0.1 and above they must fire on the input:
# contours and corners of several orientations, distinctness -0.01 / -0.00 (0.05: 0.7).
CONV_RECIPE_GAUSSIAN = dict(layers=(dict(batch_size=10, lr=0.02, momentum_switch=2,
                                         weight_decay=1e-2, sparsity_target=0.002,
                                         sparsity_cost=125.0, sigma=0.63, sigma_decay=0.9,
                                         sigma_floor=0.316),
                                    dict(CONV_LAYER_2, sparsity_target=0.12)))

# -- probabilistic max-pooling --------------------------------------------------------------
# Blocks are handled in a "phase" layout (C^2, N, K, H / C, W / C): phase (a, b) holds the
# detection units at offset (a, b) of every block. Reductions over a block are then sums over
# the leading dimension, which run several times faster on CPU than reductions over the
# 2-wide inner dimensions of an (N, K, H / C, C, W / C, C) view.
def _check_maps_of(x: torch.Tensor, pool: int, name: str) -> None:
    """``ValueError`` unless ``x`` is ``(N, K, H, W)`` with ``H`` and ``W`` multiples of
    ``pool``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{name} must be detection maps (N, K, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.shape[2] % pool or x.shape[3] % pool:
        raise ValueError(f"{name}: detection maps of {x.shape[2]}x{x.shape[3]} do not split "
                         f"into {pool}x{pool} blocks")


def _phases(x: torch.Tensor, pool: int) -> torch.Tensor:
    """A new ``(C^2, N, K, H / C, W / C)`` tensor of ``x (N, K, H, W)``'s block phases."""
    if pool == 1:
        return x.unsqueeze(0).clone()
    n, k, h, w = x.shape
    out = x.new_empty(pool * pool, n, k, h // pool, w // pool)
    for s in range(pool * pool):
        out[s] = x[:, :, s // pool::pool, s % pool::pool]
    return out


def _unphase(phases: torch.Tensor, pool: int) -> torch.Tensor:
    """The ``(N, K, H, W)`` maps of a phase layout (inverse of :func:`_phases`)."""
    if pool == 1:
        return phases[0]
    _, n, k, hp, wp = phases.shape
    out = phases.new_empty(n, k, hp * pool, wp * pool)
    for s in range(pool * pool):
        out[:, :, s // pool::pool, s % pool::pool] = phases[s]
    return out


def _softmax_phases(logits: torch.Tensor, pool: int, top_down: torch.Tensor | None,
                    pool_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`block_softmax` with the detection probabilities in the phase layout."""
    x = _phases(logits, pool)
    if top_down is not None:
        x += top_down
    shift = x.detach().amax(0)          # cancels out: no gradient needs to flow through it
    off = None
    if pool_state is not None:
        on = pool_state > 0.5
        off = torch.where(on, -math.inf, 0.0).to(x.dtype)
        shift = torch.maximum(shift, off)
    else:
        shift.clamp_min_(0)                                 # the off state's logit, 0
    x -= shift
    e = x.exp()                         # not in place: autograd keeps exp's output
    on_mass = e.sum(0)
    rest = (-shift).exp_() if off is None else (off - shift).exp_()
    total = rest.add_(on_mass)
    det = e / total
    pool_probs = on_mass / total
    if pool_state is not None:
        det *= on
        pool_probs = pool_probs * on
    return det, pool_probs


def block_softmax(logits: torch.Tensor, pool: int, top_down: torch.Tensor | None = None,
                  pool_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilistic max-pooling: ``(detection_probs (N, K, H, W), pool_probs (N, K, H / C,
    W / C))`` of detection ``logits`` (their inputs ``I``) in ``pool x pool`` blocks.

    Each block is a softmax over its ``C^2`` detection units and an "off" state of logit 0,
    computed as a log-sum-exp shifted by ``max(0, max I)`` so that logits of any magnitude
    give no NaN or infinity; ``pool_probs`` is the sum of the block's detection
    probabilities, ``P(pooling unit on)``. ``top_down (N, K, H / C, W / C)``, the pooling
    unit's input from the layer above, is added to every logit of its block. ``pool_state``
    (same shape, 0 or 1) conditions on the pooling units: where 1 the off state is excluded
    (the block's units share probability 1), where 0 the block is all off. One function
    serves the positive and negative phases of training and top-down sampling.
    """
    pool = check_int("pool", pool)
    _check_maps_of(logits, pool, "logits")
    blocks = (logits.shape[0], logits.shape[1], logits.shape[2] // pool,
              logits.shape[3] // pool)
    for name, t in (("top_down", top_down), ("pool_state", pool_state)):
        if t is not None and tuple(t.shape) != blocks:
            raise ValueError(f"{name} must have shape {blocks}, got {tuple(t.shape)}")
    phases, pool_probs = _softmax_phases(logits, pool, top_down, pool_state)
    return _unphase(phases, pool), pool_probs


def _sample_phases(phases: torch.Tensor, generator: torch.Generator | None,
                   pool_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_blocks` on detection probabilities in the phase layout; returns the
    detection sample in that layout and the pool sample."""
    cum = phases.cumsum(0)
    u = torch.rand(cum.shape[1:], generator=generator, device=cum.device, dtype=cum.dtype)
    if pool_state is not None:
        u *= cum[-1]
    above = cum > u
    if pool_state is not None:
        above[-1] = pool_state > 0.5            # rounding must not turn a clamped block off
    first = above.clone()
    first[1:] &= ~above[:-1]
    return first.to(phases.dtype), above[-1].to(phases.dtype)


def sample_blocks(probs: torch.Tensor, pool: int, generator: torch.Generator | None = None,
                  *, pool_state: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One multinomial draw per block: ``(detection sample, pool sample)``, floats 0/1, with at
    most one detection unit on per block and the pooling unit on iff one is.

    ``probs`` are :func:`block_softmax` detection probabilities; one uniform per block, drawn
    from ``generator``, picks the first state (row-major within the block) whose cumulative
    probability exceeds it, "off" when it exceeds the block's total. With ``pool_state`` (the
    state the probabilities were conditioned on) the uniform is scaled to the block's total,
    so a block clamped on has exactly one unit on and one clamped off none.
    """
    pool = check_int("pool", pool)
    _check_maps_of(probs, pool, "probs")
    h, p = _sample_phases(_phases(probs, pool), generator, pool_state)
    return _unphase(h, pool), p


def _block_log_partition(logits: torch.Tensor, pool: int) -> torch.Tensor:
    """``log(1 + sum_j exp(I_j))`` per block, ``(N, K, H / C, W / C)``, stably."""
    return F.softplus(_phases(logits, pool).logsumexp(0))


def log_block_softmax(logits: torch.Tensor, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The logs of :func:`block_softmax`'s ``(detection_probs, pool_probs)``, from the logits
    without forming the probabilities: finite, and with a gradient of the logits' size, where
    a probability underflows (a sparse layer's units far below their threshold, whose
    probabilities of ``e^-30`` give gradients that a normalized step cannot see)."""
    x = _phases(logits, pool)
    on = x.logsumexp(0)                                   # log sum_j exp(I_j)
    log_total = F.softplus(on)                            # log(1 + sum_j exp(I_j))
    return _unphase(x - log_total, pool), on - log_total


# -- one layer -------------------------------------------------------------------------------
class ConvRBM(VisibleUnits, nn.Module):
    """Convolutional RBM with probabilistic max-pooling (see the module docstring).

    Args:
        channels: input maps.
        filters: number of filters ``K``.
        filter_size: filter side ``w`` (filters are ``w x w``).
        pool: pooling block side ``C`` (1: no pooling, a convolutional RBM whose detection
            units are independent given the input).
        visible: ``"binary"`` or ``"gaussian"`` input units.
        sigma: standard deviation of Gaussian inputs (buffer ``_sigma``, annealed by
            training, which starts from the recipe's sigma when it has one: 0.63 by default);
            1.0 for binary ones.
        seed: seed of the initial weights, ``0.01 * randn`` as in Lee's code; biases start at
            0. ``None`` leaves the parameters uninitialised (a checkpoint fills them).

    Parameters: ``weight (K, channels, w, w)``, ``hidden_bias (K,)``, ``visible_bias
    (channels,)`` (one per input channel, shared over positions).
    """

    def __init__(self, channels: int, filters: int, filter_size: int, pool: int = 2, *,
                 visible: str = "binary", sigma: float = 1.0, seed: int | None = 0) -> None:
        super().__init__()
        self.channels = check_int("channels", channels)
        self.filters = check_int("filters", filters)
        self.filter_size = check_int("filter_size", filter_size)
        self.pool = check_int("pool", pool)
        if max(self.channels, self.filters) > MAX_WIDTH:
            raise ValueError(f"channels and filters must be at most {MAX_WIDTH}, got "
                             f"{self.channels} and {self.filters}")
        if self.filter_size > MAX_FILTER or self.pool > MAX_POOL:
            raise ValueError(f"filter_size must be at most {MAX_FILTER} and pool at most "
                             f"{MAX_POOL}, got {self.filter_size} and {self.pool}")
        self._init_visible(visible, sigma)
        seed = None if seed is None else check_int("seed", seed, minimum=None)
        w = self.filter_size
        self.weight = nn.Parameter(torch.empty(self.filters, self.channels, w, w),
                                   requires_grad=False)
        self.hidden_bias = nn.Parameter(torch.zeros(self.filters), requires_grad=False)
        self.visible_bias = nn.Parameter(torch.zeros(self.channels), requires_grad=False)
        self.history: list[dict[str, float]] = []
        if seed is not None:
            self.reset_parameters(seed)

    def reset_parameters(self, seed: int | None = 0) -> None:
        """Weights ``0.01 * randn`` from ``seed`` (a private generator), biases zero, sigma
        back to :attr:`initial_sigma`, history cleared."""
        self._reset(seed, 0.01)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, filters={self.filters}, "
                f"filter_size={self.filter_size}, pool={self.pool}" + self._visible_repr())

    # -- shapes ------------------------------------------------------------------------------
    def map_shapes(self, height: int, width: int) -> dict[str, tuple[int, int]]:
        """The sizes for an input of ``height x width``: ``visible`` (the top-left part the
        model sees), ``detection`` (cropped to whole blocks) and ``pool``; ``DataError`` if
        the input is too small for one block."""
        w, c = self.filter_size, self.pool
        hp, wp = (height - w + 1) // c, (width - w + 1) // c
        if hp < 1 or wp < 1:
            raise DataError(f"inputs of {height}x{width} are too small for {w}x{w} filters "
                            f"and {c}x{c} pooling (at least {w + c - 1}x{w + c - 1})")
        return {"visible": (hp * c + w - 1, wp * c + w - 1), "detection": (hp * c, wp * c),
                "pool": (hp, wp)}

    def crop(self, v: torch.Tensor) -> torch.Tensor:
        """The part of ``v (N, channels, H, W)`` the model sees (see the module docstring)."""
        if v.dim() != 4 or v.shape[1] != self.channels:
            raise DataError(f"expected inputs (N, {self.channels}, H, W), got shape "
                            f"{tuple(v.shape)}")
        hv, wv = self.map_shapes(v.shape[2], v.shape[3])["visible"]
        return v[:, :, :hv, :wv]

    # -- conditionals ------------------------------------------------------------------------
    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """Detection inputs ``I = c + W * v`` (``v / sigma`` for Gaussian units), ``(N, K, Hd,
        Wd)`` on the cropped input."""
        v = self.crop(v)
        if self._gaussian:
            v = v / self._sigma
        return F.conv2d(v, self.weight, self.hidden_bias)

    def probs(self, v: torch.Tensor, top_down: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(detection probs, pool probs)`` given ``v`` (and a ``top_down`` input to the
        pooling units, see :func:`block_softmax`)."""
        return block_softmax(self.hidden_logits(v), self.pool, top_down)

    def unit_logits(self, v: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """Detection inputs ``(N, Hd, Wd)`` of filter ``units[n]`` on ``v[n]`` alone: one
        grouped convolution, not every filter on every row."""
        v = self.crop(v)
        if self._gaussian:
            v = v / self._sigma
        n, c, h, w = v.shape
        out = F.conv2d(v.reshape(1, n * c, h, w), self.weight[units], self.hidden_bias[units],
                       groups=n)
        return out[0]

    def hidden_probs(self, v: torch.Tensor, top_down: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """``P(h = 1 | v)`` of the detection units, ``(N, K, Hd, Wd)``."""
        return self.probs(v, top_down)[0]

    def pool_probs(self, v: torch.Tensor, top_down: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """``P(p = 1 | v)`` of the pooling units, ``(N, K, Hp, Wp)``."""
        return self.probs(v, top_down)[1]

    def sample_hidden(self, v: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(detection, pool)`` samples given ``v``, one multinomial per block."""
        return sample_blocks(self.hidden_probs(v), self.pool, generator)

    def visible_input(self, h: torch.Tensor, size: tuple[int, int] | None = None
                      ) -> torch.Tensor:
        """``sum_k W_k (*) h_k`` (the full, transposed convolution), ``(N, channels, Hd + w -
        1, Wd + w - 1)``, zero-padded at the bottom and right to ``size`` if given."""
        n, k, hd, wd = h.shape
        if k != self.filters:
            raise ValueError(f"expected {self.filters} hidden maps, got shape {tuple(h.shape)}")
        w = self.filter_size
        out = (hd + w - 1, wd + w - 1)
        if self.channels * w * w <= 4 * k:
            # Few visible channels: one matmul and a fold beat conv_transpose2d by ~5x on CPU.
            cols = torch.matmul(self.weight.reshape(k, -1).t(), h.reshape(n, k, hd * wd))
            x = F.fold(cols, out, w)
        else:
            x = F.conv_transpose2d(h, self.weight)
        if size is not None and tuple(size) != out:
            if size[0] < out[0] or size[1] < out[1]:
                raise ValueError(f"size {tuple(size)} is smaller than the {out} that "
                                 f"{hd}x{wd} detection maps reach")
            x = F.pad(x, (0, size[1] - out[1], 0, size[0] - out[0]))
        return x

    def visible_mean(self, h: torch.Tensor, size: tuple[int, int] | None = None
                     ) -> torch.Tensor:
        """``E[v | h]``: ``sigmoid(b + W (*) h)`` for binary units, ``b + sigma W (*) h`` for
        Gaussian ones (``size``: see :meth:`visible_input`; padded positions get the bias
        alone)."""
        x = self.visible_input(h, size)
        b = self.visible_bias[:, None, None]
        if self._gaussian:
            return x.mul_(self._sigma).add_(b)
        return x.add_(b).sigmoid_()

    def sample_visible(self, h: torch.Tensor, generator: torch.Generator | None = None,
                       size: tuple[int, int] | None = None) -> torch.Tensor:
        """A sample of ``v | h``: Bernoulli, or ``E[v | h] + sigma * noise`` for Gaussian."""
        mean = self.visible_mean(h, size)
        if not self._gaussian:
            return torch.rand(mean.shape, generator=generator, device=mean.device,
                              dtype=mean.dtype).lt_(mean).to(mean.dtype)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device,
                            dtype=mean.dtype)
        return noise.mul_(self._sigma).add_(mean)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """``F(v) = -log sum_h exp(-E(v, h))``, ``(N,)``, on the cropped input: the visible
        term minus ``sum_blocks log(1 + sum_{j in block} exp(I_j))``."""
        v = self.crop(v)
        hidden = _block_log_partition(self.hidden_logits(v), self.pool).sum((1, 2, 3))
        b = self.visible_bias[:, None, None]
        if self._gaussian:
            return (v - b).square().sum((1, 2, 3)) / (2 * self._sigma ** 2) - hidden
        return -(v * b).sum((1, 2, 3)) - hidden

    def statistics(self, v: torch.Tensor, probs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The sufficient statistics of one phase of CD, averaged over images and detection
        positions (Lee's code divides by the map size): ``weight`` ``<h_k (v / s)>`` per
        filter offset, ``hidden_bias`` ``<h_k>``, and ``visible_bias`` ``<v_c> / s^2``
        (summed over the visible map, divided by the same count), as the log-likelihood
        gradient with respect to each parameter. ``probs`` are the detection probabilities
        of the cropped ``v``."""
        v = self.crop(v)
        s = self.sigma
        count = probs.shape[0] * probs.shape[2] * probs.shape[3]
        x = v / s if self._gaussian else v
        weight = torch.nn.grad.conv2d_weight(x, self.weight.shape, probs) / count
        return {"weight": weight, "hidden_bias": probs.sum((0, 2, 3)) / count,
                "visible_bias": x.sum((0, 2, 3)) / (count * s)}

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Pooling probabilities: a convolutional RBM used as a feature extractor."""
        return self.pool_probs(v)

    # -- training ----------------------------------------------------------------------------
    def fit(self, images: torch.Tensor, epochs: int = 10, batch_size: int | None = None, *,
            seed: int = 0, warm_start: bool = False, progress: bool = True,
            **recipe) -> "ConvRBM":
        """Train with CD-k on ``images (N, channels, H, W)`` (in [0, 1] for binary units);
        returns ``self``.

        ``recipe`` takes the fields of :class:`featvis.TrainingRecipe`; unset ones default to
        :data:`CONV_RECIPE` (with :data:`CONV_RECIPE_GAUSSIAN` for Gaussian inputs; their
        first layer's entries, e.g. its batch size when ``batch_size`` is ``None``), then to
        the recipe's own defaults (persistent CD is not supported). Per batch: detection
        probabilities of the data (positive statistics), one multinomial sample per block,
        the reconstruction ``E[v | h]``, its detection probabilities (negative statistics,
        from the mean, not a sample, as featvis's RBM does); gradients are averages over
        images and map positions, with momentum, weight decay on the weights, and the sparsity term
        ``sparsity_cost * (target - mean detection prob)`` on the hidden biases. Gaussian
        units follow the recipe's sigma schedule. Unless ``warm_start`` the parameters are
        reset from ``seed`` first. ``history`` gets one entry per epoch: ``error_sum`` (summed
        squared reconstruction error of the cropped inputs), ``error_per_case``,
        ``mean_activation`` (mean positive detection probability) and, for Gaussian units,
        ``sigma``.
        """
        if "next_layer_data" in recipe:
            raise TypeError("next_layer_data applies to ConvDBN.fit, not to a single ConvRBM")
        recipe = conv_recipe(self.visible, epochs=epochs, batch_size=batch_size, seed=seed,
                             **recipe).for_layer(1)
        images = _check_maps(images, self.channels, unit_range=not self._gaussian)
        if not warm_start:
            self.reset_parameters(recipe.seed)
        fit_conv_rbm(self, images, recipe, progress=progress)
        return self


SIGMA_FIELDS = {"sigma", "sigma_decay", "sigma_floor"}    # one schedule: given together


def conv_recipe(visible: str = "binary", **fields) -> TrainingRecipe:
    """The :class:`TrainingRecipe` of ``fields`` over :data:`CONV_RECIPE`'s defaults (and
    :data:`CONV_RECIPE_GAUSSIAN`'s for ``visible="gaussian"``), per-layer defaults
    included; a field given here (``batch_size=None``: not given) replaces the default of
    every layer unless ``layers`` is given too (any of the sigma schedule's fields replaces
    the whole default schedule). ``ValueError`` for what convolutional
    training does not support."""
    defaults = {**CONV_RECIPE, **(CONV_RECIPE_GAUSSIAN if visible == "gaussian" else {})}
    if fields.get("batch_size", 0) is None:
        del fields["batch_size"]                  # the recipe's (and its layers') own
    if "layers" not in fields:        # a field given explicitly wins over every layer's default
        given = set(fields) | (SIGMA_FIELDS if SIGMA_FIELDS & set(fields) else set())
        defaults["layers"] = tuple({k: v for k, v in entry.items() if k not in given}
                                   for entry in defaults["layers"])
    recipe = TrainingRecipe(**{**defaults, **fields})
    if recipe.persistent or any(entry.get("persistent") for entry in recipe.layers):
        raise ValueError("persistent CD is not supported for convolutional RBMs (use CD-k)")
    if recipe.next_layer_data != "final":
        raise ValueError("a ConvDBN trains each layer on the trained layer below's pooling "
                         "probabilities: next_layer_data must be 'final'")
    return recipe


def _check_maps(images: object, channels: int, *, unit_range: bool,
                name: str = "images") -> torch.Tensor:
    """``images`` if a floating, finite ``(N, channels, H, W)`` tensor (in [0, 1] with
    ``unit_range``), else a one-line :class:`DataError`."""
    if not isinstance(images, torch.Tensor):
        raise DataError(f"{name}: expected a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != channels:
        raise DataError(f"{name}: expected shape (N, {channels}, H, W), got "
                        f"{tuple(images.shape)}")
    if not images.is_floating_point():
        raise DataError(f"{name}: expected floating-point values, got {images.dtype}")
    if images.numel() == 0:
        raise DataError(f"{name}: no images")
    low, high = (t.item() for t in torch.aminmax(images))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise DataError(f"{name}: contains NaN or infinite values")
    if unit_range and not (0 <= low and high <= 1):
        raise DataError(f"{name}: values must lie in [0, 1] (found {low:.3g}..{high:.3g})")
    return images


class _Increments:
    """Momentum increments of one training run (zero at the start)."""

    def __init__(self, rbm: ConvRBM) -> None:
        self.weight = torch.zeros_like(rbm.weight)
        self.hidden_bias = torch.zeros_like(rbm.hidden_bias)
        self.visible_bias = torch.zeros_like(rbm.visible_bias)


def _cd_step(rbm: ConvRBM, v0: torch.Tensor, recipe: TrainingRecipe, inc: _Increments,
             momentum: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One CD-k update on the cropped batch ``v0`` (data units); returns the batch's summed
    squared reconstruction error and summed positive detection probability (0-d tensors,
    left on the device)."""
    W, c, b = rbm.weight.data, rbm.hidden_bias.data, rbm.visible_bias.data
    s = rbm.sigma
    gaussian = rbm._gaussian
    x0 = v0 / s if gaussian else v0                       # statistics are of v / s
    down_bias = (b / s if gaussian else b)[:, None, None]
    pool = rbm.pool
    pos_phases, _ = _softmax_phases(F.conv2d(x0, W, c), pool, None, None)
    pos = _unphase(pos_phases, pool)
    neg, neg_phases, x1, error = pos, pos_phases, x0, None
    for step in range(recipe.cd_steps):
        h = _unphase(_sample_phases(neg_phases, generator, None)[0], pool)
        x1 = rbm.visible_input(h).add_(down_bias)         # E[v | h] / s, or its logit
        if not gaussian:
            x1.sigmoid_()
        neg_phases, _ = _softmax_phases(F.conv2d(x1, W, c), pool, None, None)
        neg = _unphase(neg_phases, pool)
        if step == 0:
            error = (x0 - x1).square_().sum() * (s * s)    # data units
    n = v0.shape[0]
    count = n * pos.shape[2] * pos.shape[3]
    grad_w = torch.nn.grad.conv2d_weight(x0, W.shape, pos)
    grad_w -= torch.nn.grad.conv2d_weight(x1, W.shape, neg)
    pos_sum = pos_phases.sum((0, 3, 4)).sum(0)          # the phase layout sums faster
    grad_c = (pos_sum - neg_phases.sum((0, 3, 4)).sum(0)).div_(count)
    if recipe.sparsity_target is not None:
        grad_c.add_(recipe.sparsity_target - pos_sum / count, alpha=recipe.sparsity_cost)
    grad_b = (x0.sum((2, 3)).sum(0) - x1.sum((2, 3)).sum(0)).div_(count * s)
    inc.weight.mul_(momentum).add_(grad_w, alpha=recipe.lr / count)
    inc.weight.add_(W, alpha=-recipe.lr * recipe.weight_decay)
    inc.hidden_bias.mul_(momentum).add_(grad_c, alpha=recipe.lr)
    inc.visible_bias.mul_(momentum).add_(grad_b, alpha=recipe.lr)
    W.add_(inc.weight)
    c.add_(inc.hidden_bias)
    b.add_(inc.visible_bias)
    return error, pos_sum.sum()


def fit_conv_rbm(rbm: ConvRBM, images: torch.Tensor, recipe: TrainingRecipe, *,
                 progress: bool = True, description: str = "ConvRBM",
                 on_epoch: Callable[[dict], None] | None = None) -> None:
    """Train ``rbm`` in place on checked ``images (N, channels, H, W)`` with ``recipe`` (see
    :meth:`ConvRBM.fit`); batches follow one random order from the seed, or a new one every
    epoch with ``recipe.reshuffle``."""
    p = rbm.weight
    images = rbm.crop(images.to(device=p.device, dtype=p.dtype))
    n = images.shape[0]
    start_sigma = start_sigma_of(rbm, recipe)
    generator = torch.Generator(device=p.device).manual_seed(recipe.seed)
    inc = _Increments(rbm)
    batch = min(recipe.batch_size, n)
    order = torch.randperm(n, generator=generator, device=p.device)
    maps = rbm.map_shapes(images.shape[2], images.shape[3])["detection"]
    units = n * rbm.filters * maps[0] * maps[1]
    bar = tqdm(total=recipe.epochs * math.ceil(n / batch), desc=description, unit="batch",
               disable=not progress, leave=False)
    with torch.no_grad():
        for epoch in range(1, recipe.epochs + 1):
            momentum = recipe.momentum if epoch < recipe.momentum_switch else \
                recipe.final_momentum
            if recipe.reshuffle and epoch > 1:
                order = torch.randperm(n, generator=generator, device=p.device)
            sigma = rbm.sigma
            error, active = p.new_zeros(()), p.new_zeros(())
            for start in range(0, n, batch):
                e, a = _cd_step(rbm, images[order[start:start + batch]], recipe, inc,
                                momentum, generator)
                error += e
                active += a
                bar.update()
            end_epoch(rbm, recipe, epoch, error.item(), n, sigma, start_sigma, description, bar,
                      on_epoch, mean_activation=active.item() / units)
    bar.close()


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
        x = _check_maps(x, self.channels, unit_range=False, name=name)
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
            _check_maps(images, self.channels, unit_range=True)
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
