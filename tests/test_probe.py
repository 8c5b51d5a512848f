"""The seam: any nn.Module read through its probe, against hook-free computations."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from featvis import DataError, linear_combination, maximize, ranked_filters, top_examples
from featvis.seam import LayerError, LayerInfo, UnsupportedError, layers, probe
from featvis.errors import UserCodeError

from helpers import random_dbn


def as_sequential(dbn):
    """The DBN's up-pass as Linear + Sigmoid modules with the same weights."""
    modules = []
    for rbm in dbn.rbms:
        linear = nn.Linear(rbm.n_visible, rbm.n_hidden)
        linear.weight.data.copy_(rbm.weight)
        linear.bias.data.copy_(rbm.hidden_bias)
        modules += [linear, nn.Sigmoid()]
    return nn.Sequential(*modules)


class Residual(nn.Module):
    """Not a Sequential: functional ops, a residual add, a nested target."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = nn.ModuleList([nn.ModuleDict({"conv": nn.Conv2d(4, 4, 3, padding=1)})])
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = h + F.relu(self.block[0]["conv"](h))
        h = F.max_pool2d(self.bn(h), 2)
        return self.head(self.drop(h.flatten(1)))


def hook_free(model, x):
    """The activations of Residual computed by hand, eval mode."""
    h0 = F.relu(model.stem(x))
    conv = model.block[0]["conv"](h0)
    h = h0 + F.relu(conv)
    h = F.max_pool2d(F.batch_norm(h, model.bn.running_mean, model.bn.running_var,
                                  model.bn.weight, model.bn.bias), 2)
    return {"stem": model.stem(x), "block.0.conv": conv, "head": model.head(h.flatten(1))}


def hooks_left(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


@pytest.fixture
def residual():
    torch.manual_seed(0)
    model = Residual()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    return model.train()          # featvis must read it in eval mode and restore this


def test_a_sequential_from_a_dbn_gives_the_dbns_results():
    dbn = random_dbn([12, 8, 5], seed=3, scale=0.5)
    seq = as_sequential(dbn)
    x = torch.rand(200, 12, generator=torch.Generator().manual_seed(0))
    for d, linear, sigmoid in ((1, "0", "1"), (2, "2", "3")):
        ours = top_examples(dbn, x, d, k=5)
        theirs = top_examples(seq, x, linear, k=5)
        assert torch.equal(ours.indices, theirs.indices) and theirs.positions is None
        torch.testing.assert_close(torch.sigmoid(theirs.values.double()).float(), ours.values)
        at_sigmoid = top_examples(seq, x, sigmoid, k=5)
        torch.testing.assert_close(at_sigmoid.values, ours.values)
        rho = dbn.input_norm
        a = maximize(dbn, d, steps=50, restarts=2, seed=1).images
        b = maximize(seq, linear, rho=rho, steps=50, restarts=2, seed=1,
                     input_shape=(12,)).images
        assert F.cosine_similarity(a, b, dim=1).min() > 0.999
    torch.testing.assert_close(linear_combination(seq, "2", top=3, input_shape=(12,)).images,
                               linear_combination(dbn, 2, top=3).images)
    rf = ranked_filters(seq, "2", top=3, input_shape=(12,))
    assert torch.equal(rf.indices, ranked_filters(dbn, 2, top=3).indices) and rf.below == "0"


def test_activations_equal_a_hook_free_computation(residual):
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    seam = probe(residual, (1, 8, 8))
    with torch.no_grad():
        expected = hook_free(residual.eval(), x)
    residual.train()
    scores = seam.scores(x, {"stem": None, "block.0.conv": None, "head": None})
    torch.testing.assert_close(scores["head"].values, expected["head"])
    for key in ("stem", "block.0.conv"):
        values, flat = expected[key].flatten(2).max(2)
        torch.testing.assert_close(scores[key].values, values)
        assert torch.equal(scores[key].positions, flat)
    assert residual.training and residual.bn.training and residual.drop.training
    assert hooks_left(residual) == 0


def test_batchnorm_statistics_are_never_updated(residual):
    before = residual.bn.running_mean.clone()
    top_examples(residual, torch.randn(20, 1, 8, 8), "head", k=2)
    maximize(residual, "head", rho=3.0, steps=3, restarts=1, input_shape=(1, 8, 8))
    assert torch.equal(residual.bn.running_mean, before) and residual.training


def test_channels_rank_by_their_maximum_and_return_its_position(residual):
    x = torch.randn(30, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    ex = top_examples(residual, x, "block.0.conv", k=3, batch_size=7)
    with torch.no_grad():
        maps = hook_free(residual.eval(), x)["block.0.conv"]
    best, flat = maps.flatten(2).max(2)                          # (N, C)
    for c in range(4):
        order = sorted(range(30), key=lambda n: (-best[n, c].item(), n))[:3]
        assert ex.indices[c].tolist() == order
        rows = [divmod(flat[n, c].item(), 8) for n in order]
        assert ex.positions[c].tolist() == [list(r) for r in rows]
        torch.testing.assert_close(ex.mean[c], x[order].mean(0))


def test_no_hooks_are_left_behind(residual):
    x = torch.randn(2, 1, 8, 8)
    seam = probe(residual, (1, 8, 8))
    for _ in range(100):
        seam.scores(x, {"block.0.conv": None})
    assert hooks_left(residual) == 0

    def explode(*args):
        raise RuntimeError("boom inside forward")

    # The user's error is one line quoting it; Ctrl-C passes unchanged.
    for error, raised in ((RuntimeError, UserCodeError), (KeyboardInterrupt, KeyboardInterrupt)):
        handle = residual.bn.register_forward_pre_hook(
            explode if error is RuntimeError else lambda *a: (_ for _ in ()).throw(error()))
        with pytest.raises(raised, match="raised RuntimeError: boom inside forward"
                           if error is RuntimeError else None):
            seam.scores(x, {"head": None})
        handle.remove()
        assert hooks_left(residual) == 0 and residual.training


def test_an_inplace_relu_after_the_target_cannot_change_it():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 2))
    x = torch.randn(5, 1, 6, 6)
    scores = probe(model, (1, 6, 6)).scores(x, {"0": None, "3": None})   # the ReLU runs
    with torch.no_grad():
        conv = model[0](x)
    assert (conv < 0).any()
    torch.testing.assert_close(scores["0"].values, conv.flatten(2).max(2).values)


def test_one_conv_channel_mean_on_the_sphere_is_the_closed_form():
    torch.manual_seed(5)
    conv = nn.Conv2d(2, 3, 3)
    model = nn.Sequential(conv)
    rho = 4.0
    mx = maximize(model, "0", rho=rho, steps=500, restarts=2, input_shape=(2, 7, 7),
                  spatial="mean")
    # The channel's mean is <v, x> / P + b, v = the kernel summed over all output positions.
    for c in range(3):
        v = torch.zeros(2, 7, 7)
        for i in range(5):
            for j in range(5):
                v[:, i:i + 3, j:j + 3] += conv.weight[c].detach()
        torch.testing.assert_close(mx.images[c], rho * v / v.norm(), atol=1e-4, rtol=0)
        assert mx.activation[c].item() == pytest.approx(
            (rho * v.norm() / 25 + conv.bias[c]).item(), rel=1e-5)


def test_centre_objective_and_box_constraint():
    conv = nn.Conv2d(1, 2, 3)
    mx = maximize(nn.Sequential(conv), "0", bounds=(0.0, 1.0), spatial="center", steps=400,
                  restarts=1, input_shape=(1, 5, 5))
    assert mx.images.min() >= 0 and mx.images.max() <= 1
    # Only the centre output's receptive field matters: x = 1 where the kernel is positive.
    expected = (conv.weight.detach()[:, 0] > 0).float()
    assert torch.equal(mx.images[:, 0, 1:4, 1:4], expected)
    adam = maximize(nn.Sequential(conv), "0", bounds=(0.0, 1.0), spatial="center", steps=50,
                    restarts=1, input_shape=(1, 5, 5), optimizer="adam", lr=0.1)
    assert torch.equal(adam.images[:, 0, 1:4, 1:4], expected)


def test_layers_lists_every_tensor_output_in_forward_order(residual):
    infos = layers(residual, torch.zeros(2, 1, 8, 8))
    assert [i.name for i in infos] == ["stem", "block.0.conv", "bn", "drop", "head"]
    assert infos[1] == LayerInfo("block.0.conv", "Conv2d", 4, (8, 8), (4, 8, 8))
    assert infos[-1] == LayerInfo("head", "Linear", 3, (), (3,))
    assert hooks_left(residual) == 0 and residual.training


def test_layer_errors_name_close_matches_and_what_cannot_be_read(residual):
    with pytest.raises(LayerError, match=r"unknown layer 'block\.0\.cnv'; did you mean "
                                         r"'block\.0\.conv'"):
        top_examples(residual, torch.randn(4, 1, 8, 8), "block.0.cnv", k=1)
    with pytest.raises(LayerError, match="'block' never runs in the model's forward pass"):
        top_examples(residual, torch.randn(4, 1, 8, 8), "block", k=1)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(self.fc(x))

    with pytest.raises(LayerError, match="'fc' runs more than once in one forward pass"):
        top_examples(Twice(), torch.randn(4, 3), "fc", k=1)
    with pytest.raises(UnsupportedError, match="only chains of nn.Linear"):
        ranked_filters(residual, "block.0.conv", input_shape=(1, 8, 8))
    with pytest.raises(UnsupportedError, match="only chains of nn.Linear and a first nn.Conv2d"):
        linear_combination(residual, "block.0.conv", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="needs a constraint"):
        maximize(residual, "head", input_shape=(1, 8, 8))
    first = linear_combination(residual, "stem", input_shape=(1, 8, 8))
    assert torch.equal(first.images, residual.stem.weight.detach())


@pytest.mark.parametrize("spatial", ["mean", "center", "positive"])
def test_objective_equals_the_layer_read_by_a_forward_pass(spatial):
    """Whether read through the affine shortcut (a Conv or Linear target: row . input +
    offset, the forward stopped before the layer) or in full, the objective is the unit's
    output reduced as ``spatial`` says, computed here by an explicit forward pass."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2),
                          nn.Flatten(), nn.Linear(5 * 3 * 3, 6))
    x = torch.randn(7, 2, 8, 8)
    units = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    rows = torch.arange(7)
    seam = probe(model, (2, 8, 8))
    maps = model[:3](x)[rows, units]                       # (7, 3, 3) of the conv "2"
    expected = {"mean": maps.flatten(1).mean(1), "center": maps[:, 1, 1],
                "positive": F.leaky_relu(maps.flatten(1), 0.01).mean(1)}[spatial]
    torch.testing.assert_close(seam.objective("2", units, spatial)(x), expected,
                               atol=1e-5, rtol=0)
    dense = model(x)[rows, units.clamp(max=5)]
    torch.testing.assert_close(seam.objective("4", units.clamp(max=5), spatial)(x), dense,
                               atol=1e-5, rtol=0)


