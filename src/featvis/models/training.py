"""Contrastive-divergence training of RBMs and greedy layer-wise training of DBNs.

The recipe is Hinton's rbm.m (Hinton & Salakhutdinov 2006): CD-1, lr 0.1, momentum 0.5
then 0.9, weight decay 2e-4 on the weights only, batches of 100 drawn once (``makebatches``)
and kept for every epoch. The epoch log is the summed squared reconstruction error exactly
as rbm.m prints it: accumulated over the epoch's batches while the weights change, from the
reconstruction driven by binary hidden samples. A DBN hands the next RBM the positive-phase
hidden probabilities of the last epoch, batch for batch (rbm.m's ``batchposhidprobs``);
:class:`LastEpoch` keeps them and the state needed to replay that epoch on resume.

Gaussian visible units (Hinton's practical guide, section 13.2; one ``sigma`` per model) use
the same loop on ``v / sigma``: see :func:`_cd_step` for the gradients and
:class:`TrainingRecipe` for the ``sigma`` schedule and the ``"hinton"`` and ``"lee"`` presets.

The inner loop is written for speed: every product is an in-place ``addmm`` into a
preallocated buffer, the batch is gathered straight into its buffer, the weight gradient
and the momentum update are a single ``addmm_`` over the stacked positive and negative
phases, sampling is ``rand() < p`` in place, and the error stays on the device until the
epoch ends (no host sync per batch).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch
from tqdm.auto import tqdm

from ..data.tensors import check_images
from ..errors import TrainingDivergedError
from ..params import POSITIVE, RATE, SEED, SHARE, WEIGHT, Boolean, Interval, Options

__all__ = ["TrainingRecipe", "LastEpoch", "RBMLike", "batch_order", "check_snapshot",
           "fit_rbm", "replay_last_epoch", "VISIBLE_KINDS"]

NEXT_LAYER_DATA = ("last_epoch", "final")
# What each field of a TrainingRecipe may hold (``layers`` is checked recipe by recipe).
RECIPE_FIELDS = {
    "epochs": POSITIVE, "batch_size": POSITIVE,
    "lr": RATE, "momentum": SHARE, "final_momentum": SHARE, "momentum_switch": POSITIVE,
    "weight_decay": WEIGHT, "cd_steps": POSITIVE, "persistent": Boolean(),
    "sparsity_target": Interval(float, 0.0, 1.0, low_open=True, high_open=True, none=True),
    "sparsity_cost": WEIGHT, "reshuffle": Boolean(), "next_layer_data": Options(NEXT_LAYER_DATA),
    "seed": SEED, "sigma": Interval(float, 0.0, low_open=True, none=True),
    "sigma_decay": RATE, "sigma_floor": RATE,      # sigma_decay: also at most 1
}
VISIBLE_KINDS = ("binary", "gaussian")   # an RBM's visible units (see featvis.RBM)
# What TrainingRecipe.layers may set per RBM; the others are the whole DBN's.
LAYER_FIELDS = ("epochs", "batch_size", "lr", "momentum", "final_momentum", "momentum_switch",
                "weight_decay", "cd_steps", "persistent", "sparsity_target", "sparsity_cost",
                "sigma", "sigma_decay", "sigma_floor")


class RBMLike(Protocol):
    """What training needs of a model: :class:`featvis.RBM`'s parameters and up-pass.

    Training sits below the models (``featvis.models`` imports it), so it names the model
    it trains by this shape rather than by importing the class.
    """

    n_visible: int
    n_hidden: int
    visible: str                 # one of VISIBLE_KINDS
    sigma: float                 # std of v | h, settable (1.0 and fixed for binary units)
    weight: torch.Tensor
    visible_bias: torch.Tensor
    hidden_bias: torch.Tensor
    history: list[dict[str, float]]

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor: ...

    def parameters(self) -> Iterator[torch.Tensor]: ...

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]: ...

    def named_buffers(self) -> Iterator[tuple[str, torch.Tensor]]: ...


def _warn_renamed(old: str, new: str) -> None:
    """A FutureWarning that ``old`` is now ``new``, pointing at the first caller outside
    featvis (the line to change, also when it reached here through ``fit``)."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("featvis."):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"{old} is now called {new}; the old name is deprecated and will be removed "
                  "in the next release", FutureWarning, stacklevel=level)


