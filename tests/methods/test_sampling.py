"""Unit sampling against enumeration: the raw mean p(x | h_i = 1), the contrast with the unit
off, and a unit's random numbers independent of the other units asked for."""

import math

import pytest
import torch
import torch.nn.functional as F

from featvis import sample_unit

from helpers import binary_states, random_dbn


def pixel_moments(dbn, layer, dist):
    """Exact mean and variance ``(D,)`` of one sample's pixel probabilities when layer
    ``layer``'s state has distribution ``dist`` over ``binary_states(n_layer)`` and binary
    states are drawn down to layer 1: a sum over every state of layers ``layer - 1 .. 1``."""
    states = binary_states(dbn.sizes[layer])
    for rbm in reversed(dbn.rbms[1:layer]):
        below = binary_states(rbm.n_visible)
        p = torch.sigmoid(states @ rbm.weight.double() + rbm.visible_bias.double())
        dist = dist @ torch.where(below > 0, p[:, None], 1 - p[:, None]).prod(-1)
        states = below
    rbm = dbn.rbms[0]
    pixels = torch.sigmoid(states @ rbm.weight.double() + rbm.visible_bias.double())
    mean = dist @ pixels
    return mean, (dist @ pixels ** 2 - mean ** 2).clamp(min=0)


def point_mass(n, on=None):
    """The distribution over ``binary_states(n)`` that puts all its mass on ``e_on`` (on
    ``0`` when ``on`` is None)."""
    top = torch.zeros(n, dtype=torch.float64)
    if on is not None:
        top[on] = 1.0
    return (binary_states(n) == top).all(1).double()


def clamped_marginal(rbm, i, value):
    """RBM_d's marginal over its hidden states with ``h_i = value``: ``exp(-F(h))`` there."""
    states = binary_states(rbm.n_hidden)
    W, b, c = rbm.weight.double(), rbm.visible_bias.double(), rbm.hidden_bias.double()
    weights = torch.exp(states @ c + F.softplus(states @ W + b).sum(1)) * (states[:, i] == value)
    return weights / weights.sum()


def assert_within_4_se(mean, contrast, on, off, n):
    """One unit's ``mean`` and ``contrast`` within 4 standard errors of the exact values, given
    the exact ``(mean, variance)`` of a sample with the unit on and off and ``n`` independent
    samples; the contrast's standard deviation is at most ``sd_on + sd_off`` however the paired
    draws correlate."""
    (mean_on, var_on), (mean_off, var_off) = on, off
    se_on = var_on.sqrt() / math.sqrt(n)
    se_contrast = (var_on.sqrt() + var_off.sqrt()) / math.sqrt(n)
    assert ((mean.double() - mean_on).abs() <= 4 * se_on + 1e-6).all()
    assert ((contrast.double() - (mean_on - mean_off)).abs() <= 4 * se_contrast + 1e-6).all()


# -- the raw mean (moved from test_methods.py) ----------------------------------------------

def test_one_hot_sampling_on_a_single_rbm_is_the_visible_conditional():
    dbn = random_dbn([6, 4], seed=5)
    got = sample_unit(dbn, 1, n_samples=50)
    rbm = dbn.rbms[0]
    expected = torch.sigmoid(rbm.weight + rbm.visible_bias)
    torch.testing.assert_close(got.mean, expected)
    torch.testing.assert_close(got.contrast, expected - torch.sigmoid(rbm.visible_bias))
    assert got.samples.shape == (4, 50, 6) and got.contrast.shape == (4, 6)


