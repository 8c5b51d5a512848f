import math

import numpy as np
import pytest
import torch

from featvis import RBM, DataError
from featvis.train import TrainingRecipe

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


def hand_cd1(W, b, c, v0, u, inc, lr, wd, momentum):
    """One CD-1 step with momentum written out with loops (rbm.m); returns the new state."""
    sig = lambda x: 1 / (1 + math.exp(-x))      # noqa: E731
    n, V, H = len(v0), len(b), len(c)
    ph0 = [[sig(c[j] + sum(W[j][i] * v0[r][i] for i in range(V))) for j in range(H)]
           for r in range(n)]
    h0 = [[1.0 if u[r][j] < ph0[r][j] else 0.0 for j in range(H)] for r in range(n)]
    v1 = [[sig(b[i] + sum(h0[r][j] * W[j][i] for j in range(H))) for i in range(V)]
          for r in range(n)]
    ph1 = [[sig(c[j] + sum(W[j][i] * v1[r][i] for i in range(V))) for j in range(H)]
           for r in range(n)]
    dW, db, dc = inc
    dW = [[momentum * dW[j][i] + lr * (sum(ph0[r][j] * v0[r][i] - ph1[r][j] * v1[r][i]
                                           for r in range(n)) / n - wd * W[j][i])
           for i in range(V)] for j in range(H)]
    db = [momentum * db[i] + lr * sum(v0[r][i] - v1[r][i] for r in range(n)) / n
          for i in range(V)]
    dc = [momentum * dc[j] + lr * sum(ph0[r][j] - ph1[r][j] for r in range(n)) / n
          for j in range(H)]
    W = [[W[j][i] + dW[j][i] for i in range(V)] for j in range(H)]
    b = [b[i] + db[i] for i in range(V)]
    c = [c[j] + dc[j] for j in range(H)]
    error = sum((v0[r][i] - v1[r][i]) ** 2 for r in range(n) for i in range(V))
    return W, b, c, (dW, db, dc), error


@pytest.mark.parametrize("reshuffle", [False, True])
def test_cd1_updates_with_momentum_match_hand_computation(reshuffle):
    """fit(batch_size=n) makes one CD-1 step per epoch; redo three of them with loops,
    momentum 0.5 in epoch 1 and 0.9 from epoch 2 (momentum_switch=2)."""
    rbm = random_rbm(4, 3, seed=1, scale=0.5)
    W, b, c = (t.double().tolist() for t in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))
    data = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float32)
    lr, wd, seed = 0.1, 2e-4, 7
    rbm.fit(data, epochs=3, batch_size=3, lr=lr, weight_decay=wd, momentum=0.5,
            final_momentum=0.9, momentum_switch=2, seed=seed, warm_start=True,
            reshuffle=reshuffle, progress=False)

    # The same random stream: the batch order (once as rbm.m's makebatches, or every epoch),
    # then the uniforms of each hidden sample.
    g = torch.Generator().manual_seed(seed)
    inc = ([[0.0] * 4 for _ in range(3)], [0.0] * 4, [0.0] * 3)
    errors = []
    order = torch.randperm(3, generator=g)
    for epoch in range(1, 4):
        if reshuffle and epoch > 1:
            order = torch.randperm(3, generator=g)
        u = torch.rand(3, 3, generator=g).double().tolist()
        W, b, c, inc, error = hand_cd1(W, b, c, data[order].double().tolist(), u, inc, lr, wd,
                                       0.5 if epoch < 2 else 0.9)
        errors.append(error)
    np.testing.assert_allclose(rbm.weight.numpy(), W, atol=1e-5)
    np.testing.assert_allclose(rbm.visible_bias.numpy(), b, atol=1e-5)
    np.testing.assert_allclose(rbm.hidden_bias.numpy(), c, atol=1e-5)
    assert [e["error_sum"] for e in rbm.history] == pytest.approx(errors, rel=1e-5)
    assert rbm.history[-1]["error_per_case"] == pytest.approx(errors[-1] / 3, rel=1e-5)