def test_positive_objective_keeps_a_gradient_where_the_map_is_negative():
    conv = nn.Conv2d(1, 1, 3)
    with torch.no_grad():
        conv.weight.fill_(0.1)
        conv.bias.fill_(-100.0)
    mx = maximize(nn.Sequential(conv), "0", rho=1.0, steps=5, restarts=2,
                  input_shape=(1, 6, 6))
    assert not mx.dead.any()
    behind_relu = maximize(nn.Sequential(conv, nn.ReLU()), "1", rho=1.0, steps=5,
                           restarts=2, input_shape=(1, 6, 6))
    assert behind_relu.dead.all()


# -- a convolutional DBN -----------------------------------------------------------------------
def random_cdbn(seed=0):
    """An untrained two-layer ConvDBN (6 filters of 5x5, then 4 of 3x3, pools 2) on 1x14x14
    inputs, with N(0, 0.3^2) weights and N(-1, 0.5^2) hidden biases."""
    from featvis import ConvDBN

    g = torch.Generator().manual_seed(seed)
    dbn = ConvDBN([dict(filters=6, filter_size=5, pool=2), dict(filters=4, filter_size=3,
                                                                    pool=2)],
                  input_shape=(1, 14, 14))
    with torch.no_grad():
        for rbm in dbn.rbms:
            rbm.weight.copy_(0.3 * torch.randn(rbm.weight.shape, generator=g))
            rbm.hidden_bias.copy_(0.5 * torch.randn(rbm.filters, generator=g) - 1)
    dbn.input_norm = 3.0
    return dbn


