"""The training algorithm (featvis.models.training): CD steps against a hand computation, recipes,
batch orders, the last epoch's hand-over and exact resumes."""

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import featvis.models.training
from featvis import DBN, RBM
from featvis.models.training import TrainingRecipe, fit_rbm

from helpers import imported_modules, random_rbm, read_checkpoint, stopped_checkpoint


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


@pytest.mark.parametrize("kwargs", [dict(cd_steps=3), dict(persistent=True),
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


@pytest.mark.parametrize("kwargs", [dict(epochs=0), dict(batch_size=0), dict(lr=-1.0),
                                    dict(cd_steps=0), dict(sparsity_target=1.5)])
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
    (dict(cd_steps=True), "cd_steps must be a positive integer, got True"),
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


def test_k_still_means_cd_steps_with_a_warning():
    """The old name of cd_steps works for one more release; the warning names the new one
    and points at the caller's line, also through fit."""
    x = torch.rand(10, 4)
    with pytest.warns(FutureWarning, match="^k is now called cd_steps;") as record:
        recipe = TrainingRecipe(k=2)
        rbm = RBM(4, 2).fit(x, epochs=1, k=2, progress=False)
        dbn = DBN([4, 3, 2]).fit(x, epochs=1, k=2, progress=False)
    assert [w.filename for w in record] == [__file__] * 3
    assert recipe == TrainingRecipe(cd_steps=2) and dbn.recipe.cd_steps == 2
    assert torch.equal(rbm.weight, RBM(4, 2).fit(x, epochs=1, cd_steps=2, progress=False).weight)
    with pytest.warns(FutureWarning, match="^k is now called cd_steps;"):
        assert recipe.k == 2


def test_k_and_cd_steps_together_are_refused():
    with pytest.raises(TypeError, match="^give cd_steps or its deprecated alias k, not both$"):
        TrainingRecipe(k=2, cd_steps=2)
    with pytest.raises(TypeError, match="not both"):
        RBM(4, 2).fit(torch.rand(10, 4), k=1, cd_steps=1, progress=False)


def test_bad_batch_orders_and_recipes_are_refused():
    x = torch.rand(10, 4)
    for bad in (torch.arange(9), torch.zeros(10, dtype=torch.long), torch.arange(10.0)):
        with pytest.raises(ValueError, match="permutation of the 10 rows"):
            fit_rbm(RBM(4, 2), x, TrainingRecipe(epochs=1), order=bad, progress=False)
    with pytest.raises(ValueError, match="exclude each other"):
        fit_rbm(RBM(4, 2), x, TrainingRecipe(epochs=1, reshuffle=True), order=torch.arange(10),
                progress=False)
    with pytest.raises(ValueError, match="next_layer_data must be one of"):
        DBN([4, 2]).fit(x, next_layer_data="up-pass", progress=False)
    with pytest.raises(TypeError, match="applies to DBN.fit"):
        RBM(4, 2).fit(x, next_layer_data="final", progress=False)


def test_last_epoch_hands_over_the_positive_phase_probabilities(mnist_small):
    """rbm.m's batchposhidprobs: the first batch of the last epoch is seen by the weights
    after the other epochs, every row of the hand-over once, in input order."""
    x = mnist_small[0][:500]
    recipe = TrainingRecipe(epochs=3, batch_size=100, seed=4)
    last = fit_rbm(RBM(784, 16, seed=4), x, recipe, keep_last_epoch=True, progress=False)
    shorter = RBM(784, 16).fit(x, epochs=2, batch_size=100, seed=4, progress=False)
    first_batch = torch.randperm(500, generator=torch.Generator().manual_seed(4))[:100]
    assert torch.equal(last.hidden[first_batch], shorter.hidden_probs(x[first_batch]))
    for name, p in shorter.named_parameters():
        assert torch.equal(last.start[name], p)
    # Later batches were seen by weights that had moved on, but by the same RBM.
    assert (last.hidden - shorter.hidden_probs(x)).abs().mean() < 0.05


@pytest.mark.parametrize("stop_after,recipe", [
    (1, {}), (2, {}), (2, dict(persistent=True)), (2, dict(reshuffle=True)),
    (2, dict(cd_steps=2)), (2, dict(next_layer_data="final")),
])
def test_interrupted_training_resumes_to_the_same_model(tmp_path, mnist_small, stop_after,
                                                        recipe):
    """Resuming replays the kept layers' last epochs to rebuild the hand-over exactly."""
    x = mnist_small[0][:500]
    path = tmp_path / "m.safetensors"
    full = DBN([784, 16, 8, 4]).fit(x, epochs=2, progress=False, **recipe)
    assert not full.last_epoch_starts
    stopped_checkpoint(path, x, [784, 16, 8, 4], stop_after, epochs=2, **recipe)
    partial = DBN.load(path)
    assert partial.trained_layers == stop_after
    kept = [] if recipe.get("next_layer_data") == "final" else list(range(1, stop_after + 1))
    assert sorted(partial.last_epoch_starts) == kept
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # the replay ends on the saved weights
        partial.fit(x, epochs=2, progress=False, resume=True, **recipe)
    for a, b in zip(full.state_dict().values(), partial.state_dict().values()):
        assert torch.equal(a, b)
    assert not partial.last_epoch_starts
    partial.save(path)
    assert not any(name.startswith("last_epoch") for name in read_checkpoint(path)[0])
    before = {name: t.clone() for name, t in partial.state_dict().items()}
    partial.fit(x, epochs=2, progress=False, resume=True, **recipe)   # complete: a no-op
    assert all(torch.equal(before[name], t) for name, t in partial.state_dict().items())
    with pytest.raises(ValueError, match="different training recipe"):
        partial.fit(x, epochs=3, progress=False, resume=True, **recipe)


def test_resume_needs_the_record_of_the_last_epoch(mnist_small):
    x = mnist_small[0][:300]
    dbn = DBN([784, 8, 4]).fit(x, epochs=1, progress=False)
    dbn.rbms[1].history = []             # as if stopped after layer 1, but without its record
    with pytest.raises(ValueError, match="no record of layer 1's last epoch"):
        dbn.fit(x, epochs=1, progress=False, resume=True)


def test_resume_refuses_or_warns_about_a_record_it_cannot_replay(tmp_path, mnist_small):
    path, x = tmp_path / "m.safetensors", mnist_small[0][:200]
    tensors, metadata = stopped_checkpoint(path, x, [784, 8, 4], epochs=1)
    cuda_state = dict(tensors, **{"last_epoch.1.generator": torch.zeros(16, dtype=torch.uint8)})
    save_file(cuda_state, path, metadata=metadata)
    with pytest.raises(ValueError, match="another kind of device than cpu"):
        DBN.load(path).fit(x, epochs=1, progress=False, resume=True)
    moved = dict(tensors, **{"last_epoch.1.weight": tensors["last_epoch.1.weight"] + 1e-3})
    save_file(moved, path, metadata=metadata)
    with pytest.warns(RuntimeWarning, match="bit for bit"):
        DBN.load(path).fit(x, epochs=1, progress=False, resume=True)


def test_training_does_not_import_the_models():
    """featvis.models import the training algorithm, never the other way round."""
    assert not [name for name in imported_modules(featvis.models.training)
                if name.startswith("featvis.models")]


# -- Gaussian visible units ------------------------------------------------------------------
def real_data(n=200, width=16, seed=0):
    """Zero-mean real-valued rows with some structure: 3 factors plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g) @ torch.randn(3, width, generator=g)
    x += 0.3 * torch.randn(n, width, generator=g)
    return x - x.mean(0)


def hand_gaussian_cd1(W, a, c, v0, u, inc, lr, wd, momentum, s, target, cost):
    """One CD-1 step of a Gaussian-Bernoulli RBM written out with loops from the energy
    sum (v - a)^2 / (2 s^2) - c.h - (v / s).W'h, the reconstruction being E[v | h]."""
    sig = lambda x: 1 / (1 + math.exp(-x))      # noqa: E731
    n, V, H = len(v0), len(a), len(c)
    ph0 = [[sig(c[j] + sum(W[j][i] * v0[r][i] / s for i in range(V))) for j in range(H)]
           for r in range(n)]
    h0 = [[1.0 if u[r][j] < ph0[r][j] else 0.0 for j in range(H)] for r in range(n)]
    v1 = [[a[i] + s * sum(h0[r][j] * W[j][i] for j in range(H)) for i in range(V)]
          for r in range(n)]
    ph1 = [[sig(c[j] + sum(W[j][i] * v1[r][i] / s for i in range(V))) for j in range(H)]
           for r in range(n)]
    dW, da, dc = inc
    dW = [[momentum * dW[j][i] + lr * (sum(ph0[r][j] * v0[r][i] / s - ph1[r][j] * v1[r][i] / s
                                           for r in range(n)) / n - wd * W[j][i])
           for i in range(V)] for j in range(H)]
    da = [momentum * da[i] + lr * sum(v0[r][i] - v1[r][i] for r in range(n)) / (n * s * s)
          for i in range(V)]
    dc = [momentum * dc[j] + lr * (sum(ph0[r][j] - ph1[r][j] for r in range(n)) / n
                                   + cost * (target - sum(ph0[r][j] for r in range(n)) / n))
          for j in range(H)]
    W = [[W[j][i] + dW[j][i] for i in range(V)] for j in range(H)]
    a = [a[i] + da[i] for i in range(V)]
    c = [c[j] + dc[j] for j in range(H)]
    error = sum((v0[r][i] - v1[r][i]) ** 2 for r in range(n) for i in range(V))
    return W, a, c, (dW, da, dc), error


def test_gaussian_cd1_matches_hand_computation():
    """Three one-batch epochs with momentum, weight decay, a sparsity target and an annealed
    sigma (0.75, then 0.375, then the floor 0.25), redone with loops from the formulas."""
    rbm = RBM(4, 3, visible="gaussian")
    for name, t in random_rbm(4, 3, seed=1, scale=0.5).named_parameters():
        getattr(rbm, name).data.copy_(t)
    W, a, c = (t.double().tolist() for t in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))
    data = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.5, 0.3, -0.7, 1.0], [-0.2, 0.8, 0.4, -1.3]])
    lr, wd, seed, target, cost = 0.1, 2e-4, 7, 0.1, 0.5
    rbm.fit(data, epochs=3, batch_size=3, lr=lr, weight_decay=wd, momentum=0.5,
            final_momentum=0.9, momentum_switch=2, sparsity_target=target, sparsity_cost=cost,
            sigma=0.75, sigma_decay=0.5, sigma_floor=0.25, seed=seed, warm_start=True,
            progress=False)

    g = torch.Generator().manual_seed(seed)
    inc = ([[0.0] * 4 for _ in range(3)], [0.0] * 4, [0.0] * 3)
    order = torch.randperm(3, generator=g)
    errors, sigmas = [], [0.75, 0.375, 0.25]
    for epoch, s in enumerate(sigmas, start=1):
        u = torch.rand(3, 3, generator=g).double().tolist()
        W, a, c, inc, error = hand_gaussian_cd1(W, a, c, data[order].double().tolist(), u, inc,
                                                lr, wd, 0.5 if epoch < 2 else 0.9, s, target,
                                                cost)
        errors.append(error)
    np.testing.assert_allclose(rbm.weight.numpy(), W, atol=1e-5)
    np.testing.assert_allclose(rbm.visible_bias.numpy(), a, atol=1e-5)
    np.testing.assert_allclose(rbm.hidden_bias.numpy(), c, atol=1e-5)
    assert [e["error_sum"] for e in rbm.history] == pytest.approx(errors, rel=1e-5)
    assert [e["sigma"] for e in rbm.history] == sigmas and rbm.sigma == 0.25