def test_fit_is_reproducible_and_lowers_error(mnist_small):
    x = mnist_small[0][:1000]
    a = RBM(784, 32).fit(x, epochs=3, seed=5, progress=False)
    b = RBM(784, 32, seed=99).fit(x, epochs=3, seed=5, progress=False)
    assert torch.equal(a.weight, b.weight)  # fit resets from its seed: same seed, same model
    errors = [e["error_per_case"] for e in a.history]
    assert errors[-1] < errors[0]


@pytest.mark.parametrize("kwargs", [dict(k=3), dict(persistent=True),
                                    dict(sparsity_target=0.05, sparsity_cost=1.0)])
def test_training_variants_learn(mnist_small, kwargs):
    x = mnist_small[0][:1000]
    fresh = RBM(784, 32)
    before = ((fresh.visible_probs(fresh.hidden_probs(x)) - x) ** 2).sum(1).mean()
    rbm = RBM(784, 32).fit(x, epochs=3, progress=False, **kwargs)
    after = ((rbm.visible_probs(rbm.hidden_probs(x)) - x) ** 2).sum(1).mean()
    assert after < 0.7 * before
    if "sparsity_target" in kwargs:
        plain = RBM(784, 32).fit(x, epochs=3, progress=False)
        assert rbm.hidden_probs(x).mean() < plain.hidden_probs(x).mean()


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


@pytest.mark.parametrize("kwargs", [dict(epochs=0), dict(batch_size=0), dict(lr=-1.0),
                                    dict(k=0), dict(sparsity_target=1.5)])
def test_fit_rejects_bad_recipe(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RBM(4, 2).fit(torch.zeros(3, 4), progress=False, **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(lr=float("inf")), "lr must be a finite number > 0, got inf"),
    (dict(lr=float("nan")), "lr must be a finite number > 0, got nan"),
    (dict(lr=True), "lr must be a finite number > 0, got True"),
    (dict(lr="0.1"), "lr must be a finite number > 0, got '0.1'"),
    (dict(momentum="abc"), r"momentum must be a number in \[0, 1\), got 'abc'"),
    (dict(momentum=1.0), r"momentum must be a number in \[0, 1\), got 1.0"),
    (dict(final_momentum=-0.1), r"final_momentum must be a number in \[0, 1\), got -0.1"),
    (dict(weight_decay=-1e-4), "weight_decay must be a finite number >= 0, got -0.0001"),
    (dict(weight_decay=float("inf")), "weight_decay must be a finite number >= 0, got inf"),
    (dict(sparsity_cost=float("nan")), "sparsity_cost must be a finite number >= 0, got nan"),
    (dict(sparsity_target=0.0), r"sparsity_target must be a number in \(0, 1\), got 0.0"),
    (dict(persistent="yes"), "persistent must be True or False, got 'yes'"),
    (dict(reshuffle=1), "reshuffle must be True or False, got 1"),
    (dict(seed=1.5), "seed must be an integer, got 1.5"),
    (dict(epochs=2.0), "epochs must be a positive integer, got 2.0"),
    (dict(batch_size="100"), "batch_size must be a positive integer, got '100'"),
    (dict(k=True), "k must be a positive integer, got True"),
    (dict(momentum_switch=0), "momentum_switch must be a positive integer, got 0"),
])
def test_every_recipe_field_is_checked_before_training(kwargs, message):
    rbm = RBM(4, 2)
    before = rbm.weight.clone()
    with pytest.raises(ValueError, match=f"^{message}$"):
        rbm.fit(torch.rand(3, 4), progress=False, **kwargs)
    assert rbm.history == [] and torch.equal(rbm.weight, before)


def test_recipe_numbers_are_stored_as_plain_python_numbers():
    recipe = TrainingRecipe(epochs=np.int64(2), lr=np.float32(0.5), momentum=0, weight_decay=0,
                            seed=np.int32(-3), sparsity_target=np.float64(0.1))
    values = recipe.to_dict()
    assert [type(values[name]) for name in ("epochs", "lr", "momentum", "weight_decay", "seed",
                                            "sparsity_target")] == [int, float, float, float,
                                                                   int, float]
    assert values["lr"] == 0.5 and values["seed"] == -3
    assert recipe == TrainingRecipe(epochs=2, lr=0.5, momentum=0.0, weight_decay=0.0, seed=-3,
                                    sparsity_target=0.1)


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