def test_one_hot_sampling_two_layers_matches_enumeration():
    """p(x | h2 = e_i) = sum over all h1 of p(h1 | h2 = e_i) * sigmoid(h1 W1 + b0)."""
    dbn = random_dbn([5, 4, 3], seed=6)
    r1, r2 = dbn.rbms
    n = 40_000
    got = sample_unit(dbn, 2, n_samples=n, seed=1)
    for i in range(3):
        p_h1 = torch.sigmoid(r2.weight[i] + r2.visible_bias).double()
        exact = torch.zeros(5, dtype=torch.float64)
        for h1 in binary_states(4):
            prob = torch.prod(torch.where(h1 > 0, p_h1, 1 - p_h1))
            exact += prob * torch.sigmoid(h1 @ r1.weight.double() + r1.visible_bias.double())
        # Each sample's pixel is a probability in [0, 1]: std <= 0.5, so 5 SE <= 2.5 / sqrt(n).
        assert (got.mean[i].double() - exact).abs().max() < 2.5 / math.sqrt(n)


def test_gibbs_sampling_matches_the_clamped_marginal():
    """With h_i clamped, Gibbs in the RBM samples p(h | h_i = 1) ∝ exp(-F(h)) on h_i = 1."""
    dbn = random_dbn([4, 3], seed=7, scale=0.7)
    rbm = dbn.rbms[0]
    W, b, c = rbm.weight.double(), rbm.visible_bias.double(), rbm.hidden_bias.double()
    got = sample_unit(dbn, 1, n_samples=4000, variant="gibbs", n_chains=200, burn_in=50,
                      interval=2, seed=3)
    for i in range(3):
        weights, values = [], []
        for h in binary_states(3):
            if h[i] != 1.0:
                continue
            weights.append(torch.exp(h @ c + F.softplus(h @ W + b).sum()))
            values.append(torch.sigmoid(h @ W + b))
        weights = torch.stack(weights) / sum(weights)
        exact = (weights[:, None] * torch.stack(values)).sum(0)
        assert (got.mean[i].double() - exact).abs().max() < 0.02


def test_gibbs_sampling_through_two_layers_matches_enumeration():
    """Layer 2 of a 5-4-3 DBN: the clamped chain samples p(h1, h2 | h2_i = 1) of RBM 2, then
    the pixels are E[sigmoid(h1 W1 + b0)] under it; enumerate every (h1, h2)."""
    dbn = random_dbn([5, 4, 3], seed=12, scale=0.6)
    r1, r2 = dbn.rbms
    W2, b1, c2 = r2.weight.double(), r2.visible_bias.double(), r2.hidden_bias.double()
    got = sample_unit(dbn, 2, n_samples=3001, variant="gibbs", n_chains=400, burn_in=40,
                      interval=2, seed=5)                  # 3001: not a multiple of the chains
    assert got.samples.shape == (3, 3001, 5)
    for i in range(3):
        weights, pixels = [], []
        for h1 in binary_states(4):
            for h2 in binary_states(3):
                if h2[i] != 1.0:
                    continue
                weights.append(torch.exp(h1 @ b1 + h2 @ c2 + h2 @ W2 @ h1))
                pixels.append(torch.sigmoid(h1 @ r1.weight.double() + r1.visible_bias.double()))
        weights = torch.stack(weights) / sum(weights)
        exact = (weights[:, None] * torch.stack(pixels)).sum(0)
        assert (got.mean[i].double() - exact).abs().max() < 0.02


def test_sampling_is_reproducible():
    dbn = random_dbn([5, 4, 3], seed=8)
    a = sample_unit(dbn, 2, n_samples=5, seed=2).samples
    assert torch.equal(a, sample_unit(dbn, 2, n_samples=5, seed=2).samples)
    assert not torch.equal(a, sample_unit(dbn, 2, n_samples=5, seed=3).samples)


# -- the contrast with the unit off ---------------------------------------------------------

@pytest.mark.parametrize("layer", [1, 2, 3])
def test_one_hot_contrast_matches_enumeration(layer):
    """E[x | h_d = e_i] - E[x | h_d = 0], summed over every state of the layers below."""
    dbn = random_dbn([6, 5, 4, 3], seed=21)
    n, size = 20_000, dbn.sizes[layer]
    got = sample_unit(dbn, layer, n_samples=n, seed=2)
    off = pixel_moments(dbn, layer, point_mass(size))
    for i in range(size):
        on = pixel_moments(dbn, layer, point_mass(size, i))
        assert_within_4_se(got.mean[i], got.contrast[i], on, off, n)