def test_sigma_schedule_anneals_down_to_the_floor():
    """After n epochs sigma = max(floor, s0 * decay^n); each epoch logs the sigma it used."""
    x = real_data(40, 6)
    s0, decay, floor = 1.0, 0.8, 0.7         # float32(0.7) < 0.7: the floor check allows it
    rbm = RBM(6, 4, visible="gaussian", sigma=s0).fit(
        x, epochs=7, batch_size=20, lr=0.01, sigma_decay=decay, sigma_floor=floor,
        progress=False)
    expected = [max(floor, s0 * decay ** n) for n in range(8)]
    assert [e["sigma"] for e in rbm.history] == pytest.approx(expected[:7], rel=1e-6)
    assert rbm.sigma == pytest.approx(expected[7], rel=1e-6) and expected[7] == floor
    assert rbm.initial_sigma == s0
    # warm_start continues from the annealed sigma; a fresh fit starts again from s0.
    rbm.fit(x, epochs=1, batch_size=20, lr=0.01, sigma_decay=decay, sigma_floor=floor,
            warm_start=True, progress=False)
    assert rbm.history[-1]["sigma"] == pytest.approx(floor) and rbm.sigma == pytest.approx(floor)
    rbm.fit(x, epochs=1, batch_size=20, lr=0.01, progress=False)
    assert rbm.history[0]["sigma"] == s0 and rbm.sigma == s0     # decay 1: fixed
    rbm.fit(x, epochs=2, batch_size=20, lr=0.01, sigma=0.5, progress=False)
    assert rbm.sigma == 0.5
    with pytest.raises(ValueError, match="^sigma_floor 0.3 is above the starting sigma 0.25;"):
        RBM(6, 4, visible="gaussian", sigma=0.25).fit(x, sigma_decay=0.9, sigma_floor=0.3,
                                                      progress=False)


