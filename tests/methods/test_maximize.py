"""Maximization under a box, a sphere or both, with its penalties, against closed forms."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from featvis import fit_color_decorrelation, maximize

from helpers import random_dbn


def single_unit(weights):
    """One sigmoid unit with the given weights: its box optimum is the indicator of w > 0."""
    linear = nn.Linear(len(weights), 1)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([weights]))
        linear.bias.zero_()
    return nn.Sequential(linear, nn.Sigmoid())


def test_the_box_optimum_of_one_unit_is_the_indicator_of_positive_weights():
    w = torch.randn(16, generator=torch.Generator().manual_seed(0)).tolist()
    mx = maximize(single_unit(w), "1", bounds=(0.0, 1.0), steps=600, restarts=3,
                  input_shape=(16,))
    assert torch.equal(mx.images[0], (torch.tensor(w) > 0).float())
    assert mx.saturation.tolist() == [1.0]
    assert mx.activation.item() == pytest.approx(
        torch.sigmoid(torch.tensor(w).clamp(min=0).sum()).item(), rel=1e-6)


def test_sphere_and_box_together_both_hold():
    dbn = random_dbn([64, 6, 3], seed=2)
    for rho in (1.0, 4.0, 7.9):                      # the box [0, 1]^64 reaches norm 8
        mx = maximize(dbn, 2, rho=rho, bounds=(0.0, 1.0), steps=60, restarts=3)
        pictures = mx.all.flatten(2)
        assert pictures.min() >= 0.0 and pictures.max() <= 1.0
        assert (pictures.norm(dim=2) - rho).abs().max() <= 1e-4 * rho
        assert ((mx.saturation >= 0) & (mx.saturation <= 1)).all()
    assert torch.isnan(maximize(dbn, 2, steps=2, restarts=1).saturation).all()


@pytest.mark.parametrize("kwargs,message", [
    (dict(rho=8.5, bounds=(0.0, 1.0)), r"do not meet: the box reaches norm 8 at most"),
    (dict(rho=1.0, bounds=(0.5, 1.0)), r"with rho, bounds must contain 0"),
    (dict(bounds=(1.0, 0.0)), r"bounds\[1\] must be a finite number > 1"),
    (dict(bounds=(0.0,)), r"bounds must be a pair"),
    (dict(l2=-1.0), r"l2 must be a finite number >= 0"),
    (dict(tv=math.nan), r"tv must be a finite number >= 0"),
])
def test_impossible_constraints_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        maximize(random_dbn([64, 6, 3], seed=2), 1, steps=1, **kwargs)


def test_penalties_pull_the_pictures_their_way():
    dbn = random_dbn([64, 6, 3], seed=4)
    common = dict(bounds=(0.0, 1.0), steps=80, restarts=3, seed=1)
    plain = maximize(dbn, 2, **common)
    small = maximize(dbn, 2, l2=5.0, **common)
    assert small.images.flatten(1).norm(dim=1).mean() < plain.images.flatten(1).norm(dim=1).mean()

    def variation(images):
        pictures = images.view(-1, 8, 8)
        return ((pictures[:, 1:] - pictures[:, :-1]).abs().sum()
                + (pictures[:, :, 1:] - pictures[:, :, :-1]).abs().sum())

    smooth = maximize(dbn, 2, tv=2.0, **common)
    assert variation(smooth.images) < variation(plain.images)
    sphere = dict(steps=80, restarts=4, seed=1)
    diverse = maximize(dbn, 2, diversity=50.0, **sphere)
    assert diverse.invariance.mean() < maximize(dbn, 2, **sphere).invariance.mean()


def test_the_normalized_ascent_follows_gradients_too_small_to_square():
    """Weights of 1e-28 (their squares underflow in float32) take the same steps as weights
    of 1: only the gradient's direction moves the picture."""
    pictures = []
    for scale in (1.0, 1e-28):
        linear = nn.Linear(16, 2)
        with torch.no_grad():
            linear.weight.copy_(scale * torch.randn(2, 16, generator=torch.Generator()
                                                    .manual_seed(0)))
            linear.bias.zero_()
        pictures.append(maximize(nn.Sequential(linear), "0", rho=2.0, steps=20, restarts=2,
                                 input_shape=(16,)).images)
    torch.testing.assert_close(pictures[1], pictures[0], atol=1e-5, rtol=0)


def test_a_unit_that_never_fires_is_reported_dead():
    linear = nn.Linear(9, 2)
    with torch.no_grad():
        linear.weight.fill_(0.1)
        linear.bias.copy_(torch.tensor([0.0, -100.0]))     # unit 1: dead behind the ReLU
    model = nn.Sequential(nn.Flatten(), linear, nn.ReLU())
    # Penalties have gradients too; with transforms, the first step's pictures are moved.
    for options in ({}, {"tv": 1.0, "l2": 0.1}, {"transforms": "standard"}):
        mx = maximize(model, "2", bounds=(0.0, 1.0), steps=5, restarts=3,
                      input_shape=(1, 3, 3), **options)
        assert mx.dead.tolist() == [False, True]


