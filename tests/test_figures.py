"""Figures that prove a picture shows the model: distinctness, class purity, and the
weight-randomization sanity check (with the probe's randomized copies it relies on)."""

import math
import statistics

import pytest
import torch
from torch import nn

import featvis
from featvis import ranked_filters, top_examples
from featvis.figures import (GABOR_COLUMNS, GaborFit, Purity, class_purity, distinctness,
                             example_distinctness, gabor_fit, locality, random_locality)
from featvis.pipeline.sanity import randomized_similarity
from featvis.seam import probe
from featvis.pipeline.visualization import METHODS

from helpers import random_dbn

# Centred, a and c point the same way and b the opposite way: cosines ab = -1, ac = 1, bc = -1.
A, B, C = [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [2.0, 4.0, 6.0, 8.0]
FLAT = [5.0, 5.0, 5.0, 5.0]


@pytest.fixture(scope="module")
def mnist():
    images, labels = featvis.load_mnist()
    return images[:1000], labels[:1000]


@pytest.fixture(scope="module")
def trained(mnist):
    """The issue's small model: a 784-32-16 DBN after 2 epochs on 1,000 images."""
    return featvis.DBN([784, 32, 16]).fit(mnist[0], epochs=2, progress=False)


def conv_linear():
    """Conv2d -> ReLU -> Flatten -> Linear -> ReLU -> Linear, for (1, 6, 6) inputs."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 8),
                         nn.ReLU(), nn.Linear(8, 3))


def state(model):
    return {name: value.clone() for name, value in model.state_dict().items()}


def test_distinctness_is_the_mean_centred_cosine_over_pairs_of_units():
    assert distinctness(torch.tensor([A, B, C])) == pytest.approx(-1 / 3)   # (-1 + 1 - 1) / 3
    assert distinctness(torch.tensor([A, B, C]).view(3, 1, 2, 2)) == pytest.approx(-1 / 3)
    assert distinctness(torch.tensor([A, C])) == pytest.approx(1.0)
    # A flat picture has cosine 1 with anything: ab = -1, a~flat = b~flat = 1.
    assert distinctness(torch.tensor([A, B, FLAT])) == pytest.approx(1 / 3)
    assert distinctness(torch.tensor([FLAT, [0.0] * 4])) == 1.0


def test_distinctness_looks_at_the_first_50_units_in_index_order():
    # Centred one-hots in D dims: cosine -1 / (D - 1) for every pair.
    one_hots = torch.eye(50)
    assert distinctness(one_hots) == pytest.approx(-1 / 49)
    copies = one_hots[:1].expand(10, -1)          # units 50..59 would all look like unit 0
    assert distinctness(torch.cat([one_hots, copies])) == pytest.approx(-1 / 49)
    assert distinctness(torch.tensor([A, B, C, A, A]), max_units=3) == pytest.approx(-1 / 3)


def test_distinctness_refuses_what_has_no_pairs_or_no_value():
    with pytest.raises(ValueError, match="2 or more units"):
        distinctness(torch.tensor([A]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        distinctness(torch.tensor([A, [float("nan")] * 4]))
    with pytest.raises(ValueError, match="max_units must be an integer >= 2"):
        distinctness(torch.tensor([A, B]), max_units=1)


def test_example_distinctness_subtracts_the_data_mean():
    data_mean = torch.tensor([10.0, 0.0, 5.0, 1.0])
    means = torch.tensor([A, B, C]) + data_mean
    assert distinctness(means) > 0.8            # 0.85: the shared data mean dominates
    assert example_distinctness(means, data_mean) == pytest.approx(-1 / 3)
    assert example_distinctness(means.view(3, 2, 2), data_mean) == pytest.approx(-1 / 3)
    with pytest.raises(ValueError, match="data_mean has 3 values, one picture has 4"):
        example_distinctness(means, data_mean[:3])


def test_class_purity_by_hand():
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 3, 3])
    indices = torch.tensor([[1, 2, 3, 4],       # labels 1 1 2 2: a tie, to the lower label
                            [3, 4, 5, 0],       # 2 2 2 0
                            [0, 6, 1, 7],       # 0 3 1 3
                            [0, 1, 3, 6]])      # 0 1 2 3
    purity = class_purity(indices, labels)
    assert isinstance(purity, Purity)
    torch.testing.assert_close(purity.share, torch.tensor([0.5, 0.75, 0.5, 0.25],
                                                          dtype=torch.float64))
    # -(3/4 log2 3/4 + 1/4 log2 1/4) = 2 - 3/4 log2 3 = 0.811278...
    torch.testing.assert_close(purity.entropy_bits, torch.tensor(
        [1.0, 2 - 0.75 * math.log2(3), 1.5, 2.0], dtype=torch.float64))
    assert purity.top_class.tolist() == [1, 2, 3, 0]
    with pytest.raises(ValueError, match=r"indices must be in 0\.\.7"):
        class_purity(torch.tensor([[8]]), labels)
    with pytest.raises(ValueError, match="integer labels"):
        class_purity(indices, labels.float())
    with pytest.raises(ValueError, match="non-empty"):
        class_purity(indices.float(), labels)


def test_a_method_that_ignores_the_weights_is_flagged(trained, mnist):
    data_mean = mnist[0].mean(0)

    def data_mean_for_every_unit(model, layer, units):
        return data_mean.expand(len(units), -1)

    for mode in ("layer", "cascade"):
        assert randomized_similarity(trained, 1, data_mean_for_every_unit,
                                     mode=mode) == pytest.approx(1.0)


def test_real_methods_pass_the_randomization_check(trained):
    # Measured: combination 0.002 (layer 1, both modes), 0.037 (layer 2, cascade); maximize
    # 0.002 (layer 1), 0.044 / 0.004 (layer 2, layer / cascade). Combination at layer 2 with
    # only layer 2 re-drawn keeps 0.81: it is a sum of layer-1 filters, alike after 2 epochs.
    for method, layer, mode in (("combination", 1, "layer"), ("combination", 1, "cascade"),
                                ("combination", 2, "cascade"), ("maximize", 1, "layer"),
                                ("maximize", 2, "layer"), ("maximize", 2, "cascade")):
        assert randomized_similarity(trained, layer, method, mode=mode) < 0.5, (method, mode)


def test_index_methods_compare_by_jaccard_overlap():
    dbn = random_dbn([12, 8, 6], seed=1)
    x = torch.rand(40, 12, generator=torch.Generator().manual_seed(0))
    copy = probe(dbn).randomized(2, "layer", 0)

    def jaccard(a, b):
        return sum(len(set(p) & set(q)) / len(set(p) | set(q))
                   for p, q in zip(a.tolist(), b.tolist())) / len(a)

    expected = jaccard(ranked_filters(dbn, 2, top=4).indices,
                       ranked_filters(copy, 2, top=4).indices)
    assert randomized_similarity(dbn, 2, "filters", top=4) == pytest.approx(expected)
    expected = jaccard(top_examples(dbn, x, 2, k=5).indices,
                       top_examples(copy, x, 2, k=5).indices)
    assert randomized_similarity(dbn, 2, "examples", images=x, k=5) == pytest.approx(expected)


def test_the_users_model_never_changes(trained, mnist):
    before = state(trained)
    for method in (m for m in METHODS if m not in ("deconvnet", "filter_views")):  # layer 2
        for mode in ("layer", "cascade"):
            data = {"images": mnist[0][:100]} if method in ("examples", "statistics") else {}
            randomized_similarity(trained, 2, method, mode=mode, units=[0, 1], **data)
    after = trained.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_refusals_come_before_any_work():
    dbn = random_dbn([6, 4])
    with pytest.raises(ValueError, match="unknown method 'saliency'"):
        randomized_similarity(dbn, 1, "saliency")
    with pytest.raises(ValueError, match="pass images="):
        randomized_similarity(dbn, 1, "examples")
    with pytest.raises(ValueError, match="mode must be one of"):
        randomized_similarity(dbn, 1, "combination", mode="shuffle")
    # A ReLU has no weights of its own: it re-draws the convolution it reads through.
    assert -1.0 <= randomized_similarity(conv_linear(), "1", "maximize", input_shape=(1, 6, 6),
                                         rho=1.0) <= 1.0


def test_a_module_is_compared_through_its_randomized_copy():
    model = conv_linear()
    copy = probe(model, (1, 6, 6)).randomized("0", "layer", 0)
    a, b = model[0].weight.detach().flatten(1), copy[0].weight.detach().flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    expected = torch.nn.functional.cosine_similarity(a, b).mean().item()
    assert randomized_similarity(model, "0", "combination", input_shape=(1, 6, 6)) == \
        pytest.approx(expected)


def test_randomized_redraws_exactly_the_chosen_weights():
    model = conv_linear()
    before = state(model)
    seam = probe(model, (1, 6, 6))
    layer = seam.randomized("3", "layer", seed=0)
    cascade = seam.randomized("3", "cascade", seed=0)
    changed = {mode: {name for name, value in copy.state_dict().items()
                      if not torch.equal(value, before[name])}
               for mode, copy in (("layer", layer), ("cascade", cascade))}
    assert changed == {"layer": {"3.weight"}, "cascade": {"0.weight", "3.weight"}}
    assert all(torch.equal(model.state_dict()[name], before[name]) for name in before)
    assert torch.equal(layer[3].weight, cascade[3].weight)    # a layer's draw: same in both
    redrawn, trained = layer[3].weight.detach(), before["3.weight"]
    assert redrawn.mean().abs() < 0.2 * trained.std()
    assert redrawn.std().item() == pytest.approx(trained.std().item(), rel=0.15)
    again = seam.randomized("3", "layer", seed=0)
    assert torch.equal(again[3].weight, redrawn)
    assert not torch.equal(seam.randomized("3", "layer", seed=1)[3].weight, redrawn)
    assert {n for n, v in seam.randomized("5", "cascade", 0).state_dict().items()
            if not torch.equal(v, before[n])} == {"0.weight", "3.weight", "5.weight"}
    # A Flatten reads through the conv before it (issue 22): the same draw as the conv's own.
    assert torch.equal(seam.randomized("2", "cascade", 0)[0].weight,
                       seam.randomized("0", "cascade", 0)[0].weight)


def test_a_dbn_redraws_the_rbm_weights_below_and_keeps_its_biases():
    dbn = random_dbn([6, 5, 4, 3])
    before = state(dbn)
    seam = probe(dbn)
    for mode, expected in (("layer", {"rbms.1.weight"}),
                           ("cascade", {"rbms.0.weight", "rbms.1.weight"})):
        copy = seam.randomized(2, mode, 0)
        assert isinstance(copy, featvis.DBN) and copy is not dbn
        assert {name for name, value in copy.state_dict().items()
                if not torch.equal(value, before[name])} == expected
    assert all(torch.equal(dbn.state_dict()[name], before[name]) for name in before)


def gabors(n, side=14, noise=0.05, seed=0, sigma=(2.0, 3.0), freq=(0.15, 0.3)):
    """``n`` noisy unit-amplitude Gabors ``(n, side, side)``, their clean images and their
    true ``x0, y0, theta, frequency, sigma_x, sigma_y, phase`` ``(n, 7)``, drawn apart from
    featvis's code. ``sigma_x * frequency >= 0.3``: with less than about a third of a cycle
    per sigma the carrier is a blob whose frequency the pixels cannot tell."""
    g = torch.Generator().manual_seed(seed)

    def uniform(low, high):
        return low + (high - low) * torch.rand(n, 1, 1, generator=g, dtype=torch.float64)

    x0, y0 = uniform(5.0, side - 6.0), uniform(5.0, side - 6.0)
    theta, f = uniform(0, math.pi), uniform(*freq)
    sx, sy, phase = uniform(*sigma), uniform(*sigma), uniform(-math.pi, math.pi)
    y, x = torch.meshgrid(torch.arange(side, dtype=torch.float64),
                          torch.arange(side, dtype=torch.float64), indexing="ij")
    u = (x - x0) * theta.cos() + (y - y0) * theta.sin()
    v = -(x - x0) * theta.sin() + (y - y0) * theta.cos()
    clean = torch.exp(-u ** 2 / (2 * sx ** 2) - v ** 2 / (2 * sy ** 2)) * torch.cos(
        2 * math.pi * f * u + phase)
    noisy = clean + noise * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    truth = torch.cat([t.flatten()[:, None] for t in (x0, y0, theta, f, sx, sy, phase)], 1)
    return noisy.float(), clean, truth


def render(params, offset, side):
    """The Gabors of :class:`GaborFit` params ``(F, 8)`` and offsets, by the formula."""
    x0, y0, theta, f, sx, sy, phase, amplitude = (params.double()[:, i, None, None]
                                                  for i in range(8))
    y, x = torch.meshgrid(torch.arange(side, dtype=torch.float64),
                          torch.arange(side, dtype=torch.float64), indexing="ij")
    u = (x - x0) * theta.cos() + (y - y0) * theta.sin()
    v = -(x - x0) * theta.sin() + (y - y0) * theta.cos()
    return amplitude * torch.exp(-u ** 2 / (2 * sx ** 2) - v ** 2 / (2 * sy ** 2)) * torch.cos(
        2 * math.pi * f * u + phase) + offset.double()[:, None, None]


def disc_count(side, cy, cx, r):
    return sum((y - cy) ** 2 + (x - cx) ** 2 <= r ** 2
               for y in range(side) for x in range(side))


def test_locality_of_a_spike_and_of_energy_spread_evenly():
    # One pixel of 1 among zeros: energy (1 - 1/D)^2 at the spike, (1/D)^2 elsewhere.
    side, d = 14, 196
    spike = torch.zeros(1, side, side)
    spike[0, 6, 7] = 1.0
    inside = disc_count(side, 6, 7, 3)                     # r = side // 4 = 3: 29 pixels
    assert inside == 29
    peak = (1 - 1 / d) ** 2
    expected = (peak + (inside - 1) / d ** 2) / (peak + (d - 1) / d ** 2)
    assert locality(spike) == pytest.approx(expected, rel=1e-5)    # 0.9956
    assert locality(spike.flatten(1)) == locality(spike)
    # An even-sided checkerboard of +-1 has energy 1 everywhere; a slightly stronger pixel
    # is the peak.
    for side, (cy, cx) in ((14, (6, 7)), (14, (0, 13)), (10, (4, 2)), (4, (1, 1))):
        board = (torch.arange(side)[:, None] + torch.arange(side)) % 2 * 2.0 - 1
        board[cy, cx] *= 1.0001
        share = disc_count(side, cy, cx, side // 4) / side ** 2
        assert locality(board[None]) == pytest.approx(share, rel=1e-3), (side, cy, cx)


def test_locality_is_the_median_over_filters_and_a_flat_filter_counts_zero():
    spread = ((torch.arange(8)[:, None] + torch.arange(8)) % 2 * 2.0 - 1)[None]  # first peak:
    spike = torch.zeros(1, 8, 8)                                                  # corner,
    spike[0, 4, 4] = 1.0                                                          # 6 of 64
    flat = torch.full((1, 8, 8), 3.0)
    assert locality(torch.cat([spread, flat])) == pytest.approx(3 / 64)   # (6/64 + 0) / 2
    assert locality(torch.cat([spread, spike, spike])) == locality(spike)
    assert locality(flat) == 0.0


def test_locality_refuses_what_is_not_square_filters():
    for shape in ((3, 3, 4), (3, 10), (0, 4, 4), (3, 1, 4, 4), (5,)):
        with pytest.raises(ValueError, match=r"filters must be \(F, side, side\) or \(F, "
                                             r"side\*side\) square filters, got shape"):
            locality(torch.zeros(shape))
    with pytest.raises(ValueError, match="NaN or infinite"):
        locality(torch.full((2, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="shape must be"):
        random_locality((3, 10))
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        random_locality((3, 4, 4), draws=0)


def test_random_filters_are_far_less_local_than_gabors():
    noisy, _, _ = gabors(20, sigma=(1.5, 2.0), freq=(0.1, 0.3))
    baseline = random_locality(noisy.shape)                          # 0.16
    assert random_locality(noisy.flatten(1).shape) == baseline == random_locality(
        (1, 14, 14), seed=0)
    assert random_locality(noisy.shape, seed=1) == pytest.approx(baseline, abs=0.02)
    assert locality(noisy) >= baseline + 0.2                         # 0.7


def test_gabor_fit_recovers_noisy_gabors():
    noisy, clean, truth = gabors(12)
    fit = gabor_fit(noisy)
    assert isinstance(fit, GaborFit) and fit.params.shape == (12, 8)
    assert GABOR_COLUMNS == ("x0", "y0", "theta", "frequency", "sigma_x", "sigma_y", "phase",
                             "amplitude")
    p = fit.params.double()
    turn = (p[:, 2] - truth[:, 2]).remainder(math.pi)
    assert torch.minimum(turn, math.pi - turn).max() < math.radians(5)
    assert ((p[:, 3] - truth[:, 3]).abs() / truth[:, 3]).max() < 0.1
    assert torch.hypot(p[:, 0] - truth[:, 0], p[:, 1] - truth[:, 1]).max() < 0.5
    assert ((0 <= p[:, 2]) & (p[:, 2] < math.pi)).all()
    # No worse than the true Gabor, and as good as the noise allows (about 0.93).
    ss_tot = (noisy.double() - noisy.double().mean((1, 2), keepdim=True)).square().sum((1, 2))
    truth_r2 = 1 - (noisy.double() - clean).square().sum((1, 2)) / ss_tot
    assert (fit.r2.double() >= truth_r2 - 1e-4).all()
    assert fit.r2.min() >= 0.9 and fit.share == 1.0 and fit.threshold == 0.7
    # The columns, phase and offset mean what GaborFit says: they redraw the filter.
    drawn = render(fit.params, fit.offset, 14)
    assert (drawn - clean).abs().max() < 0.15
    r2 = 1 - (noisy.double() - drawn).square().sum((1, 2)) / ss_tot
    torch.testing.assert_close(fit.r2.double(), r2, atol=1e-4, rtol=0)
    # The spreads of the good fits, by their definitions.
    doubled = 2 * p[:, 2]
    assert fit.orientation_spread == pytest.approx(
        1 - math.hypot(doubled.cos().mean().item(), doubled.sin().mean().item()), abs=1e-6)
    q1, _, q3 = statistics.quantiles(p[:, 3].tolist(), n=4, method="inclusive")
    assert fit.frequency_spread == pytest.approx(q3 - q1, abs=1e-6)


def test_gabor_fit_is_no_worse_than_the_truth_even_where_it_cannot_be_told():
    # Sigma 1.5 at 0.1 cycles/pixel: some fits trade frequency for amplitude and phase, and
    # fit the noisy pixels a little better than the true Gabor does.
    noisy, clean, _ = gabors(40, seed=7, sigma=(1.5, 3.0), freq=(0.1, 0.3))
    ss_tot = (noisy.double() - noisy.double().mean((1, 2), keepdim=True)).square().sum((1, 2))
    truth_r2 = 1 - (noisy.double() - clean).square().sum((1, 2)) / ss_tot
    assert (gabor_fit(noisy).r2.double() >= truth_r2 - 1e-4).all()


def test_gabor_fit_finds_no_gabor_in_noise_or_a_flat_filter():
    noise = torch.randn(20, 14, 14, generator=torch.Generator().manual_seed(3))
    fit = gabor_fit(torch.cat([noise, torch.zeros(1, 14, 14)]))
    assert fit.r2.max() < 0.3 and fit.share == 0.0                  # 0.16 at most
    assert fit.r2[-1] == 0.0 and fit.params[-1, 7] == 0.0
    assert math.isnan(fit.orientation_spread) and math.isnan(fit.frequency_spread)
    assert not fit.good.any()


def test_gabor_fit_spreads_and_threshold():
    noisy, _, truth = gabors(6, seed=2)
    same = gabors(6, seed=2)[0][:1].expand(4, -1, -1)      # one filter, four times
    assert gabor_fit(same).orientation_spread == pytest.approx(0.0, abs=1e-6)
    assert gabor_fit(same).frequency_spread == pytest.approx(0.0, abs=1e-6)
    noise = torch.randn(2, 14, 14, generator=torch.Generator().manual_seed(0))
    fit = gabor_fit(torch.cat([noisy, noise]), r2_threshold=0.5)
    assert fit.good.tolist() == [True] * 6 + [False] * 2 and fit.share == 0.75
    assert fit.threshold == 0.5


def test_gabor_fit_is_deterministic_and_refuses_bad_arguments():
    noisy, _, _ = gabors(4, seed=1)
    noise = torch.randn(2, 14, 14, generator=torch.Generator().manual_seed(1))
    noisy = torch.cat([noisy, noise])
    a, b = gabor_fit(noisy, seed=5), gabor_fit(noisy.flatten(1), seed=5)
    assert torch.equal(a.params, b.params) and torch.equal(a.r2, b.r2)
    assert torch.equal(a.offset, b.offset)
    with pytest.raises(ValueError, match="r2_threshold must be a number in"):
        gabor_fit(noisy, r2_threshold=1.5)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        gabor_fit(noisy, steps=-1)
    with pytest.raises(ValueError, match="got shape \\(6, 14, 13\\)"):
        gabor_fit(noisy[:, :, :13])