def test_binary_rbms_ignore_the_sigma_fields():
    x = torch.rand(30, 5, generator=torch.Generator().manual_seed(0))
    plain = RBM(5, 3).fit(x, epochs=2, batch_size=10, progress=False)
    annealed = RBM(5, 3).fit(x, epochs=2, batch_size=10, sigma=0.5, sigma_decay=0.5,
                             sigma_floor=0.1, progress=False)
    assert torch.equal(plain.weight, annealed.weight) and plain.history == annealed.history


@pytest.mark.parametrize("kwargs,message", [
    (dict(sigma=0.0), "sigma must be a finite number > 0, got 0.0"),
    (dict(sigma="1"), "sigma must be a finite number > 0, got '1'"),
    (dict(sigma_decay=1.5), r"sigma_decay must be a number in \(0, 1\], got 1.5"),
    (dict(sigma_decay=0), "sigma_decay must be a finite number > 0, got 0"),
    (dict(sigma_floor=float("inf")), "sigma_floor must be a finite number > 0, got inf"),
    (dict(sigma=0.2, sigma_decay=0.9, sigma_floor=0.3),
     "sigma_floor 0.3 is above the starting sigma 0.2; the schedule only lowers sigma"),
])
def test_sigma_fields_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        TrainingRecipe(**kwargs)


