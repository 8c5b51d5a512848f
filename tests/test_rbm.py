import math

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
