import math
import re

import numpy as np
import pytest
import torch

from featvis import RBM, DataError

from helpers import binary_states, random_rbm


def test_parameters_follow_nn_linear():
    rbm = RBM(7, 5)
    assert rbm.weight.shape == (5, 7)
    assert rbm.visible_bias.shape == (7,) and rbm.hidden_bias.shape == (5,)
    assert set(rbm.state_dict()) == {"weight", "visible_bias", "hidden_bias"}
    # rbm.m initialisation: 0.1 * randn, reproducible from the seed.
    assert torch.equal(RBM(7, 5, seed=3).weight, RBM(7, 5, seed=3).weight)
    big = RBM(300, 300)
    assert abs(big.weight.std().item() - 0.1) < 0.005 and big.visible_bias.abs().sum() == 0


def test_free_energy_matches_enumeration():
    rbm = random_rbm(4, 3, seed=1)
    W = rbm.weight.double().numpy()
    b = rbm.visible_bias.double().numpy()
    c = rbm.hidden_bias.double().numpy()
    for v in binary_states(4).numpy():
        energies = [-(v @ b) - (h @ c) - h @ W @ v for h in binary_states(3).numpy()]
        expected = -math.log(sum(math.exp(-e) for e in energies))
        got = rbm.free_energy(torch.tensor(v, dtype=torch.float32)[None]).item()
        assert got == pytest.approx(expected, abs=1e-5)


def test_conditionals_match_formula():
    rbm = random_rbm(4, 3, seed=1)
    v = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    expected = 1 / (1 + np.exp(-(rbm.weight.numpy() @ v[0].numpy() + rbm.hidden_bias.numpy())))
    np.testing.assert_allclose(rbm.hidden_probs(v)[0].numpy(), expected, rtol=1e-6)
    h = torch.tensor([[1.0, 1.0, 0.0]])
    expected = 1 / (1 + np.exp(-(h[0].numpy() @ rbm.weight.numpy() + rbm.visible_bias.numpy())))
    np.testing.assert_allclose(rbm.visible_probs(h)[0].numpy(), expected, rtol=1e-6)


def test_sampling_is_seeded_and_unbiased():
    rbm = random_rbm(4, 3, seed=1)
    v = torch.ones(20000, 4)
    s1 = rbm.sample_hidden(v, torch.Generator().manual_seed(0))
    s2 = rbm.sample_hidden(v, torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2) and set(s1.unique().tolist()) <= {0.0, 1.0}
    # 4 standard errors of a Bernoulli mean with 20,000 draws is below 0.015.
    torch.testing.assert_close(s1.mean(0), rbm.hidden_probs(v[:1])[0], atol=0.015, rtol=0)


def test_fit_is_reproducible_and_lowers_error(mnist_small):
    x = mnist_small[0][:1000]
    a = RBM(784, 32).fit(x, epochs=3, seed=5, progress=False)
    b = RBM(784, 32, seed=99).fit(x, epochs=3, seed=5, progress=False)
    assert torch.equal(a.weight, b.weight)  # fit resets from its seed: same seed, same model
    errors = [e["error_per_case"] for e in a.history]
    assert errors[-1] < errors[0]


@pytest.mark.parametrize("bad,problem", [
    (torch.full((4, 784), float("nan")), "NaN"),
    (torch.full((4, 784), float("inf")), "NaN or infinite"),
    (torch.full((4, 784), 2.0), r"\[0, 1\]"),
    (torch.zeros(4, 783), "width 783"),
    (torch.zeros(4, 28, 28), "shape"),
    (torch.zeros(4, 784, dtype=torch.int64), "floating"),
])
def test_fit_rejects_bad_images(bad, problem):
    with pytest.raises(DataError, match=problem):
        RBM(784, 8).fit(bad, epochs=1, progress=False)