@pytest.mark.parametrize("layer", [1, 2])
def test_gibbs_contrast_matches_the_clamped_marginals(layer):
    """One kept state per chain (``n_chains = n_samples``), so the samples are independent:
    the top state follows RBM_d's marginal with h_i = 1, the baseline's with h_i = 0, and the
    layers below follow the generative conditionals."""
    dbn = random_dbn([5, 4, 3], seed=13, scale=0.7)
    n, size = 4000, dbn.sizes[layer]
    got = sample_unit(dbn, layer, n_samples=n, variant="gibbs", n_chains=n, burn_in=50,
                      interval=1, seed=6)
    for i in range(size):
        on = pixel_moments(dbn, layer, clamped_marginal(dbn.rbms[layer - 1], i, 1.0))
        off = pixel_moments(dbn, layer, clamped_marginal(dbn.rbms[layer - 1], i, 0.0))
        assert_within_4_se(got.mean[i], got.contrast[i], on, off, n)


# -- random numbers per unit ----------------------------------------------------------------

@pytest.mark.parametrize("variant", ["one-hot", "gibbs"])
def test_a_units_samples_depend_on_the_seed_and_the_unit_only(variant):
    """The same numbers alone, in a batch, twice in a batch; the batched matrix products may
    round differently with the batch size, hence a tolerance of float32 rounding."""
    dbn = random_dbn([6, 5, 4], seed=14)
    kwargs = dict(n_samples=7, variant=variant, n_chains=3, burn_in=4, interval=2)
    together = sample_unit(dbn, 2, units=[3, 1, 0, 1], seed=4, **kwargs)
    alone = sample_unit(dbn, 2, units=[1], seed=4, **kwargs)
    again = sample_unit(dbn, 2, units=[3, 1, 0, 1], seed=4, **kwargs)
    other = sample_unit(dbn, 2, units=[1], seed=5, **kwargs)
    for field in ("samples", "mean", "contrast"):
        for row in (1, 3):
            torch.testing.assert_close(getattr(together, field)[row], getattr(alone, field)[0],
                                       rtol=0, atol=1e-6)
        assert torch.equal(getattr(together, field), getattr(again, field))
        assert not torch.allclose(getattr(other, field), getattr(alone, field))


