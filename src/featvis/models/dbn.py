"""Deep belief net: a stack of RBMs trained greedily, one at a time (Hinton et al. 2006).

Hidden layers are numbered ``d = 1..L`` from the input (the write-up this project follows
counts the input as layer 1, so its "layer 2" is ``d = 1`` here). The up-pass into layer d
uses RBM_d's ``hidden_bias`` (recognition); the down-pass from d to d-1 uses RBM_d's
``visible_bias`` (generative). The two are never merged. With ``visible="gaussian"`` only
the first RBM has Gaussian visible units (real-valued inputs); the hidden layers stay binary.
"""

from __future__ import annotations

import dataclasses
import os
from functools import partial
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..data.tensors import check_images
from ..errors import is_int
from ..params import check_int
from .training import TrainingRecipe, batch_order, fit_rbm, replay_last_epoch
from ..data.whitening import Whitening
from .codec import read_dbn, save_dbn
from .dbn_sampling import unit_pixels
from .stack import Stack
from .rbm import RBM

__all__ = ["DBN"]


class DBN(Stack, nn.Module):
    """A stack of :class:`RBM` s with sizes ``[n_visible, h_1, ..., h_L]``.

    ``visible`` and ``sigma`` are those of the first RBM (see :class:`RBM`): ``"gaussian"``
    takes real-valued inputs (e.g. whitened image patches) with noise ``sigma``.

    Attributes:
        rbms: ``nn.ModuleList``; ``rbms[d - 1]`` connects layer ``d - 1`` to layer ``d``.
        input_norm: mean L2 norm of the training inputs (recorded by :meth:`fit`); the
            default radius ``rho`` of activation maximization.
        recipe: the :class:`TrainingRecipe` of the last :meth:`fit` (``None`` before).
        data_info: free-form description of the training data, saved with the model.
        whitening: the :class:`~featvis.data.whitening.Whitening` the inputs went through (natural
            patches), saved with the model, or ``None``; first-layer filters are shown
            through it.
        last_epoch_starts: while training is incomplete, per trained layer d the state at
            the start of its last epoch (see :class:`featvis.models.training.LastEpoch`); saved.
    """

    def __init__(self, sizes: Sequence[int], *, visible: str = "binary", sigma: float = 1.0,
                 seed: int | None = 0) -> None:
        super().__init__()
        # Integers only: int() would quietly turn 784.7 or "784" into a size.
        values = list(sizes) if isinstance(sizes, Iterable) and not isinstance(sizes, str) else []
        if len(values) < 2 or not all(is_int(s) and s > 0 for s in values):
            raise ValueError(f"DBN sizes must be >= 2 positive integers, got {sizes!r}")
        seed = None if seed is None else check_int("seed", seed, minimum=None)
        self.sizes = [int(s) for s in values]
        self.rbms = nn.ModuleList(
            RBM(v, h, seed=None if seed is None else seed + d,
                **(dict(visible=visible, sigma=sigma) if d == 1 else {}))
            for d, (v, h) in enumerate(zip(self.sizes[:-1], self.sizes[1:]), start=1)
        )
        self.register_buffer("_input_norm", torch.tensor(float("nan")))
        self.recipe: TrainingRecipe | None = None
        self.data_info: dict = {}
        self.whitening: Whitening | None = None
        # Layer d -> the state at the start of its last epoch, kept until all layers are
        # trained so that an interrupted fit can resume exactly (see fit).
        self.last_epoch_starts: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def trained_layers(self) -> int:
        """How many RBMs, from the bottom, have a training history."""
        count = 0
        for rbm in self.rbms:
            if not rbm.history:
                break
            count += 1
        return count

    def extra_repr(self) -> str:
        text = "sizes=" + "-".join(map(str, self.sizes))
        return text if self.visible == "binary" else f"{text}, visible={self.visible!r}"

    def check_layer(self, layer: int) -> int:
        """Validate a hidden depth ``layer`` in ``1..L`` (returned as an ``int``)."""
        if not is_int(layer) or not 1 <= layer <= self.n_layers:
            raise ValueError(f"layer must be a hidden depth in 1..{self.n_layers}, got {layer!r}")
        return int(layer)

    def transform(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Hidden probabilities of layer ``layer`` (1-based) for inputs ``x`` (deterministic
        up-pass); ``x`` is checked (2-D, floating, finite, the input width) and moved to the
        model's device and dtype."""
        layer = self.check_layer(layer)
        x = check_images(x, self.sizes[0], name="x", unit_range=False)
        return self._up(x.to(self.rbms[0].weight.device, self.rbms[0].weight.dtype), layer)

    def _up(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """:meth:`transform` without the checks, for callers that validated ``x`` and
        ``layer`` once and then call it in a loop (e.g. every step of ``maximize``)."""
        h = x
        for rbm in self.rbms[:layer]:
            h = rbm.hidden_probs(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden probabilities of the top layer."""
        return self.transform(x, self.n_layers)

    def fit(self, images: torch.Tensor, epochs: int = 10, batch_size: int = 100, *,
            seed: int = 0, resume: bool = False, progress: bool = True,
            on_epoch: Callable[[int, dict], None] | None = None,
            on_layer: Callable[["DBN", int], None] | None = None, **recipe) -> "DBN":
        """Greedy layer-wise training, one RBM at a time, as in Hinton's rbm.m.

        Every RBM is reset and trained with the same recipe (``recipe`` as in :meth:`RBM.fit`;
        RBM d uses seed ``seed + d``) on one batch order drawn from ``seed`` (each epoch its
        own order with ``reshuffle=True``). RBM d + 1 learns
        RBM d's hidden probabilities: by default those of its last epoch's positive phase
        (rbm.m's ``batchposhidprobs``, which the reference figures use), with
        ``next_layer_data="final"`` its up-pass once trained. Inputs are in [0, 1], or any
        finite values with Gaussian visible units (the recipe's ``sigma`` schedule applies
        to the first RBM only). ``resume=True`` keeps the
        layers that already have a history and trains the rest; it replays the last epoch
        of each kept layer to rebuild the hand-over, so that an interrupted and resumed run
        ends on the same model as an uninterrupted one. ``on_epoch(d, entry)`` is called
        after every epoch with its history entry, and ``on_layer(dbn, d)`` after layer d is
        done (e.g. to save a checkpoint).
        """
        with torch.no_grad():
            recipe = TrainingRecipe(epochs=epochs, batch_size=batch_size, seed=seed, **recipe)
            seed = recipe.seed                      # checked, a plain int
            images = check_images(images, self.sizes[0], unit_range=self.visible == "binary")
            images = images.to(self.rbms[0].weight.device, self.rbms[0].weight.dtype)
            if resume and self.recipe is not None and self.recipe != recipe:
                raise ValueError("cannot resume with a different training recipe: "
                                 f"saved {self.recipe.to_dict()}, asked {recipe.to_dict()}")
            start = self.trained_layers if resume else 0
            if start == self.n_layers:
                return self
            if not resume:
                self.last_epoch_starts.clear()
            self.recipe = recipe
            self.input_norm = images.norm(dim=1).mean().item()
            order = None if recipe.reshuffle else batch_order(len(images), seed, images.device)
            features = images
            for d, rbm in enumerate(self.rbms, start=1):
                layer_recipe = dataclasses.replace(recipe.for_layer(d), seed=seed + d)
                keep_last = recipe.next_layer_data == "last_epoch" and d < self.n_layers
                if d <= start:
                    features = self._replay_hand_over(d, features, layer_recipe, order)
                    continue
                rbm.reset_parameters(seed + d)
                last = fit_rbm(rbm, features, layer_recipe, order=order,
                               keep_last_epoch=keep_last, progress=progress,
                               description=f"layer {d}/{self.n_layers} "
                                           f"({rbm.n_visible}->{rbm.n_hidden})",
                               on_epoch=None if on_epoch is None else partial(on_epoch, d))
                if keep_last:
                    self.last_epoch_starts[d] = last.start
                    features = last.hidden
                elif d < self.n_layers:
                    features = rbm.hidden_probs(features)
                else:
                    self.last_epoch_starts.clear()   # complete: nothing left to resume
                if on_layer is not None:
                    on_layer(self, d)
        return self

    def _replay_hand_over(self, d: int, features: torch.Tensor, recipe: TrainingRecipe,
                          order: torch.Tensor | None) -> torch.Tensor:
        """On resume, what the trained RBM d handed to RBM d + 1."""
        rbm = self.rbms[d - 1]
        if recipe.next_layer_data == "final":
            return rbm.hidden_probs(features)
        if d not in self.last_epoch_starts:
            raise ValueError(f"cannot resume: the model has no record of layer {d}'s last "
                             "epoch (saved by an interrupted featvis train); train it afresh")
        return replay_last_epoch(rbm, features, recipe, self.last_epoch_starts[d], order)

    def sample(self, layer: int, units: torch.Tensor, n_samples: int, *, seed: int = 0,
               variant: str = "one-hot", n_chains: int = 10, burn_in: int = 1000,
               interval: int = 10, progress: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(samples (U, S, D), contrast (U, D))`` for each unit of hidden layer ``layer``:
        pixel means drawn with the unit on, and their mean minus that of the same draws with
        it off (:mod:`featvis.models.dbn_sampling`: ``variant`` ``"one-hot"`` or ``"gibbs"``;
        a unit's random numbers depend on ``(seed, unit)`` only)."""
        pixels = unit_pixels(self, layer, units, n_samples, variant, n_chains, burn_in,
                             interval, seed, progress)
        means = pixels.mean(2)
        return pixels[0].contiguous(), means[0] - means[1]

    def save(self, path: str | os.PathLike) -> None:
        """Write safetensors + JSON metadata atomically (see :mod:`featvis.models.checkpoint`)."""
        save_dbn(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "DBN":
        """Read a checkpoint written by :meth:`save` (never unpickles);
        :class:`~featvis.CheckpointError` if the file is not one."""
        return read_dbn(cls, path, device)
