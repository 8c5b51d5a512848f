import dataclasses
import re

import numpy as np
import pytest
import torch

import featvis.models.dbn
from featvis import DBN, RBM, DataError, maximize
from featvis.models.training import TrainingRecipe, batch_order, fit_rbm


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


def real_data(n=200, width=16, seed=0):
    """Zero-mean real-valued rows: 3 factors plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g) @ torch.randn(3, width, generator=g)
    x += 0.3 * torch.randn(n, width, generator=g)
    return x - x.mean(0)


def test_gaussian_dbn_trains_on_real_valued_data():
    """Only RBM 1 is Gaussian (and annealed); RBM 2 is binary, fitted on RBM 1's hand-over."""
    x = real_data()
    recipe = dict(epochs=4, batch_size=50, lr=0.05, sigma_decay=0.9, sigma_floor=0.3)
    dbn = DBN([16, 8, 4], visible="gaussian", sigma=0.5, seed=2).fit(x, seed=3, progress=False,
                                                                    **recipe)
    assert dbn.visible == "gaussian" and [r.visible for r in dbn.rbms] == ["gaussian", "binary"]
    assert dbn.sigma == pytest.approx(0.5 * 0.9 ** 4) and dbn.rbms[0].initial_sigma == 0.5
    assert "visible='gaussian'" in repr(dbn)
    errors = [e["error_per_case"] for e in dbn.rbms[0].history]
    assert errors[-1] < errors[0]
    # The same two RBMs trained by hand on the same batches.
    layer_recipe = TrainingRecipe(seed=3 + 1, **recipe)
    order = batch_order(200, seed=3)
    first = RBM(16, 8, visible="gaussian", sigma=0.5, seed=3 + 1)
    last = fit_rbm(first, x, layer_recipe, order=order, keep_last_epoch=True, progress=False)
    second = RBM(8, 4, seed=3 + 2)
    fit_rbm(second, last.hidden, dataclasses.replace(layer_recipe, seed=3 + 2), order=order,
            progress=False)
    for d, rbm in enumerate([first, second]):
        for name, t in rbm.state_dict().items():
            assert torch.equal(t, dbn.rbms[d].state_dict()[name]), (d, name)
    # The up-pass divides by sigma; the down-pass to the inputs is visible_mean.
    rbm = dbn.rbms[0]
    torch.testing.assert_close(dbn.transform(x, 1),
                               torch.sigmoid(x / dbn.sigma @ rbm.weight.T + rbm.hidden_bias))
    h = dbn.transform(x[:5], 1)
    torch.testing.assert_close(rbm.visible_mean(h),
                               rbm.visible_bias + dbn.sigma * h @ rbm.weight)


def test_visible_kind_is_checked_and_binary_inputs_stay_in_unit_range():
    with pytest.raises(ValueError, match="^visible must be 'binary' or 'gaussian', got 'real'$"):
        DBN([4, 2], visible="real")
    with pytest.raises(ValueError, match="^sigma applies to Gaussian visible units only"):
        DBN([4, 2], sigma=0.5)
    assert DBN([4, 2]).visible == "binary" and DBN([4, 2]).sigma == 1.0
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        DBN([16, 4]).fit(real_data(), epochs=1, progress=False)
    with pytest.raises(DataError, match="NaN"):
        DBN([4, 2], visible="gaussian").fit(torch.full((5, 4), float("inf")), progress=False)