def gaussian_dbn(sizes, sigma=0.5, seed=3):
    """A DBN with Gaussian visible units and random weights of a useful size."""
    from featvis import DBN

    dbn = DBN(sizes, visible="gaussian", sigma=sigma, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for rbm in dbn.rbms:
            rbm.weight.normal_(0, 1.0, generator=generator)
            rbm.visible_bias.normal_(0, 0.5, generator=generator)
            rbm.hidden_bias.normal_(0, 0.5, generator=generator)
    return dbn


def test_gaussian_one_hot_pixels_are_the_conditional_mean():
    """Layer 1 of a Gaussian DBN: h = e_i gives E[v | h] = b + sigma W_i exactly, the contrast
    with all units off is sigma W_i; layer 2: the mean is linear in h_1, so its expectation
    is b + sigma W_1' p with p = sigmoid(W_2[i] + b_1)."""
    dbn = gaussian_dbn([4, 3, 2])
    first, second = dbn.rbms
    out = sample_unit(dbn, 1, n_samples=5)
    expected = first.visible_bias + 0.5 * first.weight
    torch.testing.assert_close(out.samples, expected[:, None].expand(3, 5, 4))
    torch.testing.assert_close(out.contrast, 0.5 * first.weight)
    out = sample_unit(dbn, 2, n_samples=40_000, seed=1)
    p = torch.sigmoid(second.weight + second.visible_bias)
    torch.testing.assert_close(out.mean, first.visible_bias + 0.5 * p @ first.weight,
                               atol=0.03, rtol=0)


def test_gaussian_gibbs_reaches_the_clamped_marginal_of_h():
    """Gibbs in a Gaussian RBM with h_i = 1: integrating v out gives p(h) proportional to
    exp(c.h + (b / s).W'h + |W'h|^2 / 2); the pixels' mean is the expectation of b + s W'h
    under it with h_i = 1, summed over the 2^(H-1) other states."""
    dbn = gaussian_dbn([2, 3], sigma=0.7, seed=5)
    rbm = dbn.rbms[0]
    w, b, c, s = (t.double() for t in (rbm.weight, rbm.visible_bias, rbm.hidden_bias,
                                       torch.tensor(0.7)))
    states = binary_states(3)
    log_p = states @ c + (states @ w) @ (b / s) + (states @ w).pow(2).sum(1) / 2
    for i in range(3):
        keep = states[:, i] == 1
        p = torch.softmax(log_p[keep], 0)
        expected = p @ (b + s * states[keep] @ w)
        out = sample_unit(dbn, 1, units=[i], variant="gibbs", n_samples=4000, n_chains=40,
                          burn_in=100, interval=2, seed=2)
        torch.testing.assert_close(out.mean[0].double(), expected, atol=0.05, rtol=0)


def test_a_cdbn_is_sampled_by_its_own_top_down_pass():
    """A convolutional DBN's samples are ConvDBN.sample's for the seed (the centre pooling
    unit clamped on); the contrast is the mean-field down-pass with the unit on minus with
    it off: for a single layer, the clamped block's softmax (given on) times the filter,
    through the sigmoid, minus sigmoid(b) everywhere."""
    from featvis import ConvDBN, UnsupportedError

    g = torch.Generator().manual_seed(0)
    dbn = ConvDBN([dict(filters=3, filter_size=4, pool=2), dict(filters=4, filter_size=2,
                                                                    pool=1)],
                  input_shape=(1, 11, 11))
    with torch.no_grad():
        for rbm in dbn.rbms:
            rbm.weight.normal_(0, 1.0, generator=g)
            rbm.visible_bias.normal_(-0.5, 0.3, generator=g)
    out = sample_unit(dbn, 2, units=[3, 1], n_samples=6, seed=5)
    assert torch.equal(out.samples, dbn.sample(2, [3, 1], n_samples=6, seed=5))
    on, off = (dbn.sample(2, [3, 1], n_samples=1, seed=5, unit_on=state, mean_field=True)[:, 0]
               for state in (True, False))
    torch.testing.assert_close(out.contrast, on - off)
    torch.testing.assert_close(out.mean, out.samples.mean(1))
    assert torch.equal(out.units, torch.tensor([3, 1]))
    assert torch.equal(sample_unit(dbn, "2.detection", units=[3, 1], n_samples=6,
                                   seed=5).samples, out.samples)
    first = sample_unit(dbn, 1, units=[0, 2], n_samples=8, seed=1)
    rbm = dbn.rbms[0]
    baseline = torch.sigmoid(rbm.visible_bias)[:, None, None].expand(1, 11, 11)
    # Clamped on, the centre block (rows, cols 2..3 of the 8 x 8 detection map) is a softmax
    # of the unit's hidden bias over its 4 positions: equal weights, each a quarter.
    for j, unit in enumerate([0, 2]):
        expected = torch.zeros(1, 11, 11)
        for r in (2, 3):
            for c in (2, 3):
                expected[:, r:r + 4, c:c + 4] += 0.25 * rbm.weight[unit].detach()
        torch.testing.assert_close(first.contrast[j], torch.sigmoid(
            expected + rbm.visible_bias[:, None, None]) - baseline, atol=1e-5, rtol=1e-4)
    with pytest.raises(UnsupportedError, match="Gibbs chains are for DBNs"):
        sample_unit(dbn, 1, variant="gibbs")
