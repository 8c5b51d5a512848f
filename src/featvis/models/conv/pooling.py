"""Probabilistic max-pooling (Lee et al. 2009): each ``C x C`` block of a detection map is a
softmax over its ``C^2`` units and "all off"; blocks are computed in a phase layout, see
:mod:`featvis.models.conv.crbm` for the model."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...params import check_int


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


def to_phases(x: torch.Tensor, pool: int) -> torch.Tensor:
    """A new ``(C^2, N, K, H / C, W / C)`` tensor of ``x (N, K, H, W)``'s block phases."""
    if pool == 1:
        return x.unsqueeze(0).clone()
    n, k, h, w = x.shape
    out = x.new_empty(pool * pool, n, k, h // pool, w // pool)
    for s in range(pool * pool):
        out[s] = x[:, :, s // pool::pool, s % pool::pool]
    return out


def unphase(phases: torch.Tensor, pool: int) -> torch.Tensor:
    """The ``(N, K, H, W)`` maps of a phase layout (inverse of :func:`to_phases`)."""
    if pool == 1:
        return phases[0]
    _, n, k, hp, wp = phases.shape
    out = phases.new_empty(n, k, hp * pool, wp * pool)
    for s in range(pool * pool):
        out[:, :, s // pool::pool, s % pool::pool] = phases[s]
    return out


def softmax_phases(logits: torch.Tensor, pool: int, top_down: torch.Tensor | None,
                    pool_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`block_softmax` with the detection probabilities in the phase layout."""
    x = to_phases(logits, pool)
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
    phases, pool_probs = softmax_phases(logits, pool, top_down, pool_state)
    return unphase(phases, pool), pool_probs


def sample_phases(phases: torch.Tensor, generator: torch.Generator | None,
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
    h, p = sample_phases(to_phases(probs, pool), generator, pool_state)
    return unphase(h, pool), p


def block_log_partition(logits: torch.Tensor, pool: int) -> torch.Tensor:
    """``log(1 + sum_j exp(I_j))`` per block, ``(N, K, H / C, W / C)``, stably."""
    return F.softplus(to_phases(logits, pool).logsumexp(0))


def log_block_softmax(logits: torch.Tensor, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The logs of :func:`block_softmax`'s ``(detection_probs, pool_probs)``, from the logits
    without forming the probabilities: finite, and with a gradient of the logits' size, where
    a probability underflows (a sparse layer's units far below their threshold, whose
    probabilities of ``e^-30`` give gradients that a normalized step cannot see)."""
    x = to_phases(logits, pool)
    on = x.logsumexp(0)                                   # log sum_j exp(I_j)
    log_total = F.softplus(on)                            # log(1 + sum_j exp(I_j))
    return unphase(x - log_total, pool), on - log_total
