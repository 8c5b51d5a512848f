"""Maximization under a box, a sphere or both, with its penalties, against closed forms."""

import math

import pytest
import torch
from torch import nn

from featvis import maximize

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


def test_a_unit_that_never_fires_is_reported_dead():
    linear = nn.Linear(9, 2)
    with torch.no_grad():
        linear.weight.fill_(0.1)
        linear.bias.copy_(torch.tensor([0.0, -100.0]))     # unit 1: dead behind the ReLU
    for penalty in ({}, {"tv": 1.0, "l2": 0.1}):          # penalties have gradients too
        mx = maximize(nn.Sequential(linear, nn.ReLU()), "1", bounds=(0.0, 1.0), steps=5,
                      restarts=3, input_shape=(9,), **penalty)
        assert mx.dead.tolist() == [False, True]