@pytest.mark.parametrize("args,message", [
    ((784.7, 10), "n_visible must be a positive integer, got 784.7"),
    ((784, "10"), "n_hidden must be a positive integer, got '10'"),
    ((True, 10), "n_visible must be a positive integer, got True"),
    ((784, 0), "n_hidden must be a positive integer, got 0"),
])
def test_sizes_must_be_positive_integers(args, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        RBM(*args)


def test_numpy_integer_sizes_and_seed():
    rbm = RBM(np.int64(5), np.int16(3), seed=np.int64(4))
    assert (type(rbm.n_visible), type(rbm.n_hidden)) == (int, int)
    assert torch.equal(rbm.weight, RBM(5, 3, seed=4).weight)
    with pytest.raises(ValueError, match="^seed must be an integer, got '4'$"):
        RBM(5, 3, seed="4")


# -- Gaussian visible units ------------------------------------------------------------------
def gaussian_rbm(n_visible, n_hidden, sigma, seed=0, scale=1.0):
    """A Gaussian RBM with the random parameters of :func:`random_rbm`, in float64."""
    rbm = RBM(n_visible, n_hidden, visible="gaussian", sigma=sigma)
    for name, t in random_rbm(n_visible, n_hidden, seed, scale).named_parameters():
        getattr(rbm, name).data.copy_(t)
    return rbm.double()


def gaussian_energy(v, h, W, a, c, s):
    """Hinton's practical guide: sum (v - a)^2 / (2 s^2) - c.h - (v / s).W'h, float64 numpy."""
    return ((v - a) ** 2).sum() / (2 * s * s) - h @ c - h @ W @ (v / s)


def test_gaussian_free_energy_matches_enumeration():
    """-F(v) = log sum_h exp(-E(v, h)) over the 16 hidden states of a 3-4 model."""
    s = 0.75                         # a float32 number: sigma is a float32 buffer
    rbm = gaussian_rbm(3, 4, s, seed=2)
    W, a, c = (t.numpy() for t in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))
    vs = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = rbm.free_energy(vs)
    for v, f in zip(vs.numpy(), got.tolist()):
        energies = [gaussian_energy(v, h, W, a, c, s) for h in binary_states(4).numpy()]
        assert f == pytest.approx(-math.log(sum(math.exp(-e) for e in energies)), abs=1e-10)


def test_gaussian_free_energy_gradient_is_the_positive_phase():
    """-dF/dtheta = E_{p(h|v)}[-dE/dtheta] by enumeration: <h (v / s)'> for W,
    (v - a) / s^2 for the visible bias, <h> for the hidden bias (the CD statistics)."""
    s = 0.625
    rbm = gaussian_rbm(3, 4, s, seed=3)
    v = torch.tensor([0.5, -1.2, 2.0], dtype=torch.float64)
    W, a, c = (t.numpy() for t in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))
    hs = binary_states(4).numpy()
    weights = np.array([math.exp(-gaussian_energy(v.numpy(), h, W, a, c, s)) for h in hs])
    p = weights / weights.sum()
    expected_W = sum(pk * np.outer(h, v.numpy() / s) for pk, h in zip(p, hs))
    expected_c = p @ hs
    for param in rbm.parameters():
        param.requires_grad_(True)
    (-rbm.free_energy(v[None])).sum().backward()
    np.testing.assert_allclose(rbm.weight.grad.numpy(), expected_W, atol=1e-10)
    np.testing.assert_allclose(rbm.hidden_bias.grad.numpy(), expected_c, atol=1e-10)
    np.testing.assert_allclose(rbm.visible_bias.grad.numpy(), (v.numpy() - a) / s ** 2,
                               atol=1e-10)
    # The marginal of the enumeration is the model's p(h | v).
    np.testing.assert_allclose(rbm.hidden_probs(v[None])[0].detach().numpy(), expected_c,
                               atol=1e-10)


