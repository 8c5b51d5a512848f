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
CPU when the visible layer has few channels), ``conv2d_weight`` for the weight gradient."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ...errors import DataError
from ...params import check_int
from ..training import TrainingRecipe, end_epoch, start_sigma_of
from ..rbm import VisibleUnits
from .pooling import (block_log_partition, block_softmax, sample_blocks, sample_phases,
                      softmax_phases, unphase)


MAX_WIDTH = 4096        # filters or channels a config may ask for
MAX_FILTER = 256        # largest filter side
MAX_POOL = 16           # largest pooling block side

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
        hidden = block_log_partition(self.hidden_logits(v), self.pool).sum((1, 2, 3))
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
        images = check_maps(images, self.channels, unit_range=not self._gaussian)
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


def check_maps(images: object, channels: int, *, unit_range: bool,
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
    pos_phases, _ = softmax_phases(F.conv2d(x0, W, c), pool, None, None)
    pos = unphase(pos_phases, pool)
    neg, neg_phases, x1, error = pos, pos_phases, x0, None
    for step in range(recipe.cd_steps):
        h = unphase(sample_phases(neg_phases, generator, None)[0], pool)
        x1 = rbm.visible_input(h).add_(down_bias)         # E[v | h] / s, or its logit
        if not gaussian:
            x1.sigmoid_()
        neg_phases, _ = softmax_phases(F.conv2d(x1, W, c), pool, None, None)
        neg = unphase(neg_phases, pool)
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