def test_presets():
    hinton, lee = TrainingRecipe.preset("hinton"), TrainingRecipe.preset("lee")
    assert (hinton.lr, hinton.momentum, hinton.final_momentum, hinton.weight_decay,
            hinton.sparsity_target, hinton.sigma, hinton.sigma_decay) == (
                0.01, 0.5, 0.9, 2e-4, None, 1.0, 1.0)
    first, above = lee.for_layer(1), lee.for_layer(2)
    assert (first.lr, first.final_momentum, first.weight_decay, first.sparsity_target,
            first.sparsity_cost, first.sigma, first.sigma_decay, first.sigma_floor) == (
                0.3, 0.5, 0.01, 0.02, 50.0, 1.3, 0.99, 0.65)
    assert (above.lr, above.weight_decay, above.sparsity_target, above.sparsity_cost) == (
        0.1, 2e-4, 0.1, 1.0)
    assert above == lee.for_layer(3) and above.layers == () == first.layers
    assert lee.epochs == TrainingRecipe().epochs == 10
    short = TrainingRecipe.preset("lee", epochs=5, sigma_floor=0.05)
    assert short == dataclasses.replace(lee, epochs=5, sigma_floor=0.05)
    assert TrainingRecipe.preset("rbm.m") == TrainingRecipe()
    with pytest.raises(ValueError, match="^unknown recipe preset 'cd'; the presets are "
                                         "'rbm.m', 'hinton', 'lee'$"):
        TrainingRecipe.preset("cd")
    with pytest.raises(ValueError, match="^lr must be"):
        TrainingRecipe.preset("hinton", lr=-1)


