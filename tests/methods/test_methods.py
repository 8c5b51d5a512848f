"""Each method against an independent computation: brute force, enumeration, analytic optima."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featvis import (DBN, linear_combination, maximize, ranked_filters, sample_unit,
                     top_examples)

from helpers import random_dbn


# -- dataset examples -------------------------------------------------------------------

def brute_force_top(acts, k):
    """Sort every column by (-value, index) in plain Python."""
    out_idx, out_val = [], []
    for u in range(acts.shape[1]):
        column = acts[:, u].tolist()
        order = sorted(range(len(column)), key=lambda n: (-column[n], n))[:k]
        out_idx.append(order)
        out_val.append([column[n] for n in order])
    return torch.tensor(out_idx), torch.tensor(out_val)


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_top_examples_equals_brute_force_with_ties(batch_size):
    # Binary inputs and weights in steps of 1/8 make every sum exact in float32, whatever
    # the batch size, so the many exact ties below are real ties.
    dbn = random_dbn([10, 8], seed=1)
    with torch.no_grad():
        dbn.rbms[0].weight.mul_(8).round_().div_(8)
        dbn.rbms[0].hidden_bias.mul_(8).round_().div_(8)
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 2, (150, 10), generator=g).float()
    images[::3] = images[1]                                     # duplicates too
    acts = dbn.transform(images, 1)
    expected_idx, expected_val = brute_force_top(acts, 9)
    got = top_examples(dbn, images, 1, k=9, batch_size=batch_size)
    assert torch.equal(got.indices, expected_idx)
    torch.testing.assert_close(got.values, expected_val)
    torch.testing.assert_close(got.mean, images[expected_idx].mean(1))


def test_top_examples_subset_and_iterable_of_batches():
    dbn = random_dbn([10, 8, 6], seed=3)
    images = torch.rand(200, 10, generator=torch.Generator().manual_seed(4))
    whole = top_examples(dbn, images, 1, k=5)
    subset = top_examples(dbn, images, 1, k=5, units=[7, 2])
    assert torch.equal(subset.indices, whole.indices[[7, 2]])
    # A DataLoader-like iterable of (x, y) batches of uneven sizes gives the same answer.
    loader = [(images[:33], None), (images[33:40], None), (images[40:], None)]
    streamed = top_examples(dbn, loader, 1, k=5)
    assert torch.equal(streamed.indices, whole.indices)
    torch.testing.assert_close(streamed.mean, whole.mean)


def test_top_examples_of_several_layers_in_one_pass(mnist_small, small_dbn):
    x = mnist_small[0][:500]
    together = top_examples(small_dbn, x, [3, 1], k=3, batch_size=128)
    assert list(together) == [3, 1]
    for d in (1, 3):
        alone = top_examples(small_dbn, x, d, k=3, batch_size=128)
        assert torch.equal(together[d].indices, alone.indices)
        torch.testing.assert_close(together[d].mean, alone.mean)


def test_top_examples_values_are_activations(mnist_small, small_dbn):
    x = mnist_small[0]
    got = top_examples(small_dbn, x, 3, k=4, units=[0, 5])
    acts = small_dbn.transform(x, 3)[:, [0, 5]]
    torch.testing.assert_close(got.values, acts.gather(0, got.indices.t()).t())
    torch.testing.assert_close(got.values[:, 0], acts.max(0).values)


# -- activation maximization ------------------------------------------------------------

def test_maximize_layer1_reaches_the_analytic_optimum(small_dbn):
    result = maximize(small_dbn, 1, restarts=3)
    W = small_dbn.rbms[0].weight
    rho = small_dbn.input_norm
    cos = F.cosine_similarity(result.images, W, dim=1)
    assert cos.min() > 0.999
    torch.testing.assert_close(result.images, rho * F.normalize(W, dim=1), atol=0.02, rtol=0)
    torch.testing.assert_close(result.images.norm(dim=1), torch.full((64,), rho))
    optimum = torch.sigmoid(rho * W.norm(dim=1) + small_dbn.rbms[0].hidden_bias)
    torch.testing.assert_close(result.activation, optimum, atol=1e-3, rtol=0)
    assert (result.invariance > 0.999).all()   # one optimum: every restart finds it


def test_maximize_deeper_layers_beat_dataset_examples(mnist_small, small_dbn):
    x = mnist_small[0]
    for layer in (2, 3):
        result = maximize(small_dbn, layer, steps=150, restarts=3)
        best_example = small_dbn.transform(x, layer).max(0).values
        assert (result.activation >= best_example - 1e-4).all()     # every unit
        torch.testing.assert_close(result.all.norm(dim=2),
                                   torch.full(result.all.shape[:2], small_dbn.input_norm))
        reached = small_dbn.transform(result.images, layer).diagonal()
        torch.testing.assert_close(result.activation, reached)


def test_maximize_invariance_is_mean_pairwise_cosine(small_dbn):
    result = maximize(small_dbn, 3, units=[1, 4], steps=5, restarts=4)
    for u in range(2):
        pairs = [F.cosine_similarity(result.all[u, a], result.all[u, b], dim=0)
                 for a, b in itertools.combinations(range(4), 2)]
        assert result.invariance[u].item() == pytest.approx(torch.stack(pairs).mean().item(),
                                                            abs=1e-5)
    # The best restart is the one with the highest activation, and it is returned.
    reached = torch.stack([small_dbn.transform(result.all[u], 3)[:, [1, 4][u]] for u in range(2)])
    torch.testing.assert_close(result.activation, reached.max(1).values)
    for u in range(2):
        assert torch.equal(result.images[u], result.all[u, reached[u].argmax()])


def test_maximize_is_seeded_and_independent_of_the_unit_batch(small_dbn):
    together = maximize(small_dbn, 2, units=[3, 9, 20], steps=20, restarts=2, seed=5)
    alone = maximize(small_dbn, 2, units=[9], steps=20, restarts=2, seed=5)
    torch.testing.assert_close(alone.all[0], together.all[1])
    other_seed = maximize(small_dbn, 2, units=[9], steps=20, restarts=2, seed=6)
    assert not torch.allclose(other_seed.all, alone.all)


def test_maximize_needs_rho():
    dbn = DBN([6, 3])
    with pytest.raises(ValueError, match="pass rho="):
        maximize(dbn, 1)
    assert maximize(dbn, 1, rho=1.5, steps=3, restarts=1).images.norm(dim=1).allclose(
        torch.tensor(1.5))


# -- ranked filters and linear combination ----------------------------------------------

def test_ranked_filters_equal_explicit_loops():
    dbn = random_dbn([6, 5, 4], seed=9)
    W2 = dbn.rbms[1].weight
    got = ranked_filters(dbn, 2, top=3)
    for i in range(4):
        order = sorted(range(5), key=lambda j: (-abs(W2[i, j].item()), j))[:3]
        assert got.indices[i].tolist() == order
        assert got.weights[i].tolist() == [W2[i, j].item() for j in order]


def test_linear_combination_equals_explicit_loops():
    dbn = random_dbn([6, 5, 4, 3], seed=10)
    W1, W2, W3 = (r.weight for r in dbn.rbms)

    def loop(weight, below, k, by_abs):
        rows = []
        for i in range(weight.shape[0]):
            key = (lambda j: (-abs(weight[i, j].item()), j)) if by_abs else \
                  (lambda j: (-weight[i, j].item(), j))
            chosen = sorted(range(weight.shape[1]), key=key)[:k]
            rows.append(sum(weight[i, j] * below[j] for j in chosen))
        return torch.stack(rows)

    for by_abs in (False, True):
        rank_by = "abs" if by_abs else "value"
        v2 = loop(W2, W1, 2, by_abs)
        torch.testing.assert_close(linear_combination(dbn, 2, top=2, rank_by=rank_by).images, v2)
        torch.testing.assert_close(linear_combination(dbn, 3, top=2, rank_by=rank_by).images,
                                   loop(W3, v2, 2, by_abs))
    torch.testing.assert_close(linear_combination(dbn, 3, top=None).images, W3 @ W2 @ W1)
    torch.testing.assert_close(linear_combination(dbn, 1).images, W1)
    torch.testing.assert_close(linear_combination(dbn, 3, top=None, units=[2, 0]).images,
                               (W3 @ W2 @ W1)[[2, 0]])


# -- bad input --------------------------------------------------------------------------

@pytest.mark.parametrize("call,message", [
    (lambda d, x: top_examples(d, x, 0), "layer must be a hidden depth in 1..2"),
    (lambda d, x: top_examples(d, x, 3), "layer must be a hidden depth"),
    (lambda d, x: top_examples(d, x, 1, units=[5]), "unit index 5 out of range"),
    (lambda d, x: top_examples(d, x, 1, units=[-1]), "unit index -1 out of range"),
    (lambda d, x: top_examples(d, x, 1, k=0), "k must be a positive integer"),
    (lambda d, x: top_examples(d, x, 1, k=11), "larger than the number of inputs"),
    (lambda d, x: top_examples(d, x[:, :5], 1), "width 5"),
    (lambda d, x: top_examples(d, x * float("nan"), 1), "NaN"),
    (lambda d, x: maximize(d, 1, steps=0), "steps must be a positive integer"),
    (lambda d, x: maximize(d, 1, restarts=0), "restarts must be"),
    (lambda d, x: maximize(d, 2, units=[3]), "out of range"),
    (lambda d, x: sample_unit(d, 1, variant="mcmc"), "variant must be one of"),
    (lambda d, x: sample_unit(d, 1, n_samples=0), "n_samples"),
    (lambda d, x: ranked_filters(d, 2, top=6), "top=6 is larger than layer 1's 5 units"),
    (lambda d, x: ranked_filters(d, 2, top=0), "top must be a positive integer"),
    (lambda d, x: linear_combination(d, 2, top=9), "top=9 is larger"),
    (lambda d, x: linear_combination(d, 2, rank_by="size"), "rank_by must be one of"),
    (lambda d, x: top_examples(d, x, []), "^layer: no layers given$"),
    (lambda d, x: top_examples(d, x, [1, 3]), r"^layer must be a hidden depth in 1\.\.2, got 3$"),
    (lambda d, x: top_examples(d, x, "1"), r"^layer must be a hidden depth in 1\.\.2, got '1'$"),
    (lambda d, x: top_examples(d, x, 1, batch_size=0),
     "^batch_size must be a positive integer, got 0$"),
    (lambda d, x: top_examples(d, x, 1, batch_size=2.5),
     "^batch_size must be a positive integer, got 2.5$"),
    (lambda d, x: top_examples(d, x, [1], units={2: [0]}),
     "^units: layer 2 is not among the layers asked for$"),
    (lambda d, x: top_examples(d, None, 1), "^images: expected a torch.Tensor, got NoneType$"),
    (lambda d, x: maximize(d, 1, seed=1.5), "^seed must be an integer, got 1.5$"),
    (lambda d, x: sample_unit(d, 1, seed="0"), "^seed must be an integer, got '0'$"),
    (lambda d, x: linear_combination(d, 2, top=2.0), "^top must be a positive integer, got 2.0$"),
])
def test_bad_input_raises_value_error(call, message):
    dbn = random_dbn([6, 5, 3], seed=11)
    with pytest.raises(ValueError, match=message):
        call(dbn, torch.rand(10, 6))


def test_top_examples_checks_every_layer_before_reading_the_data():
    dbn = random_dbn([6, 5, 3], seed=11)

    def batches():
        raise AssertionError("the data was read before the layers were checked")
        yield

    with pytest.raises(ValueError, match=r"^layer must be a hidden depth in 1\.\.2, got 0$"):
        top_examples(dbn, batches(), [1, 2, 0])
    x = torch.rand(10, 6)
    single = top_examples(dbn, x, np.int64(2), k=3)
    assert torch.equal(single.indices, top_examples(dbn, x, 2, k=3).indices)


@pytest.mark.parametrize("value,bad", [
    (float("inf"), "inf"), (float("nan"), "nan"), (0.0, "0.0"), (-1, "-1"), (True, "True"),
    ("1.0", "'1.0'"),
])
@pytest.mark.parametrize("name", ["rho", "lr"])
def test_maximize_needs_finite_positive_rho_and_lr(name, value, bad):
    dbn = random_dbn([6, 5, 3], seed=11)
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number > 0, got {bad}$"):
        maximize(dbn, 1, steps=2, restarts=1, **{name: value})
    fine = maximize(dbn, 1, steps=2, restarts=1, **{name: np.float32(0.5)}).images
    assert torch.isfinite(fine).all()


def test_every_method_takes_numpy_and_torch_unit_indices():
    dbn = random_dbn([6, 5, 3], seed=11)
    x = torch.rand(10, 6)
    calls = {
        "top_examples": lambda u: top_examples(dbn, x, 2, k=3, units=u).indices,
        "maximize": lambda u: maximize(dbn, 2, units=u, steps=3, restarts=2).all,
        "sample_unit": lambda u: sample_unit(dbn, 2, units=u, n_samples=4).samples,
        "ranked_filters": lambda u: ranked_filters(dbn, 2, units=u, top=2).weights,
        "linear_combination": lambda u: linear_combination(dbn, 2, top=2, units=u).images,
    }
    for name, call in calls.items():
        expected = call([2, 0])
        for units in (np.array([2, 0]), [np.int64(2), 0], torch.tensor([2, 0])):
            assert torch.equal(call(units), expected), name
        with pytest.raises(ValueError, match="^units must be an integer or a 1-D list"):
            call(np.float64(2))


def test_linear_combination_checks_top_against_every_layer_first():
    dbn = random_dbn([6, 5, 3, 4], seed=11)
    with pytest.raises(ValueError, match="^top=4 is larger than layer 2's 3 units$"):
        linear_combination(dbn, 3, top=4)


def test_a_method_a_layer_cannot_support_says_why():
    from featvis.seam import UnsupportedError

    dbn = random_dbn([6, 5, 3], seed=11)
    with pytest.raises(UnsupportedError, match="^ranked filters need a layer above the first"):
        ranked_filters(dbn, 1)
    with pytest.raises(UnsupportedError, match="unit sampling needs a generative model"):
        sample_unit(torch.nn.Sequential(torch.nn.Linear(6, 5)), 1)


def test_k_is_a_deprecated_spelling_of_top():
    dbn = random_dbn([6, 5, 3], seed=11)
    with pytest.warns(FutureWarning, match="k is now called top"):
        old = ranked_filters(dbn, 2, k=3)
    assert torch.equal(old.indices, ranked_filters(dbn, 2, top=3).indices)
    with pytest.warns(FutureWarning), pytest.raises(TypeError, match="give top only"):
        linear_combination(dbn, 2, top=2, k=3)