def up_pass_by_hand(dbn, x):
    """``[(detection, pooling), ...]`` per layer: the block softmax written out, with the
    crop of each layer's input to whole blocks."""
    out, v = [], x.double()
    for rbm in dbn.rbms:
        c, w = rbm.pool, rbm.filter_size
        side = (v.shape[-1] - w + 1) // c * c
        logits = F.conv2d(v[..., :side + w - 1, :side + w - 1], rbm.weight.double(),
                          rbm.hidden_bias.double())
        e = logits.exp()
        block = F.avg_pool2d(e, c, divisor_override=1)
        out.append((e / (1 + block.repeat_interleave(c, 2).repeat_interleave(c, 3)),
                    block / (1 + block)))
        v = out[-1][1]
    return out


def test_a_cdbn_probe_reads_pooling_and_detection_maps_in_one_pass():
    dbn = random_cdbn()
    seam = probe(dbn)
    assert seam.layer_keys() == [1, "1.detection", 2, "2.detection"]
    assert seam.default_layers() == [1, 2]
    assert [seam.key_from_text(t) for t in ("2", "1.detection")] == [2, "1.detection"]
    assert seam.layer(1) == LayerInfo(1, "ConvRBM pooling", 6, (5, 5), (6, 5, 5))
    assert seam.layer("2.detection") == LayerInfo("2.detection", "ConvRBM detection", 4,
                                                  (2, 2), (4, 2, 2))
    assert [i.name for i in layers(dbn, torch.zeros(1, 1, 14, 14))] == seam.layer_keys()
    with pytest.raises(LayerError, match="unknown layer 3"):
        seam.layer(3)
    with pytest.raises(LayerError, match="DEPTH.detection"):
        seam.key_from_text("pool")
    x = torch.rand(9, 1, 14, 14, generator=torch.Generator().manual_seed(1))
    units = torch.tensor([3, 0])
    scores = seam.scores(x, {1: None, "2.detection": units, 2: None})
    (det1, pool1), (det2, pool2) = up_pass_by_hand(dbn, x)
    for key, maps in ((1, pool1), ("2.detection", det2[:, units]), (2, pool2)):
        values, positions = maps.flatten(2).max(2)
        torch.testing.assert_close(seam.activation(key, scores[key].values).double(), values,
                                   atol=1e-6, rtol=1e-5)
        assert torch.equal(scores[key].positions, positions)
    ex = top_examples(dbn, x, "1.detection", k=2)
    best = det1.flatten(2).amax(2)
    assert ex.indices.tolist() == best.argsort(0, descending=True)[:2].t().tolist()
    with pytest.raises(DataError, match=r"one input has shape \(196,\)"):
        top_examples(dbn, x.flatten(1), 1, k=2)