def _accept_old_k(cls: type) -> type:
    """Let ``cls(k=...)`` still mean ``cd_steps`` (its name in 0.1.0), with a warning."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs) -> None:
        if "k" in kwargs:
            if "cd_steps" in kwargs:
                raise TypeError("give cd_steps or its deprecated alias k, not both")
            _warn_renamed("k", "cd_steps")
            kwargs["cd_steps"] = kwargs.pop("k")
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


@_accept_old_k
@dataclass(frozen=True)
class TrainingRecipe:
    """Hyper-parameters of CD training (defaults: rbm.m for MNIST).

    ``reshuffle`` draws a new batch order every epoch instead of rbm.m's one order for the
    whole run. ``next_layer_data`` is what a DBN trains its next RBM on: ``"last_epoch"``,
    rbm.m's positive-phase probabilities of the last epoch (the reference figures), or
    ``"final"``, the trained RBM's up-pass. ``cd_steps`` is the k of CD-k (``k`` until
    0.1.0, still accepted with a warning). ``sparsity_target`` p (with ``sparsity_cost``
    lambda) adds ``lambda * (p - q)`` to the hidden biases' gradient, q a unit's mean
    activation on the batch (Lee et al. 2008, who update only the hidden biases).

    The ``sigma`` fields apply to an RBM with Gaussian visible units (a binary one ignores
    them, so a DBN shares one recipe across its layers): training starts at ``sigma``
    (``None``: the model's own) and after epoch e sets the model's sigma to
    ``max(sigma_floor, start * sigma_decay ** e)``; ``sigma_decay=1`` keeps it fixed.
    Lee et al. shrink sigma as the features sharpen; the default floor, 0.1, is a tenth of
    the spread of unit-variance data.

    ``layers`` holds per-RBM overrides: entry ``d - 1`` replaces fields of RBM d's recipe
    (:meth:`for_layer`), e.g. a Gaussian first layer's own learning rate and sparsity under
    binary layers trained as rbm.m; the batch order, seed and hand-over are the DBN's.

    :meth:`preset` gives ``"rbm.m"`` (the defaults) and two recipes for Gaussian visible
    units on whitened image patches with zero mean and unit variance over all pixels (as
    :func:`featvis.data.natural.natural_patches` makes them); every other field keeps its
    default:

    ========================  ==========  ====================  ==================
    field                     ``hinton``  ``lee``, layer 1      ``lee``, above
    ========================  ==========  ====================  ==================
    lr                        0.01        0.3                   0.1
    momentum (epochs 1-5)     0.5         0.5                   0.5
    final_momentum            0.9         0.5                   0.9
    weight_decay              2e-4        0.01                  2e-4
    sparsity_target           None        0.02                  0.1
    sparsity_cost             (0.1)       50                    1
    sigma                     1.0         1.3                   (binary units)
    sigma_decay               1.0         0.99                  -
    sigma_floor               (0.1)       0.65                  -
    ========================  ==========  ====================  ==================

    ``"hinton"`` is the practical guide's (section 13.2): data at unit variance, sigma
    fixed at 1, a learning rate an order of magnitude below rbm.m's 0.1 for binary units
    (the guide asks for one or two), rbm.m's momentum and weight decay; it learns slowly.
    ``"lee"`` follows Lee, Ekanadham & Ng 2008: a sparse first layer (target activation
    0.02, Lee's L2 weight decay 0.01, sigma shrinking by 0.99 an epoch) and a sparse binary
    layer above; its learning rate, sparsity cost and sigma were chosen by a sweep on 1/f
    whitened patches of the bundled photographs (100,000 patches, 3 to 6 epochs: first-layer
    locality 0.60-0.62 against 0.16 for random filters, 89-92% Gabor fits over seeds 0-2),
    where Lee's own values (lr 0.01, cost 5, sigma 0.632 for this scaling of the data) left
    the filters noise in a run of minutes. The first layer keeps momentum 0.5: at lr 0.3 the
    switch to 0.9 (ten times the step) turned its filters back into noise in a 10-epoch run.
    With one recipe for every layer, the upper layers' weights decayed away: hence the
    per-layer entry.
    """

    epochs: int = 10
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.5
    final_momentum: float = 0.9
    momentum_switch: int = 6
    weight_decay: float = 2e-4
    cd_steps: int = 1
    persistent: bool = False
    sparsity_target: float | None = None
    sparsity_cost: float = 0.1
    reshuffle: bool = False
    next_layer_data: str = "last_epoch"
    seed: int = 0
    sigma: float | None = None
    sigma_decay: float = 1.0
    sigma_floor: float = 0.1
    layers: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        """Check every field up front (a bad value would otherwise fail mid-training) and
        store numbers as plain ``int`` / ``float`` (saved as JSON)."""
        self._check_layers()
        checked = {name: constraint.check(name, getattr(self, name))
                   for name, constraint in RECIPE_FIELDS.items()}
        if checked["sigma_decay"] > 1:
            raise ValueError(f"sigma_decay must be a number in (0, 1], got {self.sigma_decay!r}")
        if checked["sigma"] is not None:
            _check_sigma_floor(checked["sigma"], checked["sigma_decay"], checked["sigma_floor"])
        for name, value in checked.items():
            object.__setattr__(self, name, value)     # frozen: the one place fields are set

    def _check_layers(self) -> None:
        """``layers``: a sequence of dicts of per-layer fields, each checked by building
        the layer's recipe, stored as a tuple of plain dicts."""
        layers = self.layers
        if isinstance(layers, (str, dict)) or not isinstance(layers, (tuple, list)) or \
                not all(isinstance(entry, dict) for entry in layers):
            raise ValueError(f"layers must be a sequence of dicts of fields, got {layers!r}")
        checked_layers = []
        for d, entry in enumerate(layers, start=1):
            odd = next((name for name in entry if name not in LAYER_FIELDS), None)
            if odd is not None:
                raise ValueError(f"layers[{d - 1}]: {odd!r} is not a field a layer may set "
                                 f"({', '.join(LAYER_FIELDS)})")
            fields = {**dataclasses.asdict(self), **entry, "layers": ()}
            checked = dataclasses.asdict(TrainingRecipe(**fields))
            checked_layers.append({name: checked[name] for name in entry})
        object.__setattr__(self, "layers", tuple(checked_layers))

    def for_layer(self, d: int) -> "TrainingRecipe":
        """The recipe of RBM ``d`` (1-based): this one with ``layers[d - 1]``'s fields, if
        any (e.g. a Gaussian first layer's own learning rate and sparsity)."""
        entry = self.layers[d - 1] if d <= len(self.layers) else {}
        return dataclasses.replace(self, **entry, layers=())

    def to_dict(self) -> dict:
        """The recipe as a JSON-ready dict (stored in checkpoints and run summaries)."""
        fields = dataclasses.asdict(self)
        fields["layers"] = [dict(entry) for entry in self.layers]
        return fields

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainingRecipe":
        """The named recipe (``"rbm.m"``: the defaults; ``"hinton"`` or ``"lee"``, see the
        class docs) with
        ``overrides`` of any fields, e.g. ``TrainingRecipe.preset("lee", epochs=5)``."""
        if not isinstance(name, str) or name not in PRESETS:
            raise ValueError(f"unknown recipe preset {name!r}; the presets are "
                             + ", ".join(map(repr, PRESETS)))
        return cls(**{**PRESETS[name], **overrides})

    @property
    def k(self) -> int:
        """Deprecated name of :attr:`cd_steps`."""
        _warn_renamed("k", "cd_steps")
        return self.cd_steps


def _check_sigma_floor(start: float, decay: float, floor: float) -> None:
    """``ValueError`` if annealing from ``start`` would raise sigma to ``floor`` (compared
    as the float32 the model stores: a run annealed to the floor may go on from there)."""
    if decay < 1 and _float32(floor) > _float32(start):
        raise ValueError(f"sigma_floor {floor:g} is above the starting sigma {start:g}; "
                         "the schedule only lowers sigma")


def _float32(value: float) -> float:
    """``value`` rounded to float32, as a Python float."""
    return torch.tensor(value, dtype=torch.float32).item()


# Named recipes: rbm.m's defaults (binary MNIST), and two for Gaussian visible units whose
# values are tabulated in TrainingRecipe's docstring.
PRESETS: dict[str, dict] = {
    "rbm.m": {},
    "hinton": dict(lr=0.01, momentum=0.5, final_momentum=0.9, weight_decay=2e-4,
                   sparsity_target=None, sigma=1.0, sigma_decay=1.0),
    "lee": dict(sparsity_target=0.1, sparsity_cost=1.0,
                layers=(dict(lr=0.3, final_momentum=0.5, weight_decay=0.01,
                             sparsity_target=0.02, sparsity_cost=50.0, sigma=1.3,
                             sigma_decay=0.99, sigma_floor=0.65),)),
}


class _CDState:
    """Buffers of one CD-k run, allocated once and reused for every batch.

    The data and its reconstruction share one ``(2B, V)`` buffer, and the positive and
    (negated) negative hidden probabilities one ``(2B, H)`` buffer, so that the whole
    weight gradient is a single ``addmm_`` with inner dimension 2B.
    """

    def __init__(self, rbm: RBMLike, batch_size: int, seed: int) -> None:
        p = rbm.weight
        b, v, h = batch_size, rbm.n_visible, rbm.n_hidden
        self.generator = torch.Generator(device=p.device).manual_seed(seed)
        self.weight_inc = torch.zeros_like(p)
        self.visible_inc = torch.zeros_like(rbm.visible_bias)
        self.hidden_inc = torch.zeros_like(rbm.hidden_bias)
        self.visible = p.new_empty(2 * b, v)          # [v0; reconstruction]
        self.hidden = p.new_empty(2 * b, h)           # [p(h | v0); -p(h | reconstruction)]
        self.hidden_sample = p.new_empty(b, h)
        self.diff = p.new_empty(b * v)
        self.error = p.new_zeros(())
        # Persistent CD's fantasy particles (binary hidden states).
        self.chain: torch.Tensor | None = None

    def sample_(self, probs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out = rand() < probs`` in place (floats 0/1)."""
        return torch.rand(out.shape, generator=self.generator, out=out).lt_(probs)

    def permutation(self, n: int) -> torch.Tensor:
        """A random order of ``n`` rows from the run's generator."""
        return torch.randperm(n, generator=self.generator, device=self.generator.device)

    def snapshot(self, rbm: RBMLike) -> dict[str, torch.Tensor]:
        """Copies of everything the rest of the run depends on (see :func:`check_snapshot`),
        buffers included (a Gaussian RBM's sigma, which the schedule changes)."""
        tensors = {name: t.detach().clone() for name, t in _state_tensors(rbm)}
        tensors.update(weight_inc=self.weight_inc.clone(), visible_inc=self.visible_inc.clone(),
                       hidden_inc=self.hidden_inc.clone(), generator=self.generator.get_state())
        if self.chain is not None:
            tensors["chain"] = self.chain.clone()
        return tensors

    def restore(self, rbm: RBMLike, tensors: dict[str, torch.Tensor]) -> None:
        """Go back to a :meth:`snapshot` (``ValueError`` if it cannot be this run's)."""
        if tensors["generator"].numel() != self.generator.get_state().numel():
            raise ValueError("the record of the last epoch was made on another kind of device "
                             f"than {self.generator.device.type}; resume on that one")
        if "chain" in tensors and tensors["chain"].shape != self.hidden_sample.shape:
            raise ValueError("the record of the last epoch holds a persistent chain of shape "
                             f"{tuple(tensors['chain'].shape)}, not "
                             f"{tuple(self.hidden_sample.shape)}: other training data?")
        with torch.no_grad():
            for name, p in _state_tensors(rbm):
                p.copy_(tensors[name])
        for name in ("weight_inc", "visible_inc", "hidden_inc"):
            getattr(self, name).copy_(tensors[name])
        self.generator.set_state(tensors["generator"].cpu())
        if "chain" in tensors:
            self.chain = tensors["chain"].to(self.visible.device, self.visible.dtype)


def _state_tensors(rbm: RBMLike) -> list[tuple[str, torch.Tensor]]:
    """The parameters and buffers of ``rbm``: what a training snapshot copies."""
    return [*rbm.named_parameters(), *rbm.named_buffers()]


def _cd_step(rbm: RBMLike, images: torch.Tensor, rows: torch.Tensor, state: _CDState,
             recipe: TrainingRecipe, momentum: float, record: torch.Tensor | None,
             sigma: float | None = None) -> None:
    """One CD-k update of ``rbm`` on the batch ``images[rows]`` (rbm.m's inner loop);
    ``record[rows]`` gets the batch's positive-phase hidden probabilities.

    ``sigma`` (Gaussian visible units, ``None`` for binary) makes the loop run on ``v / s``:
    the energy ``sum_i (v_i - a_i)^2 / (2 s^2) - c.h - (v / s).W'h`` gives the log-likelihood
    gradients ``<h (v / s)'>_data - <h (v / s)'>_model`` for W and ``(<v>_data - <v>_model) /
    s^2`` for the visible bias a (the exact derivative; in the stored ``v / s`` that is
    ``(<v / s> - <v_1 / s>) / s``). The reconstruction ``v_1`` is the mean of ``v | h``,
    ``a + s W'h``, not a sample: the usual practice for Gaussian units (as with binary ones,
    whose reconstruction is their probabilities), trading a small bias for much less noise in
    the negative statistics. The logged error is ``|v - v_1|^2`` in the data's units.
    """
    W, b, c = rbm.weight.data, rbm.visible_bias.data, rbm.hidden_bias.data
    n = rows.shape[0]
    visible, hidden = state.visible[:2 * n], state.hidden[:2 * n]
    v0, neg_v = visible[:n], visible[n:]
    pos_h, neg_h = hidden[:n], hidden[n:]
    h = state.hidden_sample[:n]

    torch.index_select(images, 0, rows, out=v0)
    if sigma is not None:
        v0.div_(sigma)                            # Gaussian: the statistics are of v / s
    torch.addmm(c, v0, W.t(), out=pos_h).sigmoid_()
    if record is not None:
        record.index_copy_(0, rows, pos_h)
    if state.chain is not None:
        h.copy_(state.chain[:n])                  # persistent CD: continue the fantasy chain
    else:
        state.sample_(pos_h, h)
    down_bias = b if sigma is None else b / sigma
    for step in range(recipe.cd_steps):
        torch.addmm(down_bias, h, W, out=neg_v)   # Gaussian: E[v | h] / s = a / s + W'h
        if sigma is None:
            neg_v.sigmoid_()
        torch.addmm(c, neg_v, W.t(), out=neg_h).sigmoid_()
        if step == 0:
            # rbm.m's error: reconstruction from the binary hidden sample of the data.
            diff = torch.sub(v0, neg_v, out=state.diff[:v0.numel()].view_as(v0)).view(-1)
            if sigma is None:
                state.error.add_(torch.dot(diff, diff))
            else:
                state.error.add_(torch.dot(diff, diff), alpha=sigma * sigma)   # data units
        if step + 1 < recipe.cd_steps or state.chain is not None:
            state.sample_(neg_h, h)
    if state.chain is not None:
        state.chain[:n].copy_(h)

    scale = recipe.lr / n
    visible_grad = v0.sum(0).sub_(neg_v.sum(0))
    neg_h.neg_()
    hidden_grad = hidden.sum(0)                   # sum of p(h | v0) - p(h | reconstruction)
    if recipe.sparsity_target is not None:
        # Lee et al. 2008: pull each unit's mean activation towards the target.
        hidden_grad.add_(pos_h.mean(0).neg_().add_(recipe.sparsity_target),
                         alpha=recipe.sparsity_cost * n)
    # inc = momentum * inc + lr * ((pos_h' v0 - neg_h' neg_v) / n - weight_decay * W)
    state.weight_inc.addmm_(hidden.t(), visible, beta=momentum, alpha=scale)
    state.weight_inc.add_(W, alpha=-recipe.lr * recipe.weight_decay)
    state.visible_inc.mul_(momentum).add_(visible_grad,
                                          alpha=scale if sigma is None else scale / sigma)
    state.hidden_inc.mul_(momentum).add_(hidden_grad, alpha=scale)
    W.add_(state.weight_inc)
    b.add_(state.visible_inc)
    c.add_(state.hidden_inc)


def _check_order(order: torch.Tensor, n: int, recipe: TrainingRecipe) -> torch.Tensor:
    """``order`` as int64 if it is a permutation of ``n`` rows, else ``ValueError``."""
    if recipe.reshuffle:
        raise ValueError("a fixed batch order and reshuffle=True exclude each other")
    if (order.shape != (n,) or order.is_floating_point() or not torch.equal(
            order.sort().values, torch.arange(n, device=order.device, dtype=order.dtype))):
        raise ValueError(f"order must be a permutation of the {n} rows")
    return order.long()


def check_snapshot(rbm: RBMLike, tensors: dict[str, torch.Tensor], recipe: TrainingRecipe,
                   label: str = "") -> None:
    """``ValueError`` unless ``tensors`` is a complete training state of ``rbm`` under
    ``recipe``, as :attr:`LastEpoch.start` holds it (names in messages get ``label``)."""
    shapes = {name: p.shape for name, p in _state_tensors(rbm)}
    shapes.update(weight_inc=rbm.weight.shape, visible_inc=rbm.visible_bias.shape,
                  hidden_inc=rbm.hidden_bias.shape)
    expected = set(shapes) | {"generator"} | ({"chain"} if recipe.persistent else set())
    odd = sorted(set(tensors) ^ expected)
    if odd:
        raise ValueError(f"{label}{odd[0]} is " + ("missing" if odd[0] in expected else
                                                     "not part of a training state"))
    for name, shape in shapes.items():
        if tensors[name].shape != shape or not tensors[name].is_floating_point():
            raise ValueError(f"{label}{name} is not a float tensor of shape {tuple(shape)}")
    if tensors["generator"].dtype != torch.uint8:
        raise ValueError(f"{label}generator is not a uint8 generator state")
    chain = tensors.get("chain")
    if chain is not None and (chain.dim() != 2 or chain.shape[1] != rbm.n_hidden
                              or not 1 <= chain.shape[0] <= recipe.batch_size):
        raise ValueError(f"{label}chain is not a (batch, {rbm.n_hidden}) tensor")


def batch_order(n: int, seed: int, device: torch.device | str | None = None) -> torch.Tensor:
    """rbm.m's ``makebatches``: one random order of ``n`` rows, cut into consecutive batches."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randperm(n, generator=generator, device=device)


@dataclass
class LastEpoch:
    """The last epoch of a run, as rbm.m hands it to the next layer of a DBN.

    ``hidden``: the positive-phase ``p(h | v)`` of every input row (rows in input order),
    computed batch by batch while the weights still moved (``batchposhidprobs``).
    ``start``: the training state when that epoch began (parameters, momentum increments,
    generator state, persistent chain), from which :func:`replay_last_epoch` recomputes
    ``hidden`` bit for bit.
    """

    hidden: torch.Tensor
    start: dict[str, torch.Tensor]


def _epoch(rbm: RBMLike, images: torch.Tensor, recipe: TrainingRecipe, state: _CDState,
           order: torch.Tensor | None, epoch: int, record: torch.Tensor | None = None,
           bar: tqdm | None = None) -> float:
    """One pass over ``images`` in batches; returns rbm.m's summed reconstruction error."""
    momentum = recipe.momentum if epoch < recipe.momentum_switch else recipe.final_momentum
    sigma = rbm.sigma if rbm.visible == "gaussian" else None    # fixed within an epoch
    n = images.shape[0]
    if order is None:
        order = state.permutation(n)
    batch_size = state.hidden_sample.shape[0]
    state.error.zero_()
    for start in range(0, n, batch_size):
        _cd_step(rbm, images, order[start:start + batch_size], state, recipe, momentum, record,
                 sigma)
        if bar is not None:
            bar.update()
    return state.error.item()


def fit_rbm(rbm: RBMLike, images: torch.Tensor, recipe: TrainingRecipe, *,
            order: torch.Tensor | None = None, keep_last_epoch: bool = False,
            progress: bool = True, description: str = "RBM",
            on_epoch: Callable[[dict], None] | None = None) -> LastEpoch | None:
    """Train ``rbm`` in place on ``images`` (floats in [0, 1]; any finite values for
    Gaussian visible units).

    Batches follow ``order`` (a permutation of the rows) in every epoch; without it one is
    drawn from the seed, once, or every epoch with ``recipe.reshuffle``. Appends to
    ``rbm.history`` one dict per epoch: ``epoch``, ``error_sum`` (rbm.m's summed squared
    reconstruction error) and ``error_per_case``, and for Gaussian visible units the
    ``sigma`` the epoch trained with (the recipe's schedule sets the model's sigma after
    each epoch, see :class:`TrainingRecipe`). With persistent CD the negative phase
    starts from the fantasy chain, so the logged error compares each batch with the chain's
    reconstruction rather than its own. Returns the :class:`LastEpoch` if
    ``keep_last_epoch``, else ``None``.
    """
    gaussian = rbm.visible == "gaussian"
    images = check_images(images, rbm.n_visible, unit_range=not gaussian)
    images = images.to(device=rbm.weight.device, dtype=rbm.weight.dtype)
    n = images.shape[0]
    if n == 0:
        raise ValueError("cannot train on an empty data set")
    start_sigma = start_sigma_of(rbm, recipe)
    state = _CDState(rbm, min(recipe.batch_size, n), recipe.seed)
    if recipe.persistent:
        state.chain = state.sample_(rbm.hidden_probs(images[:state.hidden_sample.shape[0]]),
                                    torch.empty_like(state.hidden_sample))
    if order is None and not recipe.reshuffle:
        order = state.permutation(n)
    elif order is not None:
        order = _check_order(order, n, recipe).to(images.device)
    last = None
    bar = tqdm(total=recipe.epochs * math.ceil(n / state.hidden_sample.shape[0]),
               desc=description, unit="batch", disable=not progress, leave=False)
    with torch.no_grad():
        for epoch in range(1, recipe.epochs + 1):
            record = None
            if keep_last_epoch and epoch == recipe.epochs:
                last = LastEpoch(images.new_empty(n, rbm.n_hidden), state.snapshot(rbm))
                record = last.hidden
            sigma = rbm.sigma
            error = _epoch(rbm, images, recipe, state, order, epoch, record, bar)
            end_epoch(rbm, recipe, epoch, error, n, sigma, start_sigma, description, bar,
                      on_epoch)
    bar.close()
    return last


def start_sigma_of(rbm, recipe: TrainingRecipe) -> float:
    """The sigma a run starts from, set on a Gaussian ``rbm``: the recipe's, else the
    model's own, checked against the schedule's floor (1.0 for binary units)."""
    if rbm.visible != "gaussian":
        return 1.0
    start = rbm.sigma if recipe.sigma is None else recipe.sigma
    _check_sigma_floor(start, recipe.sigma_decay, recipe.sigma_floor)
    rbm.sigma = start
    return start


def end_epoch(rbm, recipe: TrainingRecipe, epoch: int, error: float, n: int, sigma: float,
              start_sigma: float, description: str, bar, on_epoch, **figures: float) -> None:
    """An epoch's bookkeeping, for RBMs and convolutional RBMs alike: refuse a diverged run,
    append the history entry (the summed squared reconstruction error, its mean per case,
    ``figures``, and for Gaussian units the sigma the epoch used), anneal sigma, report."""
    if not math.isfinite(error):
        raise TrainingDivergedError(f"{description}: training diverged at epoch {epoch} "
                                    f"(reconstruction error {error}); lower lr")
    entry = {"epoch": epoch, "error_sum": error, "error_per_case": error / n, **figures}
    if rbm.visible == "gaussian":
        entry["sigma"] = sigma
        if recipe.sigma_decay != 1:
            rbm.sigma = max(recipe.sigma_floor, start_sigma * recipe.sigma_decay ** epoch)
    rbm.history.append(entry)
    bar.set_postfix(error_per_case=f"{error / n:.3f}")
    if on_epoch is not None:
        on_epoch(entry)


def replay_last_epoch(rbm: RBMLike, images: torch.Tensor, recipe: TrainingRecipe,
                      start: dict[str, torch.Tensor], order: torch.Tensor | None) -> torch.Tensor:
    """Recompute :attr:`LastEpoch.hidden` of a finished run from :attr:`LastEpoch.start`.

    The epoch runs on a copy, so ``rbm`` keeps its trained parameters; a warning says when
    the replay does not end on them bit for bit (e.g. another thread count or GPU model), as
    the layers trained on its output will then differ slightly from an uninterrupted run.
    ``start`` must come from the same kind of device (a CPU and a CUDA generator state are
    not interchangeable).
    """
    replica = copy.deepcopy(rbm)
    n = images.shape[0]
    state = _CDState(replica, min(recipe.batch_size, n), recipe.seed)
    hidden = images.new_empty(n, rbm.n_hidden)
    with torch.no_grad():
        state.restore(replica, start)
        _epoch(replica, images, recipe, state, order, recipe.epochs, hidden)
    if not all(torch.equal(a, b) for a, b in zip(replica.parameters(), rbm.parameters())):
        warnings.warn("replaying the last epoch did not reproduce the trained weights bit for "
                      "bit (another device or thread count?); the layers trained on it will "
                      "differ slightly from an uninterrupted run", RuntimeWarning, stacklevel=2)
    return hidden
