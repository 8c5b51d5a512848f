"""Method 3: unit sampling in a DBN, p_d(x | h_{d,i} = 1) of the DBN truncated at layer d.

``"one-hot"``: fix ``h_d = e_i`` (other units of the layer off); the layer below is then
``sigmoid(W_d[i] + b_{d-1})``, a row gather rather than a product with a one-hot vector.
``"gibbs"``: run block Gibbs chains in the top RBM (RBM_d) with ``h_d[i]`` clamped to 1 and
the layer's other units free, keeping a state every ``interval`` steps after ``burn_in``.
Either way, binary samples are then drawn down through the generative biases to the pixels,
which are returned as probabilities. All units, chains and samples form one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..errors import check_int
from ..models.dbn import DBN
from ..models.rbm import bernoulli
from ..probe import probe
from ..units import Units, resolve_units

__all__ = ["UnitSamples", "sample_unit"]

VARIANTS = ("one-hot", "gibbs")


@dataclass
class UnitSamples:
    """``samples (U, S, D)`` pixel probabilities, ``mean (U, D)``, ``units (U,)``."""

    samples: torch.Tensor
    mean: torch.Tensor
    units: torch.Tensor


def _down_pass(dbn: DBN, below: torch.Tensor, shape: tuple[int, ...], layer: int,
               generator: torch.Generator) -> torch.Tensor:
    """From probabilities of layer ``layer - 1`` (broadcastable to ``shape``), sample binary
    states down to layer 1 and return pixel probabilities, flattened to ``(rows, D)``."""
    probs = below.expand(shape)
    for rbm in reversed(dbn.rbms[:layer - 1]):
        states = bernoulli(probs, generator)
        probs = rbm.visible_probs(states.view(-1, states.shape[-1]))
    return probs.reshape(-1, probs.shape[-1])


def _gibbs_below(dbn: DBN, layer: int, units: torch.Tensor, n_samples: int, n_chains: int,
                 burn_in: int, interval: int, generator: torch.Generator, progress: bool
                 ) -> torch.Tensor:
    """Probabilities of layer ``layer - 1`` at the kept states of clamped Gibbs chains,
    ``(U, n_samples, n_{d-1})``."""
    rbm = dbn.rbms[layer - 1]
    n_units = units.numel()
    per_chain = -(-n_samples // n_chains)
    rows = torch.arange(n_units * n_chains, device=units.device)
    clamp = units.repeat_interleave(n_chains)
    h = bernoulli(torch.full((n_units * n_chains, rbm.n_hidden), 0.5, device=units.device),
                  generator)
    h[rows, clamp] = 1.0
    kept = []
    total = burn_in + interval * per_chain
    for step in tqdm(range(1, total + 1), desc=f"gibbs layer {layer}", unit="step",
                     disable=not progress, leave=False):
        below = rbm.visible_probs(h)
        h = rbm.sample_hidden(bernoulli(below, generator), generator)
        h[rows, clamp] = 1.0
        if step > burn_in and (step - burn_in) % interval == 0:
            kept.append(rbm.visible_probs(h))
    # Time-major: every chain's first kept state, then every chain's second, ...
    states = torch.stack(kept, 1).view(n_units, n_chains, per_chain, rbm.n_visible)
    return states.transpose(1, 2).reshape(n_units, n_chains * per_chain, -1)[:, :n_samples]


def sample_unit(model: torch.nn.Module, layer: int, units: Units = None, n_samples: int = 100,
                variant: str = "one-hot", n_chains: int = 10, burn_in: int = 1000,
                interval: int = 10, seed: int = 0, progress: bool = False) -> UnitSamples:
    """Samples of the input given that unit ``i`` of hidden layer ``layer`` is on (a model
    with a generative side only: :class:`~featvis.probe.UnsupportedError` otherwise)."""
    seam = probe(model)
    dbn = seam.generative()
    layer = seam.layer(layer).name
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    for name, value in (("n_samples", n_samples), ("n_chains", n_chains),
                        ("interval", interval)):
        check_int(name, value)
    check_int("burn_in", burn_in, minimum=0)
    seed = check_int("seed", seed, minimum=None)
    rbm = dbn.rbms[layer - 1]
    device = rbm.weight.device
    units = resolve_units(units, rbm.n_hidden, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        if variant == "one-hot":
            below = torch.sigmoid(rbm.weight[units] + rbm.visible_bias)[:, None]  # (U, 1, n)
            shape = (units.numel(), n_samples, below.shape[-1])
        else:
            below = _gibbs_below(dbn, layer, units, n_samples, n_chains, burn_in, interval,
                                 generator, progress)
            shape = below.shape
        pixels = _down_pass(dbn, below, shape, layer, generator).view(shape[0], n_samples, -1)
    return UnitSamples(samples=pixels, mean=pixels.mean(1), units=units)