def tiny_cnn(seed=0, channels=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3))


def test_transforms_are_reproducible_per_row_and_raise_the_objective():
    cnn = tiny_cnn()
    common = dict(bounds=(0.0, 1.0), steps=20, restarts=2, input_shape=(1, 10, 10),
                  transforms="standard", snapshots=(0,))
    mx = maximize(cnn, "2", seed=3, **common)
    again = maximize(cnn, "2", seed=3, **common)
    assert torch.equal(mx.all, again.all)
    assert not torch.equal(mx.all, maximize(cnn, "2", seed=4, **common).all)
    alone = maximize(cnn, "2", units=[2], seed=3, **common)     # draws depend on the row only
    assert torch.allclose(alone.all[0], mx.all[2], atol=1e-6)
    with torch.no_grad():
        start = cnn(mx.snapshots[0]).mean((2, 3)).diagonal()
    assert (mx.activation > start).all()
    assert not torch.equal(mx.all, maximize(cnn, "2", seed=3, **{**common, "transforms": None}).all)


def test_snapshots_are_kept_at_the_requested_steps():
    cnn = tiny_cnn()
    mx = maximize(cnn, "2", rho=3.0, steps=6, restarts=2, input_shape=(1, 8, 8),
                  snapshots=(0, 3, 6))
    assert sorted(mx.snapshots) == [0, 3, 6]
    assert all(s.shape == (4, 1, 8, 8) for s in mx.snapshots.values())
    assert torch.equal(mx.snapshots[6], mx.images)
    assert not torch.equal(mx.snapshots[0], mx.images)
    assert maximize(cnn, "2", rho=3.0, steps=2, restarts=1, input_shape=(1, 8, 8)).snapshots == {}


def colour_covariance():
    a = torch.tensor([[1.0, 0.5, 0.2], [0.0, 0.8, 0.3], [0.0, 0.0, 0.4]])
    return a @ a.T


@pytest.mark.parametrize("shape,decorrelate", [((16,), False), ((3, 4, 4), False),
                                               ((3, 4, 4), True)])
def test_fourier_and_decorrelated_ascent_reach_the_box_optimum_of_a_linear_unit(shape,
                                                                             decorrelate):
    n = math.prod(shape)
    w = torch.randn(n, generator=torch.Generator().manual_seed(1))
    linear = single_unit(w.tolist())
    model = linear if len(shape) == 1 else nn.Sequential(nn.Flatten(), *linear)
    layer = "1" if len(shape) == 1 else "2"
    matrix = torch.linalg.cholesky(colour_covariance()) if decorrelate else None
    mx = maximize(model, layer, bounds=(0.0, 1.0), steps=400, restarts=2, input_shape=shape,
                  param="fourier", decorrelate=matrix)
    assert torch.equal(mx.images[0].flatten(), (w > 0).float())


def test_fourier_ascent_on_the_sphere_reaches_the_weights_direction():
    w = torch.randn(64, generator=torch.Generator().manual_seed(2))
    model = nn.Linear(64, 1)
    with torch.no_grad():
        model.weight.copy_(w[None])
    mx = maximize(nn.Sequential(model), "0", rho=2.0, steps=300, restarts=1, input_shape=(64,),
                  param="fourier")
    assert mx.images[0].norm().item() == pytest.approx(2.0, rel=1e-5)
    assert F.cosine_similarity(mx.images[0], w, dim=0).item() > 0.99


def test_fit_color_decorrelation_is_the_square_root_of_the_colour_covariance():
    covariance = colour_covariance()
    noise = torch.randn(20, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    images = torch.einsum("ij,njhw->nihw", torch.linalg.cholesky(covariance), noise) + 0.5
    m = fit_color_decorrelation(images)
    assert m.shape == (3, 3) and torch.allclose(m, m.T)
    empirical = torch.cov(images.transpose(0, 1).reshape(3, -1))
    assert torch.allclose(m @ m.T, empirical, atol=1e-5)
    assert torch.allclose(m @ m.T, covariance, atol=0.05)
    with pytest.raises(ValueError, match=r"expected images \(N, 3, H, W\)"):
        fit_color_decorrelation(torch.rand(2, 1, 4, 4))


@pytest.mark.parametrize("kwargs,message", [
    (dict(param="wavelet"), r"param must be one of \('pixel', 'fourier'\)"),
    (dict(transforms="fancy"), r"transforms must be None, 'standard' or a list of Transform"),
    (dict(snapshots=(0, 9)), r"snapshot steps must be <= steps = 5, got 9"),
    (dict(snapshots=3), r"snapshots must be a sequence of steps"),
    (dict(decorrelate=torch.eye(3)), r"decorrelate needs a \(3, 3\) matrix and 3-channel"),
])
def test_bad_priors_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        maximize(tiny_cnn(), "2", rho=1.0, steps=5, input_shape=(1, 8, 8), **kwargs)