def test_the_default_recipe_is_still_rbm_m():
    assert TrainingRecipe().to_dict() == dict(
        epochs=10, batch_size=100, lr=0.1, momentum=0.5, final_momentum=0.9, momentum_switch=6,
        weight_decay=2e-4, cd_steps=1, persistent=False, sparsity_target=None,
        sparsity_cost=0.1, reshuffle=False, next_layer_data="last_epoch", seed=0, sigma=None,
        sigma_decay=1.0, sigma_floor=0.1, layers=[])


@pytest.mark.parametrize("stop_after,recipe", [(1, {}), (2, {}), (1, dict(persistent=True))])
def test_interrupted_gaussian_training_resumes_to_the_same_model(tmp_path, stop_after, recipe):
    """The record of layer 1's last epoch holds its sigma, annealed by then."""
    x, path = real_data(), tmp_path / "g.safetensors"
    recipe = dict(epochs=3, batch_size=50, lr=0.05, sigma_decay=0.8, sigma_floor=0.2, **recipe)

    def build():
        return DBN([16, 8, 4, 2], visible="gaussian", sigma=0.5)

    def save_then_stop(dbn, layer):
        dbn.save(path)
        if layer == stop_after:
            raise KeyboardInterrupt

    full = build().fit(x, progress=False, **recipe)
    assert full.sigma == pytest.approx(max(0.2, 0.5 * 0.8 ** 3))
    with pytest.raises(KeyboardInterrupt):
        build().fit(x, progress=False, on_layer=save_then_stop, **recipe)
    partial = DBN.load(path)
    assert partial.visible == "gaussian" and partial.trained_layers == stop_after
    assert partial.last_epoch_starts[1]["_sigma"].item() == pytest.approx(0.5 * 0.8 ** 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        partial.fit(x, progress=False, resume=True, **recipe)
    for (name, a), b in zip(full.state_dict().items(), partial.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r.history for r in partial.rbms] == [r.history for r in full.rbms]


def test_per_layer_entries_are_checked_and_applied_to_their_layer_only():
    recipe = TrainingRecipe(lr=0.1, layers=[{"lr": 0.5, "epochs": 2}])
    assert recipe.layers == ({"lr": 0.5, "epochs": 2},)
    assert (recipe.for_layer(1).lr, recipe.for_layer(1).epochs) == (0.5, 2)
    assert (recipe.for_layer(2).lr, recipe.for_layer(2).epochs) == (0.1, 10)
    assert TrainingRecipe(**recipe.to_dict()) == recipe          # through JSON and back
    with pytest.raises(ValueError, match=r"^layers\[0\]: 'seed' is not a field a layer"):
        TrainingRecipe(layers=[{"seed": 3}])
    with pytest.raises(ValueError, match="^lr must be"):
        TrainingRecipe(layers=[{"lr": -1}])
    with pytest.raises(ValueError, match="^layers must be a sequence of dicts"):
        TrainingRecipe(layers={"lr": 0.5})


def test_a_dbn_trains_each_layer_with_its_own_recipe(mnist_small):
    """Layer 1 with its entry's settings, layer 2 with the recipe's: the same as RBMs
    trained one by one with those settings on the same batches."""
    from featvis.models.training import batch_order

    images = mnist_small[0][:500]
    dbn = DBN([784, 12, 6], seed=0).fit(images, epochs=1, lr=0.05, progress=False,
                                        next_layer_data="final",
                                        layers=[{"lr": 0.2, "weight_decay": 0.0}])
    order = batch_order(len(images), 0)
    first, second = RBM(784, 12, seed=1), RBM(12, 6, seed=2)
    fit_rbm(first, images, TrainingRecipe(epochs=1, lr=0.2, weight_decay=0.0, seed=1),
            progress=False, order=order)
    fit_rbm(second, first.hidden_probs(images), TrainingRecipe(epochs=1, lr=0.05, seed=2),
            progress=False, order=order)
    assert torch.equal(first.weight, dbn.rbms[0].weight)
    assert torch.equal(second.weight, dbn.rbms[1].weight)
