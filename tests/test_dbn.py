import dataclasses
import re

import numpy as np
import pytest
import torch

import featvis.models.dbn
from featvis import DBN, RBM, DataError, maximize
from featvis.train import TrainingRecipe, batch_order, fit_rbm


def test_greedy_training_lowers_error_every_layer(small_dbn):
    assert small_dbn.sizes == [784, 64, 32, 16]
    for rbm in small_dbn.rbms:
        errors = [e["error_per_case"] for e in rbm.history]
        assert len(errors) == 3 and errors[-1] < errors[0]


@pytest.mark.parametrize("next_layer_data", ["last_epoch", "final"])
def test_each_rbm_learns_what_the_previous_one_hands_over(mnist_small, next_layer_data):
    """The greedy recipe: RBM 2 is exactly RBM 1's hand-over fitted on the same batches."""
    x = mnist_small[0][:500]
    dbn = DBN([784, 16, 8]).fit(x, epochs=2, seed=3, next_layer_data=next_layer_data,
                                progress=False)
    recipe = TrainingRecipe(epochs=2, seed=3 + 1, next_layer_data=next_layer_data)
    order = batch_order(500, seed=3)
    first = RBM(784, 16, seed=3 + 1)
    last = fit_rbm(first, x, recipe, order=order, keep_last_epoch=True, progress=False)
    assert torch.equal(first.weight, dbn.rbms[0].weight)
    features = last.hidden if next_layer_data == "last_epoch" else first.hidden_probs(x)
    second = RBM(16, 8, seed=3 + 2)
    fit_rbm(second, features, dataclasses.replace(recipe, seed=3 + 2), order=order,
            progress=False)
    assert torch.equal(second.weight, dbn.rbms[1].weight)


def test_transform_shapes_and_ranges(mnist_small, small_dbn):
    x = mnist_small[0][:50]
    manual = x
    for d, (size, rbm) in enumerate(zip([64, 32, 16], small_dbn.rbms), start=1):
        h = small_dbn.transform(x, layer=d)
        assert h.shape == (50, size) and 0 <= h.min() and h.max() <= 1
        manual = torch.sigmoid(manual @ rbm.weight.T + rbm.hidden_bias)
        torch.testing.assert_close(h, manual)
    for bad in (0, 4, -1, 1.0, True):
        with pytest.raises(ValueError, match="layer must be a hidden depth in 1..3"):
            small_dbn.transform(x, bad)


@pytest.mark.parametrize("sizes", [[784.7, 10.2], ["784", "10"], [784, True], [784, 0], [784],
                                   784, "784", None])
def test_sizes_must_be_integers(sizes):
    got = re.escape(repr(sizes))
    with pytest.raises(ValueError, match=rf"^DBN sizes must be >= 2 positive integers, got {got}$"):
        DBN(sizes)


def test_numpy_integer_sizes_and_seeds():
    dbn = DBN(np.array([6, 4, 3]), seed=np.int64(2))
    assert dbn.sizes == [6, 4, 3] and all(type(s) is int for s in dbn.sizes)
    assert torch.equal(dbn.rbms[1].weight, DBN([6, 4, 3], seed=2).rbms[1].weight)
    with pytest.raises(ValueError, match="^seed must be an integer, got 1.5$"):
        DBN([6, 4], seed=1.5)


@pytest.mark.parametrize("x,problem", [
    (torch.rand(5, 783), "^x: width 783 does not match the model's input size 784$"),
    (torch.zeros(5, 784, dtype=torch.long),
     "^x: expected floating-point values, got torch.int64$"),
    (torch.full((5, 784), float("nan")), "^x: contains NaN or infinite values$"),
    (torch.rand(784), r"^x: expected shape \(N, D\), got \(784,\)$"),
    ([[0.0] * 784], "^x: expected a torch.Tensor, got list$"),
])
def test_transform_checks_its_input(small_dbn, x, problem):
    with pytest.raises(DataError, match=problem):
        small_dbn.transform(x, 1)


def test_transform_takes_any_float_dtype_and_numpy_layers(mnist_small, small_dbn):
    x = mnist_small[0][:20]
    expected = small_dbn.transform(x, 2)
    torch.testing.assert_close(small_dbn.transform(x.double(), np.int64(2)), expected)
    assert small_dbn.transform(x.double(), 2).dtype == torch.float32


def test_inner_loops_do_not_check_their_own_inputs(small_dbn, monkeypatch):
    """Inputs are checked at public entry points only: maximize's steps go through DBN._up."""
    calls = []
    check = featvis.models.dbn.check_images
    monkeypatch.setattr(featvis.models.dbn, "check_images",
                        lambda *a, **kw: calls.append(1) or check(*a, **kw))
    maximize(small_dbn, 3, units=[0], steps=5, restarts=1)
    assert calls == []
    small_dbn.transform(torch.rand(2, 784), 3)
    assert calls == [1]


def test_fit_checks_the_whole_recipe_before_training():
    dbn = DBN([4, 2])
    before = dbn.rbms[0].weight.clone()
    with pytest.raises(ValueError, match=r"^momentum must be a number in \[0, 1\), got 'abc'$"):
        dbn.fit(torch.rand(10, 4), epochs=1, momentum="abc", progress=False)
    assert dbn.trained_layers == 0 and dbn.recipe is None
    assert torch.equal(dbn.rbms[0].weight, before)


def test_input_norm_is_recorded(mnist_small, small_dbn):
    assert small_dbn.input_norm == pytest.approx(mnist_small[0].norm(dim=1).mean().item())
    assert DBN([4, 2]).input_norm is None