def test_maximize_a_cdbn_filter_raises_its_pooling_map():
    dbn = random_cdbn(seed=2)
    units = torch.tensor([0, 2, 2])
    x = torch.rand(3, 1, 14, 14, generator=torch.Generator().manual_seed(3))
    pool2 = up_pass_by_hand(dbn, x)[1][1][torch.arange(3), units]
    seam = probe(dbn)
    torch.testing.assert_close(seam.activation(2, seam.objective(2, units, "mean")(x)).double(),
                               pool2.flatten(1).mean(1), atol=1e-6, rtol=1e-5)
    mx = maximize(dbn, 2, units=[0, 2], steps=40, restarts=2, seed=1, spatial="mean",
                  snapshots=(0,))
    start = seam.activation(2, seam.objective(2, torch.tensor([0, 2]), "mean")(mx.snapshots[0]))
    assert (mx.activation > start + 0.03).all()          # from the best start, up
    assert mx.images.shape == (2, 1, 14, 14)
    torch.testing.assert_close(mx.images.flatten(1).norm(dim=1), torch.full((2,), 3.0))


def test_maximize_a_sparse_cdbn_filter_far_below_its_threshold():
    """Probabilities of e^-60 underflow a normalized step's reach; their logs do not: the
    objective is the log of the mean pooling probability, with a gradient, and maximization
    turns at least one block of every filter on."""
    dbn = random_cdbn(seed=5)
    with torch.no_grad():
        dbn.rbms[0].hidden_bias.fill_(-60.0)
    x = torch.rand(6, 1, 14, 14, generator=torch.Generator().manual_seed(6))
    units = torch.arange(6)
    x.requires_grad_(True)
    value = probe(dbn).objective(1, units, "mean")(x)
    pool1 = up_pass_by_hand(dbn, x.detach())[0][1][torch.arange(6), units]
    torch.testing.assert_close(value.detach().double(), pool1.flatten(1).mean(1).log(),
                               atol=1e-4, rtol=1e-5)
    (grad,) = torch.autograd.grad(value.sum(), x)
    assert grad.isfinite().all() and (grad.flatten(1).norm(dim=1) > 1e-3).all()
    mx = maximize(dbn, 1, rho=60.0, steps=100, restarts=2)
    assert (mx.activation > 0.99 / 25).all()        # a block of the 5 x 5 pooling map on


