"""The training algorithm (featvis.train): CD steps against a hand computation, recipes,
batch orders, the last epoch's hand-over and exact resumes."""

import math
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import featvis.train
from featvis import DBN, RBM
from featvis.train import TrainingRecipe, fit_rbm

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
    assert not [name for name in imported_modules(featvis.train)
                if name.startswith("featvis.models")]