def test_gaussian_conditionals_match_the_formulas():
    s = 0.375
    rbm = gaussian_rbm(3, 4, s, seed=1)
    W, a, c = (t.numpy() for t in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))
    v = torch.tensor([[0.3, -0.8, 1.5]], dtype=torch.float64)
    np.testing.assert_allclose(rbm.hidden_probs(v)[0].numpy(),
                               1 / (1 + np.exp(-(c + W @ v[0].numpy() / s))), rtol=1e-12)
    h = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    mean = a + s * h[0].numpy() @ W
    np.testing.assert_allclose(rbm.visible_mean(h)[0].numpy(), mean, rtol=1e-12)
    # v | h is N(mean, s^2): the energy is quadratic in v around the mean with curvature 1/s^2.
    e = lambda x: gaussian_energy(x, h[0].numpy(), W, a, c, s)      # noqa: E731
    x = np.array([1.0, 2.0, -0.5])
    assert e(x) - e(mean) == pytest.approx(((x - mean) ** 2).sum() / (2 * s * s), rel=1e-10)
    # Samples: seeded, mean and variance within 5 standard errors of 40,000 draws.
    n = 40000
    hh = h.expand(n, 4)
    draws = rbm.sample_visible(hh, torch.Generator().manual_seed(0))
    assert torch.equal(draws, rbm.sample_visible(hh, torch.Generator().manual_seed(0)))
    np.testing.assert_allclose(draws.mean(0).numpy(), mean, atol=5 * s / math.sqrt(n))
    np.testing.assert_allclose(draws.var(0).numpy(), s * s, atol=5 * s * s * math.sqrt(2 / n))


def test_gaussian_rbm_keeps_sigma_in_a_buffer():
    rbm = RBM(5, 3, visible="gaussian", sigma=0.25, seed=1)
    assert rbm.visible == "gaussian" and rbm.sigma == 0.25 and rbm.initial_sigma == 0.25
    assert set(rbm.state_dict()) == {"weight", "visible_bias", "hidden_bias", "_sigma"}
    assert rbm.state_dict()["_sigma"].dtype == torch.float32
    assert "visible='gaussian', sigma=0.25" in repr(rbm)
    rbm.sigma = 0.125
    assert rbm.sigma == 0.125 and rbm.state_dict()["_sigma"].item() == 0.125
    rbm.reset_parameters(1)                           # a fresh model: sigma as constructed
    assert rbm.sigma == 0.25
    torch.testing.assert_close(rbm.weight, 0.1 * RBM(5, 3, seed=1).weight)   # 0.01 * randn
    binary = RBM(5, 3)
    assert binary.visible == "binary" and binary.sigma == 1.0 and "sigma" not in repr(binary)
    with pytest.raises(ValueError, match="^a binary RBM has no sigma to set"):
        binary.sigma = 0.5
    h = torch.rand(2, 3)
    assert torch.equal(binary.visible_mean(h), binary.visible_probs(h))
    with pytest.raises(ValueError, match="^visible_probs is for binary visible units; .* "
                                         "use visible_mean"):
        rbm.visible_probs(h)


@pytest.mark.parametrize("kwargs,message", [
    (dict(visible="poisson"), "visible must be 'binary' or 'gaussian', got 'poisson'"),
    (dict(visible=None), "visible must be 'binary' or 'gaussian', got None"),
    (dict(visible="gaussian", sigma=0.0), "sigma must be a finite number > 0, got 0.0"),
    (dict(visible="gaussian", sigma=float("nan")), "sigma must be a finite number > 0, got nan"),
    (dict(sigma=0.5), "sigma applies to Gaussian visible units only, got sigma=0.5 with "
                      "visible='binary'"),
])
def test_visible_kind_and_sigma_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        RBM(4, 2, **kwargs)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0, got -1"):
        RBM(4, 2, visible="gaussian").sigma = -1


def test_gaussian_fit_takes_real_values():
    x = torch.randn(60, 5, generator=torch.Generator().manual_seed(0)) * 3
    rbm = RBM(5, 4, visible="gaussian").fit(x, epochs=2, batch_size=20, lr=0.01, progress=False)
    assert len(rbm.history) == 2 and all(e["sigma"] == 1.0 for e in rbm.history)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        RBM(5, 4).fit(x, epochs=1, progress=False)
    with pytest.raises(DataError, match="NaN"):
        rbm.fit(torch.full((4, 5), float("nan")), epochs=1, progress=False)