def test_cdbn_filters_combinations_and_randomization():
    dbn = random_cdbn(seed=4)
    torch.testing.assert_close(linear_combination(dbn, 2, units=[1, 3]).images,
                               dbn.bases(2)[[1, 3]])
    assert torch.equal(linear_combination(dbn, "1.detection").images, dbn.rbms[0].weight)
    rf = ranked_filters(dbn, "2.detection", top=3)
    strength = dbn.rbms[1].weight.flatten(2).norm(dim=2)        # (4, 6): kernel L2 norms
    assert rf.below == 1 and torch.equal(rf.indices, strength.argsort(1, descending=True)[:, :3])
    with pytest.raises(UnsupportedError, match="ranked filters need a layer above the first"):
        ranked_filters(dbn, 1)
    seam = probe(dbn)
    with pytest.raises(UnsupportedError, match="not a ReLU network"):
        seam.check_deconvnet(2)
    with pytest.raises(UnsupportedError, match="not a first layer"):
        seam.filters(2)
    layer = seam.randomized(2, "layer", seed=0)
    cascade = seam.randomized("2.detection", "cascade", seed=0)
    assert torch.equal(layer.rbms[0].weight, dbn.rbms[0].weight)
    assert not torch.equal(cascade.rbms[0].weight, dbn.rbms[0].weight)
    assert torch.equal(layer.rbms[1].weight, cascade.rbms[1].weight)
    assert not torch.equal(layer.rbms[1].weight, dbn.rbms[1].weight)
    assert seam.describe()["kind"] == "ConvDBN 6x5x2-4x3x2"
