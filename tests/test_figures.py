"""Figures that prove a picture shows the model: distinctness, class purity, and the
weight-randomization sanity check (with the probe's randomized copies it relies on)."""

import math

import pytest
import torch
from torch import nn

import featvis
from featvis import ranked_filters, top_examples
from featvis.figures import (Purity, class_purity, distinctness, example_distinctness,
                             randomized_similarity)
from featvis.probe import UnsupportedError, probe
from featvis.visualize import METHODS

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
    for method in (m for m in METHODS if m != "deconvnet"):     # a DBN has no conv maps
        for mode in ("layer", "cascade"):
            data = {"images": mnist[0][:100]} if method == "examples" else {}
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
    with pytest.raises(UnsupportedError, match="'1' is a ReLU: it has no weight"):
        randomized_similarity(conv_linear(), "1", "maximize", input_shape=(1, 6, 6), rho=1.0)


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
    with pytest.raises(UnsupportedError, match="'2' is a Flatten"):
        seam.randomized("2", "cascade", 0)


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
