"""A DBN's top-down sampler for unit sampling: p_d(x | h_{d,i} = 1) of the DBN truncated at
layer d (a convolutional DBN's is :meth:`featvis.models.ConvDBN.sample`).

``"one-hot"``: fix ``h_d = e_i`` (other units of the layer off); the layer below is then
``sigmoid(W_d[i] + b_{d-1})``, a row gather rather than a product with a one-hot vector.
``"gibbs"`` (Erhan et al. 2009): run block Gibbs chains in the top RBM (RBM_d) with
``h_d[i]`` clamped to 1 and the layer's other units free, keeping a state every ``interval``
steps after ``burn_in``. Either way, binary samples are then drawn down through the
generative biases to the pixels, which are returned as their means ``E[v | h_1]``:
probabilities of binary pixels, ``b + sigma W'h_1`` for Gaussian ones (whose Gibbs chains
draw normal pixels).

Every picture has a baseline with the unit off, drawn with the same random numbers: the
all-off state ``h_d = 0`` for one-hot, the same chains clamped to ``h_d[i] = 0`` for Gibbs.
``contrast`` is the mean minus the baseline's mean: what switching the unit on changes,
without the picture that every unit shares. In a DBN unit ``u`` draws all its uniforms from
its own generator seeded by ``(seed, u)``, so its samples do not depend on the other units
asked for (a convolutional DBN's sampler draws every unit from one generator). All units,
clamps, chains and samples form one batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ..units import unit_generator
from .rbm import RBM

if TYPE_CHECKING:
    from .dbn import DBN

VARIANTS = ("one-hot", "gibbs")
# Uniforms a unit draws at once for its Gibbs steps (256 KiB in float32): a size of one unit's
# chains, never of the batch, so that a unit's draws do not depend on the others (on CUDA the
# numbers depend on how a stream is split into draws).
_BLOCK = 1 << 16


def _generators(units: torch.Tensor, seed: int) -> list[torch.Generator]:
    """One generator per unit, seeded by ``(seed, unit)`` as maximize's starting points."""
    return [unit_generator(seed, unit, units.device) for unit in units.tolist()]


def _uniforms(generators: list[torch.Generator], shape: tuple[int, ...], like: torch.Tensor
              ) -> torch.Tensor:
    """``(U, *shape)`` uniforms; row ``u`` is the next block of unit ``u``'s own generator."""
    out = like.new_empty((len(generators), *shape))
    for row, generator in zip(out, generators):     # draws only; the math is batched
        torch.rand(shape, generator=generator, out=row)
    return out


def _states(noise: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Binary states ``noise < probs`` as floats, broadcast (the clamps share ``noise``);
    comparing straight into a float tensor is several times faster than converting bools."""
    shape = torch.broadcast_shapes(noise.shape, probs.shape)
    return torch.lt(noise, probs, out=probs.new_empty(shape))


def _down_pass(dbn: "DBN", below: torch.Tensor, layer: int, noise: torch.Tensor) -> torch.Tensor:
    """Pixel probabilities ``(2, U, S, D)`` from probabilities ``below (2, U, S or 1, n)`` of
    layer ``layer - 1``: binary states down to layer 1, both clamps drawn with the same
    uniforms ``noise (U, S, n_{d-1} + ... + n_1)``."""
    probs, start = below, 0
    for rbm in reversed(dbn.rbms[:layer - 1]):
        n = rbm.n_hidden
        states = _states(noise[..., start:start + n], probs)
        probs = rbm.visible_mean(states.view(-1, n)).view(*states.shape[:-1], -1)
        start += n
    return probs.expand(*probs.shape[:2], noise.shape[1], probs.shape[-1])


def _gibbs_below(rbm: RBM, units: torch.Tensor, n_samples: int, n_chains: int, burn_in: int,
                 interval: int, generators: list[torch.Generator], progress: bool,
                 desc: str) -> torch.Tensor:
    """Probabilities of RBM_d's visible layer at the kept states of block Gibbs chains with
    ``h_d[i]`` clamped to 1 (``[0]``) and to 0 (``[1]``), ``(2, U, n_samples, n_{d-1})``; both
    clamps start from the same states and share every uniform. A unit's generator gives its
    chains' initial states, then each step's uniforms for ``h_{d-1}`` and ``h_d``."""
    n_units, n_v, n_h, w = units.numel(), rbm.n_visible, rbm.n_hidden, rbm.weight
    per_chain = -(-n_samples // n_chains)
    total = burn_in + interval * per_chain
    block = max(1, _BLOCK // (n_chains * (n_v + n_h)))
    rows = torch.arange(n_units, device=w.device)
    clamp = w.new_tensor([[1.0], [0.0]])                          # broadcast to (U, 2, chains)
    h = _states(_uniforms(generators, (n_chains, n_h), w), w.new_full((2, 1, 1, n_h), 0.5))
    h[:, rows, :, units] = clamp
    below = rbm.visible_mean(h.view(-1, n_h)).view(2, n_units, n_chains, n_v)
    kept = below.new_empty(2, n_units, per_chain, n_chains, n_v)
    for step in tqdm(range(total), desc=desc, unit="step", disable=not progress, leave=False):
        if step % block == 0:
            noise = _uniforms(generators, (min(block, total - step), n_chains, n_v + n_h), w)
        v_noise, h_noise = noise[:, step % block].split([n_v, n_h], -1)
        v = rbm.visible_from_uniforms(v_noise, below).view(-1, n_v)
        h = _states(h_noise, rbm.hidden_probs(v).view(2, n_units, n_chains, n_h))
        h[:, rows, :, units] = clamp
        below = rbm.visible_mean(h.view(-1, n_h)).view(2, n_units, n_chains, n_v)
        done = step + 1 - burn_in
        if done > 0 and done % interval == 0:
            kept[:, :, done // interval - 1] = below
    # Time-major: every chain's first kept state, then every chain's second, ...
    return kept.view(2, n_units, per_chain * n_chains, n_v)[:, :, :n_samples]


def unit_pixels(dbn: "DBN", layer: int, units: torch.Tensor, n_samples: int, variant: str,
                n_chains: int, burn_in: int, interval: int, seed: int, progress: bool
                ) -> torch.Tensor:
    """A DBN's pixel means ``(2, U, S, D)`` with each unit on (``[0]``) and off (``[1]``),
    the same uniforms for both (see the module docstring)."""
    rbm = dbn.rbms[layer - 1]
    generators = _generators(units, seed)
    if variant == "one-hot":
        on = rbm.visible_mean_one_hot(units)
        off = rbm.visible_mean(on.new_zeros(1, rbm.n_hidden)).expand_as(on)
        below = torch.stack([on, off])[:, :, None]
    else:
        below = _gibbs_below(rbm, units, n_samples, n_chains, burn_in, interval,
                             generators, progress, f"gibbs layer {layer}")
    depth = sum(dbn.sizes[1:layer])            # units of layers 1..d-1, drawn per sample
    noise = _uniforms(generators, (n_samples, depth), rbm.weight)
    return _down_pass(dbn, below, layer, noise)
